"""One encoder per rung: a thin, typed wrapper over a PyAV codec context."""

from __future__ import annotations

import time
from fractions import Fraction

import av
from av.video.frame import PictureType

from ..bus.packet import TIME_BASE
from ..config import Rung


def _vp8_options(rung: Rung) -> dict[str, str]:
    bps = str(rung.bitrate_bps)
    return {
        # Real-time CBR, no look-ahead: what a live WebRTC sender needs.
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "minrate": bps,
        "maxrate": bps,
        "bufsize": bps,  # 1 s of rate-control buffer
        "undershoot-pct": "100",
        "overshoot-pct": "15",
        "static-thresh": "1",
        "partitions": "0",
        # Bound keyframe size (percent of a mean frame): a huge keyframe is what a thin,
        # capped link drops whole.
        "max-intra-rate": "600",
        "error-resilient": "1",
    }


def _h264_options() -> dict[str, str]:
    return {"preset": "veryfast", "tune": "zerolatency", "repeat-headers": "1"}


class RungEncoder:
    """Encodes one rung; frames in, (keyframe, bytes) out. Not thread-safe per instance,
    but separate instances run in parallel (PyAV releases the GIL while encoding)."""

    def __init__(self, rung: Rung, codec: str) -> None:
        self.rung = rung
        self.codec_name = codec
        if codec == "vp8":
            ctx = av.CodecContext.create("libvpx", "w")
            ctx.options = _vp8_options(rung)
            ctx.qmin, ctx.qmax = 2, 56
        elif codec == "h264":
            ctx = av.CodecContext.create("libx264", "w")
            ctx.options = _h264_options()
            ctx.profile = "Baseline"
        else:
            raise ValueError(f"unknown codec {codec!r}")
        ctx.width = rung.width
        ctx.height = rung.height
        ctx.pix_fmt = "yuv420p"
        ctx.bit_rate = rung.bitrate_bps
        ctx.framerate = Fraction(rung.fps, 1)
        ctx.time_base = TIME_BASE
        # We force keyframes ourselves; the encoder's own GOP would add unasked ones.
        ctx.gop_size = 100_000
        ctx.thread_count = 1
        self._ctx: av.VideoCodecContext = ctx
        self.last_encode_s = 0.0

    def encode(self, frame: av.VideoFrame, pts: int, keyframe: bool) -> list[tuple[bool, bytes]]:
        frame.pts = pts
        frame.time_base = TIME_BASE
        frame.pict_type = PictureType.I if keyframe else PictureType.NONE
        t0 = time.perf_counter()
        packets = self._ctx.encode(frame)
        self.last_encode_s = time.perf_counter() - t0
        return [(bool(p.is_keyframe), bytes(p)) for p in packets]

    def flush(self) -> list[tuple[bool, bytes]]:
        """End of stream: the packets still inside the encoder. It encodes no more after
        this (``encode`` raises av.error.EOFError)."""
        return [(bool(p.is_keyframe), bytes(p)) for p in self._ctx.encode(None)]

    def close(self) -> None:
        self._ctx = None  # type: ignore[assignment]
