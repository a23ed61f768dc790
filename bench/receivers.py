"""Load generator for bench/fanout.py: many WHEP viewers in one process, none decoding.

Run by the benchmark, one process per batch of viewers:

    python bench/receivers.py --url http://127.0.0.1:PORT/ --count 25 [--rung 360p]

It connects ``--count`` aiortc viewers, pins each to ``--rung`` through the WHEP layer link
(if given), prints one JSON line ``{"event": "ready", ...}`` and then obeys one command per
stdin line: ``stats`` (prints cumulative counters as JSON) or ``stop`` (DELETEs every
session, closes every peer connection, prints ``{"event": "stopped"}`` and exits). EOF on
stdin means the benchmark is gone: stop too, so no viewer outlives it.

The receivers are the load generator, not the thing under test, so they skip video decoding
(see ``_discard_decoding``) and keep everything on 127.0.0.1 (see ``_loopback_only``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

CONNECT_TIMEOUT = 30.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=20)
LAYER_REL = 'rel="urn:ietf:params:whep:ext:core:layer"'
# Connecting all viewers at once makes a burst of ICE/DTLS handshakes that the server
# handles one by one on its event loop; a few at a time connects faster overall.
CONNECT_CONCURRENCY = 8


# ---------------------------------------------------------------- aiortc hooks (private names)


@dataclass
class Counters:
    """What reached the (skipped) decoder: complete encoded frames and their bytes."""

    frames: int = 0
    bytes: int = 0


COUNTERS = Counters()


class _DiscardSink:
    """Stands in for RTCRtpReceiver's decoder queue: counts complete frames, keeps nothing."""

    def put(self, item: Any) -> None:
        if item is None:  # the receiver stopping its decoder
            return
        _codec, encoded_frame = item
        COUNTERS.frames += 1
        COUNTERS.bytes += len(encoded_frame.data)


def _discard_decoding() -> None:
    """Skip VP8 decoding in THIS process only.

    aiortc's RTCRtpReceiver decodes every complete frame in a thread whether or not anyone
    reads the track, and queues the decoded frames on the track without bound. Here the
    frames are counted and dropped instead, so a receiver costs only what it must do to be a
    real peer: SRTP, RTP parsing, jitter buffer, RTCP RR/REMB/NACK. Private names of aiortc
    1.16 (pinned by pyproject): ``decoder_worker`` and the name-mangled decoder queue.
    """
    from aiortc import rtcrtpreceiver

    def no_decoder(*_args: Any) -> None:
        # The thread the receiver starts exits at once; the sink below takes its input.
        return None

    original_init = rtcrtpreceiver.RTCRtpReceiver.__init__

    def init(self: rtcrtpreceiver.RTCRtpReceiver, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._RTCRtpReceiver__decoder_queue = _DiscardSink()  # type: ignore[attr-defined]

    rtcrtpreceiver.decoder_worker = no_decoder  # type: ignore[assignment]
    rtcrtpreceiver.RTCRtpReceiver.__init__ = init  # type: ignore[method-assign]


def _loopback_only() -> None:
    # aioice gathers on every interface but loopback; the benchmark must stay on 127.0.0.1.
    from broadcaster.server.rtc_internals import use_host_addresses

    use_host_addresses(["127.0.0.1"])


# ---------------------------------------------------------------- one viewer


@dataclass
class Viewer:
    base_url: str
    pc: RTCPeerConnection = field(
        # Explicit empty list: aiortc's default would ask a public STUN server.
        default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[]))
    )
    location: str | None = None
    layer_url: str | None = None

    async def connect(self, http: aiohttp.ClientSession) -> None:
        connected = asyncio.Event()

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                connected.set()

        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with http.post(
            self.base_url + "whep",
            data=self.pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp"},
        ) as resp:
            answer = await resp.text()
            if resp.status != 201:
                raise RuntimeError(f"WHEP POST: {resp.status} {answer[:200]}")
            self.location = resp.headers["Location"]
            self.layer_url = _layer_link(resp.headers.getall("Link", []))
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(connected.wait(), CONNECT_TIMEOUT)

    async def pin(self, http: aiohttp.ClientSession, rung: str) -> None:
        if self.layer_url is None:
            raise RuntimeError("server offered no layer link")
        async with http.post(self._absolute(self.layer_url), json={"encodingId": rung}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"layer POST: {resp.status} {await resp.text()}")

    async def packets_received(self) -> tuple[int, int]:
        """(RTP packets received incl. RTX, packets lost) from inbound-rtp stats."""
        received = lost = 0
        for receiver in self.pc.getReceivers():
            for stats in (await receiver.getStats()).values():
                if stats.type == "inbound-rtp":
                    received += stats.packetsReceived
                    lost += max(stats.packetsLost, 0)
        return received, lost

    async def close(self, http: aiohttp.ClientSession) -> None:
        try:
            if self.location is not None:
                async with http.delete(self._absolute(self.location)):
                    pass
        except (aiohttp.ClientError, TimeoutError):
            pass  # the server may already be gone; closing our side still matters
        finally:
            await self.pc.close()

    def _absolute(self, path: str) -> str:
        return path if path.startswith("http") else self.base_url.rstrip("/") + path


def _layer_link(links: list[str]) -> str | None:
    for link in links:
        if LAYER_REL in link:
            return link[link.index("<") + 1 : link.index(">")]
    return None


# ---------------------------------------------------------------- the worker


async def _connect_all(
    http: aiohttp.ClientSession, url: str, count: int, rung: str | None
) -> tuple[list[Viewer], list[str]]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    viewers = [Viewer(url) for _ in range(count)]

    async def one(viewer: Viewer) -> None:
        async with gate:
            await viewer.connect(http)
        if rung:
            await viewer.pin(http, rung)

    results = await asyncio.gather(*(one(v) for v in viewers), return_exceptions=True)
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    return viewers, errors


async def _stats(viewers: list[Viewer]) -> dict[str, Any]:
    received = lost = 0
    for viewer in viewers:
        r, lo = await viewer.packets_received()
        received += r
        lost += lo
    connected = sum(v.pc.connectionState == "connected" for v in viewers)
    return {
        "event": "stats",
        "packets": received,
        "lost": lost,
        "frames": COUNTERS.frames,
        "bytes": COUNTERS.bytes,
        "connected": connected,
    }


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _commands() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run(url: str, count: int, rung: str | None) -> None:
    commands = await _commands()
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        viewers, errors = await _connect_all(http, url, count, rung)
        try:
            _emit({"event": "ready", "count": count, "errors": errors[:5], "failed": len(errors)})
            while line := (await commands.readline()).decode().strip():
                if line == "stats":
                    _emit(await _stats(viewers))
                elif line == "stop":
                    break
        finally:
            await asyncio.gather(*(v.close(http) for v in viewers), return_exceptions=True)
    _emit({"event": "stopped"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="server base URL ending in /")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rung", default="", help="pin every viewer to this rung (WHEP layer)")
    args = p.parse_args()
    _discard_decoding()
    _loopback_only()
    asyncio.run(run(args.url, args.count, args.rung or None))


if __name__ == "__main__":
    main()
