"""The broadcast: what the capture process produces, fanned out to every viewer's switcher.

Owns the per-rung counters that /metrics and the status line show and the keyframe
request path back to the capture side.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import av

from ..bus.packet import CLOCK_RATE, TIME_BASE, CaptureError, CaptureMessage, CaptureStats, FrameSet
from ..config import Rung
from .switcher import ReadyFrame, Switch, SwitcherTrack

logger = logging.getLogger(__name__)

# /healthz turns 503 when the capture has been silent this long.
STALE_AFTER = 2.0


class Broadcast:
    def __init__(self, ladder: tuple[Rung, ...], send_keyframe: Callable[[int], None]) -> None:
        self.ladder = ladder
        self._send_keyframe = send_keyframe
        self._switchers: set[SwitcherTrack] = set()
        self.last_frame_at: float | None = None  # monotonic
        self.clock_epoch: float | None = None
        self.stats: CaptureStats | None = None
        self.error: str | None = None
        self.ended = False
        self.framesets = 0
        n = len(ladder)
        self.keyframe_requests = [0] * n
        self.keyframes_seen = [0] * n
        self.switches: Counter[str] = Counter()  # executed switches by reason
        self.frames_out = [0] * n
        self.bytes_out = [0] * n
        self.on_error: Callable[[str], None] | None = None

    # -------------------------------------------------------------- viewers

    def subscribe(self, switcher: SwitcherTrack) -> None:
        self._switchers.add(switcher)

    def unsubscribe(self, switcher: SwitcherTrack) -> None:
        self._switchers.discard(switcher)

    def count_switch(self, switch: Switch) -> None:
        self.switches[switch.reason] += 1

    def request_keyframe(self, rung: int) -> None:
        if 0 <= rung < len(self.ladder):
            self.keyframe_requests[rung] += 1
            self._send_keyframe(rung)

    def rung_index(self, name: str) -> int | None:
        for i, rung in enumerate(self.ladder):
            if rung.name == name:
                return i
        return None

    # -------------------------------------------------------------- capture side

    def on_message(self, msg: CaptureMessage) -> None:
        if isinstance(msg, FrameSet):
            self._fan_out(msg)
        elif isinstance(msg, CaptureStats):
            self.stats = msg
        elif isinstance(msg, CaptureError):
            self.error = msg.message
            logger.error("capture failed: %s", msg.message)
            if self.on_error is not None:
                self.on_error(msg.message)

    def on_eof(self) -> None:
        self.ended = True

    def _fan_out(self, fs: FrameSet) -> None:
        self.last_frame_at = time.monotonic()
        # Wall-clock time of pts 0: capture time of any frame = clock_epoch + pts / 90 kHz.
        self.clock_epoch = fs.capture_time - fs.pts / CLOCK_RATE
        self.framesets += 1
        frames: dict[int, ReadyFrame] = {}
        for f in fs.frames:
            # One av.Packet per rung and instant, shared read-only by every viewer.
            packet = av.Packet(f.data)
            packet.pts = f.pts
            packet.time_base = TIME_BASE
            frames[f.rung] = (f, packet)
            if f.keyframe:
                self.keyframes_seen[f.rung] += 1
        for switcher in self._switchers:
            sent = switcher.offer(frames)
            if sent is not None:
                self.frames_out[sent.rung] += 1
                self.bytes_out[sent.rung] += len(sent.data)

    # -------------------------------------------------------------- state

    @property
    def healthy(self) -> bool:
        return (
            self.error is None
            and self.last_frame_at is not None
            and time.monotonic() - self.last_frame_at < STALE_AFTER
        )

    def viewers_per_rung(self) -> list[int]:
        counts = [0] * len(self.ladder)
        for s in self._switchers:
            if s.current is not None:
                counts[s.current] += 1
        return counts

    @property
    def viewer_count(self) -> int:
        return len(self._switchers)
