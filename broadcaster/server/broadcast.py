"""The broadcast: what the capture process produces, fanned out to every viewer's switcher.

Owns the per-rung counters that /metrics and the status line show and the keyframe
request path back to the capture side, and what the capture side reports about its faults:
whether the source is live (or a "signal lost" slate is being sent while it is reopened)
and which rungs are still available (a rung whose encoder failed is out for good, and
every viewer on it is moved to the nearest live rung).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from ..bus.packet import (
    AUDIO_CLOCK_RATE,
    CLOCK_RATE,
    AudioFrame,
    CaptureError,
    CaptureMessage,
    CaptureStats,
    EncodedFrame,
    FrameSet,
    RungFailed,
    SourceState,
    SourceStatus,
)
from ..config import Rung
from . import rtc_internals, rtp
from .outbound import ViewerOutput
from .pacer import Job, Pacer
from .rtp_stream import SharedFrame
from .switcher import Switch, SwitcherTrack

logger = logging.getLogger(__name__)

# /healthz turns 503 when the capture has been silent this long.
STALE_AFTER = 2.0


def packetize(codec: str, frame: EncodedFrame, wall: float) -> SharedFrame:
    """A rung's frame as RTP payloads, once for every viewer of the rung."""
    if codec == "vp8":
        bodies = rtp.packetize_vp8(frame.data)
    else:
        bodies = tuple(rtc_internals.h264_payloads(frame.data))
    return SharedFrame(frame.rung, frame.pts, frame.keyframe, bodies, len(frame.data), wall)


# The rung field of an audio SharedFrame (audio is not on the ladder).
AUDIO = -1


