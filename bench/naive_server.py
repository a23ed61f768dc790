"""The naive baseline for bench/fanout.py: aiortc's usual way of serving many viewers.

ONE source track (the project's own test pattern at 640x360, 30 fps, so the content matches
the 360p rung) relayed to every viewer with ``aiortc.contrib.media.MediaRelay``. Each
viewer's RTCRtpSender then encodes VP8 itself: one encoder per viewer, which is exactly the
cost the broadcaster's encode-once design avoids.

    python bench/naive_server.py --port P [--bitrate 800]

Same WHEP shape as the broadcaster (POST /whep -> 201 + answer + Location, DELETE Location)
plus GET /healthz, GET /metrics (JSON: RTP packets/bytes/frames the senders sent) and GET
/bench/lag (this process's event-loop lag, the same sampler ours exports in /metrics), so
the same receivers (bench/receivers.py) and the same measurement apply. One process, one
event loop; aiortc runs each encode in its default thread pool.

Every encoder targets ``--bitrate`` (default 800 kbit/s, the 360p rung's): aiortc would
follow the viewer's REMB, but the benchmark's receivers send none (bench/receivers.py), and
without it aiortc's encoders sit at their 500 kbit/s default, a cheaper stream than ours.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import secrets

import av
import cv2
import numpy as np
from aiohttp import web
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.codecs import vpx
from aiortc.contrib.media import MediaRelay
from baseline import PCS, base_app, vp8_codecs, wait_for_signal

from broadcaster.capture.testpattern import TestPattern
from broadcaster.server.rtc_internals import use_host_addresses

WIDTH, HEIGHT, FPS = 640, 360, 30


class PatternTrack(VideoStreamTrack):
    """The source: the broadcaster's test pattern, converted to I420 once per frame.

    Converting here (not in each viewer's encoder, which would reformat BGR per viewer)
    keeps the baseline honest: only what is inherently per viewer is repeated.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pattern = TestPattern(WIDTH, HEIGHT, FPS)
        self.frames = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        bgr = self._pattern.read()
        i420 = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = pts
        frame.time_base = fractions.Fraction(time_base)
        self.frames += 1
        return frame


SOURCE = web.AppKey("source", PatternTrack)
RELAY = web.AppKey("relay", MediaRelay)


async def post_whep(request: web.Request) -> web.Response:
    offer = await request.text()
    # Explicit empty list: aiortc's default would ask a public STUN server.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    session_id = secrets.token_urlsafe(12)
    request.app[PCS][session_id] = pc

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            request.app[PCS].pop(session_id, None)
            await pc.close()

    # The usual aiortc recipe: one relay proxy per viewer; its sender encodes on its own.
    sender = pc.addTrack(request.app[RELAY].subscribe(request.app[SOURCE]))
    transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
    transceiver.setCodecPreferences(vp8_codecs())  # before setRemoteDescription, or ignored
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    return web.Response(
        status=201,
        text=pc.localDescription.sdp,
        content_type="application/sdp",
        headers={"Location": f"/whep/{session_id}"},
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "viewers": len(request.app[PCS])})


async def metrics(request: web.Request) -> web.Response:
    """What the per-viewer senders sent (RTP incl. headers), summed over live viewers."""
    packets = octets = 0
    for pc in list(request.app[PCS].values()):
        for sender in pc.getSenders():
            for stats in (await sender.getStats()).values():
                if stats.type == "outbound-rtp":
                    packets += stats.packetsSent
                    octets += stats.bytesSent
    return web.json_response(
        {
            "viewers": len(request.app[PCS]),
            "packets_sent": packets,
            "bytes_sent": octets,
            "source_frames": request.app[SOURCE].frames,
        }
    )


async def _keep_source_live(app: web.Application) -> None:
    """Pull the source whether or not anyone watches, like a live camera.

    MediaRelay only reads its source while some proxy is read. Without this the source's
    own cost (render + BGR->I420, ~1 ms a frame) would land in the first viewer's share;
    with it, the zero-viewer baseline holds it, as the capture process does for ours.
    """
    idle = app[RELAY].subscribe(app[SOURCE], buffered=False)
    while True:
        await idle.recv()


def make_app() -> web.Application:
    app = base_app()
    app[SOURCE] = PatternTrack()
    app[RELAY] = MediaRelay()
    tasks: list[asyncio.Task[None]] = []

    async def start_source(app: web.Application) -> None:
        tasks.append(asyncio.create_task(_keep_source_live(app)))

    async def stop_source(app: web.Application) -> None:
        for task in tasks:
            task.cancel()

    app.on_startup.append(start_source)
    app.on_shutdown.append(stop_source)
    app.router.add_post("/whep", post_whep)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(port: int) -> None:
    runner = web.AppRunner(make_app(), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"naive server on http://127.0.0.1:{port}/", flush=True)
    try:
        await wait_for_signal()
    finally:
        await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bitrate", type=int, default=800, help="kbit/s every encoder targets")
    args = p.parse_args()
    # Read by each Vp8Encoder as it is created (aiortc 1.16, pinned): the start bitrate,
    # kept for good since no REMB arrives to change it.
    vpx.DEFAULT_BITRATE = args.bitrate * 1000
    # aioice leaves loopback out; the benchmark keeps all traffic on 127.0.0.1.
    use_host_addresses(["127.0.0.1"])
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
