"""aiortc's stock pre-encoded sender, for bench/fanout.py: the design between ours and naive.

The broadcaster's own capture process (``CaptureProcess``, same config, same test pattern,
so exactly the VP8 bitstream ours sends) encodes once. This server takes one rung's frames
and gives every viewer its own ``MediaStreamTrack`` whose ``recv()`` returns that frame as
an ``av.Packet`` from a per-viewer ``asyncio.Queue``; aiortc's ``RTCRtpSender`` then
packetizes it without re-encoding (``encoder.pack()``). Encode once, but per viewer one
sender coroutine, one packetizer, one SRTP context, one ``sendto`` per packet: the public
aiortc path, with nothing of ours in front of it (no switcher, ABR, RTCP hooks, pacing).

    python bench/stock_server.py --port P --config PATH [--rung 360p]

Same WHEP shape as the broadcaster (POST /whep -> 201 + answer + Location, DELETE
Location), so bench/receivers.py drives it unchanged. Also: GET /healthz (200 once frames
flow; ``frames`` = frames of the rung the source produced), GET /metrics (JSON counters)
and GET /bench/lag (this process's event-loop lag, broadcaster.server.looplag, the same
sampler ours exports in /metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import time
from typing import Any

import av
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from baseline import PCS, base_app, vp8_codecs, wait_for_signal

from broadcaster.bus.packet import TIME_BASE, CaptureError, CaptureMessage, FrameSet
from broadcaster.capture.process import CaptureProcess
from broadcaster.config import load_config
from broadcaster.server.rtc_internals import use_host_addresses

logger = logging.getLogger("stock_server")

# Frames queued for one viewer before it counts as stuck (2 s at 30 fps); then its backlog
# is dropped and it restarts at a keyframe, like ours, so memory stays bounded.
MAX_QUEUE = 60
STALE_AFTER = 2.0  # /healthz: 503 when the source has been silent this long


class PacketTrack(MediaStreamTrack):
    """One viewer's track: the shared, already-encoded frames, from its own queue."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._waiting_keyframe = True  # a viewer can only start decoding at a keyframe
        self.dropped = 0

    def push(self, packet: Any, keyframe: bool) -> bool:
        """Queue one frame (the same av.Packet for every viewer); False if not taken."""
        if self.readyState != "live" or (self._waiting_keyframe and not keyframe):
            return False
        if self._queue.qsize() >= MAX_QUEUE:
            self.dropped += self._queue.qsize()
            while not self._queue.empty():
                self._queue.get_nowait()
            self._waiting_keyframe = True
            return False
        self._waiting_keyframe = False
        self._queue.put_nowait(packet)
        return True

    async def recv(self) -> Any:
        # aiortc's sender calls this again once every RTP packet of the last frame is sent.
        return await self._queue.get()


class Source:
    """The capture process's frames of one rung, fanned out to every viewer's track."""

    def __init__(self, capture: CaptureProcess, rung: int) -> None:
        self.capture = capture
        self.rung = rung
        self.tracks: set[PacketTrack] = set()
        self.frames = 0  # frames of the rung the source produced
        self.keyframes = 0
        self.frames_out = 0  # handed to viewers' tracks
        self.bytes_out = 0
        self.last_frame_at: float | None = None
        self.error: str | None = None

    def on_message(self, msg: CaptureMessage) -> None:
        if isinstance(msg, CaptureError):
            self.error = msg.message
        if not isinstance(msg, FrameSet):
            return
        frame = msg.get(self.rung)
        if frame is None:
            return
        self.last_frame_at = time.monotonic()
        self.frames += 1
        self.keyframes += frame.keyframe
        # One av.Packet per frame, shared read-only by every viewer (encode once).
        packet = av.Packet(frame.data)
        packet.pts = frame.pts
        packet.time_base = TIME_BASE
        for track in self.tracks:
            if track.push(packet, frame.keyframe):
                self.frames_out += 1
                self.bytes_out += len(frame.data)

    def on_eof(self) -> None:
        self.error = self.error or "capture process exited"

    @property
    def healthy(self) -> bool:
        return (
            self.error is None
            and self.last_frame_at is not None
            and time.monotonic() - self.last_frame_at < STALE_AFTER
        )


SOURCE = web.AppKey("source", Source)


async def post_whep(request: web.Request) -> web.Response:
    offer = await request.text()
    source = request.app[SOURCE]
    # Explicit empty list: aiortc's default would ask a public STUN server.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    session_id = secrets.token_urlsafe(12)
    track = PacketTrack()
    request.app[PCS][session_id] = pc

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            source.tracks.discard(track)
            request.app[PCS].pop(session_id, None)
            await pc.close()

    # Observed order that works: addTrack -> setCodecPreferences -> setRemoteDescription.
    sender = pc.addTrack(track)
    transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
    transceiver.setCodecPreferences(vp8_codecs())
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # a bad offer is the client's fault; keep serving the rest
        request.app[PCS].pop(session_id, None)
        await pc.close()
        return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
    source.tracks.add(track)
    source.capture.link.request_keyframe(source.rung)  # so the new viewer starts soon
    return web.Response(
        status=201,
        text=pc.localDescription.sdp,
        content_type="application/sdp",
        headers={"Location": f"/whep/{session_id}"},
    )


async def healthz(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    body = {"viewers": len(request.app[PCS]), "frames": source.frames, "error": source.error}
    return web.json_response(body, status=200 if source.healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    """Counters only (no per-sender getStats: 200 of those would stall the loop we time)."""
    source = request.app[SOURCE]
    return web.json_response(
        {
            "viewers": len(request.app[PCS]),
            "source_frames": source.frames,
            "keyframes": source.keyframes,
            "frames_out": source.frames_out,
            "bytes_out": source.bytes_out,
            "dropped": sum(t.dropped for t in source.tracks),
        }
    )


def make_app(source: Source) -> web.Application:
    app = base_app()
    app[SOURCE] = source
    app.router.add_post("/whep", post_whep)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(port: int, config_path: str, rung_name: str) -> None:
    config = load_config(config_path)
    names = [r.name for r in config.ladder]
    if rung_name not in names:
        raise SystemExit(f"--rung {rung_name!r} not in the ladder {names}")
    loop = asyncio.get_running_loop()
    capture = CaptureProcess(config, "test")
    source = Source(capture, names.index(rung_name))
    capture.link.start(loop, source.on_message, source.on_eof)
    runner = web.AppRunner(make_app(source), handle_signals=False, access_log=None)
    try:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print(f"stock server on http://127.0.0.1:{port}/", flush=True)
        await wait_for_signal()
    finally:
        await runner.cleanup()
        await loop.run_in_executor(None, capture.close)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--config", required=True, help="broadcaster config (its ladder and video)")
    p.add_argument("--rung", default="360p", help="the rung every viewer gets")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # aioice leaves loopback out; the benchmark keeps all traffic on 127.0.0.1.
    use_host_addresses(["127.0.0.1"])
    asyncio.run(serve(args.port, args.config, args.rung))


if __name__ == "__main__":
    main()