class Broadcast:
    def __init__(
        self,
        ladder: tuple[Rung, ...],
        send_keyframe: Callable[[int], None],
        codec: str = "vp8",
        audio: bool = False,
    ) -> None:
        self.ladder = ladder
        self.codec = codec
        # Does the capture produce sound? Offers that ask for audio get a track if so.
        self.audio = audio
        self._listeners: dict[ViewerOutput, None] = {}  # audio outputs, in join order
        self.audio_frames = 0
        self.audio_packets_out = 0
        self.last_audio_at: float | None = None  # monotonic
        self._send_keyframe = send_keyframe
        # Viewers in join order (the order their packets leave in each instant).
        self._viewers: dict[SwitcherTrack, ViewerOutput | None] = {}
        self.pacer = Pacer()
        self.packets_out = 0
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
        # Shared with every subscribed switcher (mutated in place, never replaced).
        self.rung_live = [True] * n
        self.rung_errors: dict[int, str] = {}
        # "lost": the capture sends a slate while it reopens the source (public: the
        # page's WebSocket shows it).
        self.source_state: SourceState = "live"
        self.source_message = ""
        self.source_retry_in = 0.0
        self.source_losses = 0

    # -------------------------------------------------------------- viewers

    def subscribe(self, switcher: SwitcherTrack, output: ViewerOutput | None = None) -> None:
        """Fan frames out to ``switcher``'s choice through ``output`` (once it is ready;
        without one, the switcher only chooses, e.g. in unit tests)."""
        self._viewers[switcher] = output
        switcher.bind_ladder(self.rung_live)

    def unsubscribe(self, switcher: SwitcherTrack) -> None:
        self._viewers.pop(switcher, None)

    def listen(self, output: ViewerOutput) -> None:
        """Send every audio packet through ``output`` (once it is ready)."""
        self._listeners[output] = None

    def unlisten(self, output: ViewerOutput) -> None:
        self._listeners.pop(output, None)

    async def close(self) -> None:
        await self.pacer.close()

    def count_switch(self, switch: Switch) -> None:
        self.switches[switch.reason] += 1

    def request_keyframe(self, rung: int) -> None:
        if self.rung_available(rung):
            self.keyframe_requests[rung] += 1
            self._send_keyframe(rung)

    def rung_index(self, name: str) -> int | None:
        for i, rung in enumerate(self.ladder):
            if rung.name == name:
                return i
        return None

    def rung_available(self, index: int) -> bool:
        """Does rung ``index`` exist and still produce frames?"""
        return 0 <= index < len(self.ladder) and self.rung_live[index]

    def available_rung_names(self) -> list[str]:
        return [r.name for i, r in enumerate(self.ladder) if self.rung_live[i]]

    # -------------------------------------------------------------- capture side

    def on_message(self, msg: CaptureMessage) -> None:
        if isinstance(msg, FrameSet):
            self._fan_out(msg)
        elif isinstance(msg, AudioFrame):
            self._fan_out_audio(msg)
        elif isinstance(msg, CaptureStats):
            self.stats = msg
        elif isinstance(msg, SourceStatus):
            self._source_status(msg)
        elif isinstance(msg, RungFailed):
            self._rung_failed(msg)
        elif isinstance(msg, CaptureError):
            self.error = msg.message
            logger.error("capture failed: %s", msg.message)
            if self.on_error is not None:
                self.on_error(msg.message)

    def on_eof(self) -> None:
        self.ended = True

    def _source_status(self, msg: SourceStatus) -> None:
        if msg.state == "lost" and self.source_state != "lost":
            self.source_losses += 1
            logger.warning("source lost (%s); viewers see a slate while it reconnects", msg.message)
        elif msg.state == "live" and self.source_state != "live":
            logger.warning("source live again")
        self.source_state = msg.state
        self.source_message = msg.message
        self.source_retry_in = msg.retry_in

    def _rung_failed(self, msg: RungFailed) -> None:
        if not self.rung_available(msg.rung):
            return
        self.rung_live[msg.rung] = False
        self.rung_errors[msg.rung] = msg.message
        logger.warning(
            "rung %s taken out of the ladder: %s", self.ladder[msg.rung].name, msg.message
        )
        for switcher in self._viewers:
            switcher.on_rung_failed(msg.rung)

    def _fan_out(self, fs: FrameSet) -> None:
        self.last_frame_at = time.monotonic()
        # Wall-clock time of pts 0: capture time of any frame = clock_epoch + pts / 90 kHz.
        self.clock_epoch = fs.capture_time - fs.pts / CLOCK_RATE
        self.framesets += 1
        frames: dict[int, EncodedFrame] = {}
        for f in fs.frames:
            frames[f.rung] = f
            if f.keyframe:
                self.keyframes_seen[f.rung] += 1
        shared: dict[int, SharedFrame] = {}
        jobs: list[Job] = []
        for switcher, output in self._viewers.items():
            if output is not None and not output.ready:
                continue  # not connected yet: it starts at a keyframe once it is
            sent = switcher.offer(frames)
            if sent is None:
                continue
            self.frames_out[sent.rung] += 1
            self.bytes_out[sent.rung] += len(sent.data)
            if output is None:
                continue
            frame = shared.get(sent.rung)
            if frame is None:
                frame = shared[sent.rung] = packetize(self.codec, sent, fs.capture_time)
            self.packets_out += len(frame.bodies)
            jobs.append((output, frame))
        self.pacer.submit(jobs)

    def _fan_out_audio(self, msg: AudioFrame) -> None:
        self.audio_frames += 1
        self.last_audio_at = time.monotonic()
        if self.clock_epoch is None:
            return  # no video yet: nothing to line the audio up with
        wall = self.clock_epoch + msg.pts / AUDIO_CLOCK_RATE
        frame = SharedFrame(AUDIO, msg.pts, True, (msg.data,), len(msg.data), wall)
        jobs: list[Job] = [(output, frame) for output in self._listeners if output.ready]
        self.audio_packets_out += len(jobs)
        self.pacer.submit(jobs)

    # -------------------------------------------------------------- state

    @property
    def healthy(self) -> bool:
        return (
            self.error is None
            and self.last_frame_at is not None
            and time.monotonic() - self.last_frame_at < STALE_AFTER
        )

    def health_fields(self) -> dict[str, object]:
        """What /healthz adds about capture faults (the stream stays up through them)."""
        out: dict[str, object] = {
            "source": self.source_state,
            "rungs_down": [self.ladder[i].name for i in sorted(self.rung_errors)],
        }
        if self.source_state == "lost":
            out["source_error"] = self.source_message
        out["audio"] = self.audio_state
        return out

    @property
    def audio_state(self) -> str:
        """off (no sound configured), live, or silent (configured, nothing coming: e.g.
        a camera's microphone that is not there)."""
        if not self.audio:
            return "off"
        recent = self.last_audio_at is not None and time.monotonic() - self.last_audio_at < 1.0
        return "live" if recent else "silent"

    def viewers_per_rung(self) -> list[int]:
        counts = [0] * len(self.ladder)
        for s in self._viewers:
            if s.current is not None:
                counts[s.current] += 1
        return counts

    @property
    def viewer_count(self) -> int:
        return len(self._viewers)
