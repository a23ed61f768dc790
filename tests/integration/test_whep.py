"""WHEP against the real service: capture process, aiortc peers, real ICE/DTLS/SRTP."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiortc import RTCPeerConnection, RTCSessionDescription
from serve_process import running_service
from whep_client import WhepViewer

from broadcaster.config import load_config
from broadcaster.server.service import Service
from broadcaster.server.state import VIEWERS

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def service() -> AsyncIterator[Service]:
    async with running_service(load_config(None).with_server(port=0)) as svc:
        yield svc


async def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def frames_until_size(viewer: WhepViewer, size: tuple[int, int], limit: int = 150) -> int:
    """Decode frames until one has ``size``; return how many came before it."""
    for n in range(limit):
        frame = await viewer.frame()
        if (frame.width, frame.height) == size:
            return n
    raise AssertionError(f"never saw {size}")


async def test_top_rung_then_every_rung_then_delete(
    service: Service, http: aiohttp.ClientSession
) -> None:
    viewer = WhepViewer(service.url)
    await viewer.connect(http)
    # The first decoded frame is already the top rung: a viewer starts at a keyframe.
    first = await viewer.frame(timeout=15)
    assert (first.width, first.height) == (1280, 720)
    for _ in range(10):
        frame = await viewer.frame()
        assert (frame.width, frame.height) == (1280, 720)

    for rung, size in (("360p", (640, 360)), ("180p", (320, 180)), ("720p", (1280, 720))):
        async with http.post(
            service.url.rstrip("/") + viewer.layer_url, json={"encodingId": rung}
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["mode"] == "pinned"
        # Throttled keyframe request + switch: well within a second at 30 fps.
        assert await frames_until_size(viewer, size) < 45
        for _ in range(10):  # and it stays there, decoding cleanly
            frame = await viewer.frame()
            assert (frame.width, frame.height) == size

    assert service.viewers == 1
    await viewer.close(http)
    await wait_for(lambda: service.viewers == 0)


async def test_auto_returns_to_top(service: Service, http: aiohttp.ClientSession) -> None:
    viewer = WhepViewer(service.url)
    await viewer.connect(http)
    await viewer.frame(timeout=15)
    layer = service.url.rstrip("/") + viewer.layer_url
    async with http.post(layer, json={"encodingId": "180p"}) as resp:
        assert resp.status == 200
    await frames_until_size(viewer, (320, 180))
    async with http.post(layer, json={"encodingId": "auto"}) as resp:
        assert (await resp.json())["mode"] == "auto"
    await frames_until_size(viewer, (1280, 720))
    await viewer.close(http)


async def test_bad_layer_requests(service: Service, http: aiohttp.ClientSession) -> None:
    viewer = WhepViewer(service.url)
    await viewer.connect(http)
    layer = service.url.rstrip("/") + viewer.layer_url
    async with http.post(layer, json={"encodingId": "4k"}) as resp:
        assert resp.status == 400
        body = await resp.json()
        assert body["valid"] == ["auto", "720p", "360p", "180p"]
        assert "4k" in body["error"]
    async with http.post(layer, data=b"{nope", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400 and "error" in await r.json()
    async with http.post(
        service.url + "whep/nosuchsession/layer", json={"encodingId": "auto"}
    ) as r:
        assert r.status == 404 and "error" in await r.json()
    await viewer.close(http)


def _strip_candidates(sdp: str) -> tuple[str, list[str]]:
    lines = sdp.split("\r\n")
    candidates = [line for line in lines if line.startswith("a=candidate:")]
    kept = [line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(kept), candidates


async def test_offer_without_candidates_then_trickle_patch(
    service: Service, http: aiohttp.ClientSession
) -> None:
    """Players that trickle: no candidates in the offer, then PATCH sdpfrags."""
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")  # audio first, as some players do
    pc.addTransceiver("video", direction="recvonly")
    tracks: asyncio.Queue = asyncio.Queue()
    pc.on("track", lambda t: tracks.put_nowait(t) if t.kind == "video" else None)
    await pc.setLocalDescription(await pc.createOffer())
    bare, candidates = _strip_candidates(pc.localDescription.sdp)
    assert candidates
    async with http.post(
        service.url + "whep", data=bare, headers={"Content-Type": "application/sdp"}
    ) as resp:
        assert resp.status == 201
        answer = await resp.text()
        location = resp.headers["Location"]
        assert resp.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
    # Audio first in the offer is matched all the same: the test tone, sendonly.
    audio = answer[answer.index("m=audio") : answer.index("m=video")]
    assert "a=sendonly" in audio and "opus/48000" in audio
    assert "a=sendonly" in answer[answer.index("m=video") :]
    assert "a=candidate:" in answer and "127.0.0.1" in answer
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    mid = re.search(r"m=audio.*?a=mid:(\S+)", pc.localDescription.sdp, re.S).group(1)  # type: ignore[union-attr]
    frag = "a=mid:" + mid + "\r\n" + "\r\n".join(candidates) + "\r\na=end-of-candidates\r\n"
    async with http.patch(
        service.url.rstrip("/") + location,
        data=frag,
        headers={"Content-Type": "application/trickle-ice-sdpfrag"},
    ) as resp:
        assert resp.status == 204
    track = await asyncio.wait_for(tracks.get(), 10)
    frame = await asyncio.wait_for(track.recv(), 15)
    assert (frame.width, frame.height) == (1280, 720)
    async with http.delete(service.url.rstrip("/") + location) as resp:
        assert resp.status == 200
    await pc.close()
    await wait_for(lambda: service.viewers == 0)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        ("v=0", "text/plain", 415, "Content-Type"),
        ("garbage", "application/sdp", 400, "v=0"),
        ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "application/sdp", 400, "fingerprint"),
        ("x" * (65 * 1024) + "m=video", "application/sdp", 413, "larger"),
    ],
)
async def test_bad_offers_get_json_4xx_and_leak_nothing(
    service: Service,
    http: aiohttp.ClientSession,
    body: str,
    content_type: str,
    status: int,
    words: str,
) -> None:
    async with http.post(
        service.url + "whep", data=body.encode(), headers={"Content-Type": content_type}
    ) as resp:
        assert resp.status == status
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        payload = await resp.json()
        assert words in payload["error"]
    assert service.viewers == 0


async def test_unknown_session_and_options(service: Service, http: aiohttp.ClientSession) -> None:
    async with http.delete(service.url + "whep/doesnotexist") as resp:
        assert resp.status == 404 and "error" in await resp.json()
    async with http.patch(
        service.url + "whep/doesnotexist",
        data="a=end-of-candidates",
        headers={"Content-Type": "application/trickle-ice-sdpfrag"},
    ) as resp:
        assert resp.status == 404
    async with http.options(service.url + "whep") as resp:
        assert resp.status == 204
        assert "application/sdp" in resp.headers["Accept-Post"]
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "Location" in resp.headers["Access-Control-Expose-Headers"]


async def test_healthz_metrics_ladder(service: Service, http: aiohttp.ClientSession) -> None:
    async with http.get(service.url + "healthz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
    async with http.get(service.url + "api/ladder") as resp:
        assert [r["name"] for r in (await resp.json())["rungs"]] == ["720p", "360p", "180p"]
    async with http.get(service.url + "metrics") as resp:
        text = await resp.text()
    assert "broadcaster_viewers 0" in text
    kf = re.findall(r'broadcaster_keyframe_requests_total\{rung="720p"\} (\d+)', text)
    assert kf and int(kf[0]) >= 1  # earlier viewers asked for keyframes
    enc = re.findall(r'broadcaster_encode_milliseconds\{rung="720p"\} ([\d.]+)', text)
    assert enc and float(enc[0]) > 0
    out = re.findall(r'broadcaster_bytes_out_total\{rung="(\w+)"\} (\d+)', text)
    assert all(int(v) > 0 for _, v in out)  # every rung was watched by some test above


async def test_rtp_timestamps_map_to_capture_wall_clock(
    service: Service, http: aiohttp.ClientSession
) -> None:
    """The server can tell each viewer when its frames were captured (glass-to-glass)."""
    import time

    viewer = WhepViewer(service.url)
    await viewer.connect(http)
    await viewer.frame(timeout=15)
    session = next(iter(service.app[VIEWERS]))  # type: ignore[index]
    assert session.rtp_origin is not None
    epoch = service.broadcast.clock_epoch  # type: ignore[union-attr]
    assert epoch is not None
    # aiortc's receiver gives frames pts = RTP timestamp minus the first one it saw (a
    # private of the CLIENT side, read here only to check the server's mapping).
    receiver = next(r for r in viewer.pc.getReceivers() if r.track and r.track.kind == "video")
    first_rtp = receiver._RTCRtpReceiver__timestamp_mapper._origin
    for _ in range(5):
        frame = await viewer.frame()
    rtp = (frame.pts + first_rtp) & 0xFFFFFFFF
    captured = epoch + ((rtp - session.rtp_origin) & 0xFFFFFFFF) / 90_000
    latency = time.time() - captured
    assert 0 < latency < 0.5, latency
    await viewer.close(http)
