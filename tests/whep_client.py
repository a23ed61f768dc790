"""A real WHEP viewer built on aiortc, used by the integration tests and the benchmark."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack


@dataclass
class WhepViewer:
    base_url: str
    pc: RTCPeerConnection = field(
        default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[]))
    )
    location: str | None = None
    links: list[str] = field(default_factory=list)
    token: str | None = None  # sent as Authorization: Bearer
    track: MediaStreamTrack | None = None
    audio_track: MediaStreamTrack | None = None
    _track_ready: asyncio.Event = field(default_factory=asyncio.Event)
    _audio_ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self, session: aiohttp.ClientSession, audio: bool = False) -> None:
        self.pc.addTransceiver("video", direction="recvonly")
        if audio:
            self.pc.addTransceiver("audio", direction="recvonly")

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self.track = track
                self._track_ready.set()
            elif track.kind == "audio":
                self.audio_track = track
                self._audio_ready.set()

        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with session.post(
            self.base_url + "whep",
            data=self.pc.localDescription.sdp,
            headers=self._headers({"Content-Type": "application/sdp"}),
        ) as resp:
            body = await resp.text()
            assert resp.status == 201, (resp.status, body)
            self.location = resp.headers["Location"]
            self.links = resp.headers.getall("Link", [])
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    def _headers(self, headers: dict[str, str]) -> dict[str, str]:
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    @property
    def layer_url(self) -> str:
        for link in self.links:
            if 'rel="urn:ietf:params:whep:ext:core:layer"' in link:
                return link[link.index("<") + 1 : link.index(">")]
        raise AssertionError(f"no layer link in {self.links}")

    async def frame(self, timeout: float = 10.0):  # type: ignore[no-untyped-def]
        await asyncio.wait_for(self._track_ready.wait(), timeout)
        assert self.track is not None
        return await asyncio.wait_for(self.track.recv(), timeout)

    async def audio_frame(self, timeout: float = 10.0):  # type: ignore[no-untyped-def]
        await asyncio.wait_for(self._audio_ready.wait(), timeout)
        assert self.audio_track is not None
        return await asyncio.wait_for(self.audio_track.recv(), timeout)

    async def close(self, session: aiohttp.ClientSession | None = None) -> None:
        if session is not None and self.location:
            async with session.delete(self.base_url.rstrip("/") + self.location) as resp:
                assert resp.status == 200, resp.status
        await self.pc.close()
