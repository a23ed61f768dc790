"""The capture process: read, convert once, scale to every rung, encode each rung once.

Runs in its own OS process (so encoding never stalls the server's event loop) and talks to
the server only through the packet bus. ``CaptureProcess`` is the server's handle on it.

Faults mid-stream do not end the broadcast: a source that fails is reopened with back-off
while a "signal lost" slate keeps every rung encoding at the normal rate
(``reconnect.py``; ``SourceStatus`` on the bus), and an encoder that fails takes only its
own rung out of the ladder (``RungFailed``). Fatal (``CaptureError``) are only a source
that cannot be opened at start and a ladder with no rung left.

Test hook: ``BROADCASTER_FAULT_ENCODER="RUNG:FRAMES"`` in the environment makes rung
RUNG's real encoder fail after FRAMES frames (``faults.py``), e.g. ``1:60``.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..bus.local import CaptureLink, ServerLink
from ..bus.packet import (
    CLOCK_RATE,
    CaptureError,
    CaptureStats,
    EncodedFrame,
    FrameSet,
    KeyframeRequest,
    RungFailed,
    Stop,
)
from ..config import Config
from ..encode.clock import PtsClock
from ..encode.encoder import RungEncoder
from ..encode.keyframes import KeyframeScheduler
from ..encode.ladder import LadderScaler
from .audio import open_audio, resolve_kind
from .faults import EncoderFaultHook, encoder_fault_from_env
from .reconnect import ReconnectingSource
from .sources import SourceError, open_source
from .syncmarks import SyncMarks, draw_flash

logger = logging.getLogger(__name__)

STATS_INTERVAL = 1.0  # seconds between CaptureStats messages
# If the loop falls this many frame periods behind (slow source, loaded machine), it drops
# the backlog instead of bursting to catch up.
MAX_LAG_PERIODS = 3


class LadderFailed(Exception):
    """Every rung's encoder has failed: nothing is left to broadcast."""


@dataclass
class _RungCounters:
    frames: int = 0
    bytes: int = 0
    encode_s: float = 0.0


@dataclass
class _Stats:
    started: float
    rungs: list[_RungCounters] = field(default_factory=list)

    def add(self, rung: int, size: int, encode_s: float) -> None:
        c = self.rungs[rung]
        c.frames += 1
        c.bytes += size
        c.encode_s += encode_s

    def flush(self, now: float) -> CaptureStats:
        span = max(now - self.started, 1e-6)
        out = CaptureStats(
            fps=tuple(round(c.frames / span, 2) for c in self.rungs),
            kbps=tuple(round(c.bytes * 8 / span / 1000, 1) for c in self.rungs),
            encode_ms=tuple(round(c.encode_s * 1000 / max(c.frames, 1), 2) for c in self.rungs),
        )
        self.started = now
        self.rungs = [_RungCounters() for _ in self.rungs]
        return out


class CaptureLoop:
    """One iteration per top-rung frame period; owns the source and the encoders."""

    def __init__(self, config: Config, source_spec: str, link: CaptureLink) -> None:
        self.config = config
        self.ladder = config.ladder
        self.link = link
        top = self.ladder[0]
        self.period = 1.0 / top.fps
        # Rung i encodes every `stride[i]`-th captured frame (its fps divides the top's).
        self.stride = [top.fps // r.fps for r in self.ladder]
        # Opening fails fast (SourceError): a source that never worked is a setup mistake.
        # Once it has worked, losing it only puts the slate up while it is reopened.
        self.audio_kind = resolve_kind(config.audio, source_spec)
        reopen = functools.partial(
            open_source,
            source_spec,
            width=top.width,
            height=top.height,
            fps=top.fps,
            audio_channels=config.audio.channels if self.audio_kind == "file" else None,
        )
        self.source = ReconnectingSource(reopen(), reopen, (top.width, top.height), link.publish)
        # Rungs whose encoder still works; a failed one is never encoded again.
        self.live = [True] * len(self.ladder)
        self.fault = EncoderFaultHook(encoder_fault_from_env())
        self.scaler = LadderScaler(self.ladder)
        self.encoders = [RungEncoder(r, config.video.codec) for r in self.ladder]
        gap = config.video.keyframe_min_interval_ms / 1000
        self.keyframes = [
            KeyframeScheduler(config.video.keyframe_interval, gap) for _ in self.ladder
        ]
        self.pool = ThreadPoolExecutor(len(self.ladder), thread_name_prefix="encode")
        # A flash and a beep once a second on the capture clock (drawn on the test pattern).
        self.marks = SyncMarks(round(CLOCK_RATE / top.fps))
        # The test pattern is synthetic: its frames are "taken" on schedule, exactly one
        # period apart, which lets its tone know in advance where each flash starts.
        self.synthetic = source_spec.strip().lower() == "test"
        self.origin = time.monotonic()
        if self.audio_kind == "file" and not source_spec.strip().lower().startswith("file:"):
            raise SourceError("audio source 'file' needs a file: video source")
        self.audio = open_audio(
            config.audio,
            self.audio_kind,
            self.marks,
            self.origin,
            lambda: self.source.audio,
            link.publish,
        )

    def close(self) -> None:
        if self.audio is not None:
            self.audio.close()
        self.pool.shutdown(wait=True)
        self.source.close()
        for e in self.encoders:
            e.close()

    def _handle_control(self) -> bool:
        """Apply keyframe requests; False when told to stop."""
        for msg in self.link.poll():
            if isinstance(msg, Stop):
                return False
            if isinstance(msg, KeyframeRequest) and 0 <= msg.rung < len(self.ladder):
                self.keyframes[msg.rung].request()
        return True

    def _encode_one(self, rung: int, frame: object, pts: int, key: bool) -> list[EncodedFrame]:
        enc = self.encoders[rung]
        self.fault.before_encode(rung, enc)
        out = enc.encode(frame, pts, key)  # type: ignore[arg-type]
        return [EncodedFrame(rung, k, pts, data) for k, data in out]

    def _rung_failed(self, rung: int, exc: BaseException) -> None:
        """Take ``rung`` out of the ladder; LadderFailed if it was the last one."""
        self.live[rung] = False
        name = self.ladder[rung].name
        lines = str(exc).strip().splitlines()
        message = f"{name} encoder failed: {type(exc).__name__}: {lines[0] if lines else ''}"
        logger.warning("rung %d (%s) taken out of the ladder: %s", rung, name, message)
        self.encoders[rung].close()
        self.link.publish(RungFailed(rung, message))
        if not any(self.live):
            raise LadderFailed(f"every rung's encoder failed (last: {message})")

    def step(self, index: int, clock: PtsClock, stats: _Stats, due: float | None = None) -> bool:
        """One frame; ``due``: when it was scheduled (monotonic), the synthetic pattern's
        capture instant."""
        image = self.source.read(time.monotonic())
        now = time.monotonic()
        taken = due if self.synthetic and due is not None else now
        pts = clock.pts(taken)
        wall = time.time() - (now - taken)
        flash = self.marks.on_frame(pts)
        if self.synthetic:
            draw_flash(image, flash)
        active = [
            i for i in range(len(self.ladder)) if self.live[i] and index % self.stride[i] == 0
        ]
        if not active:
            return True
        frames = self.scaler.scale(image, active)
        jobs = []
        for i, frame in zip(active, frames, strict=True):
            key = self.keyframes[i].due(now)
            jobs.append(self.pool.submit(self._encode_one, i, frame, pts, key))
        encoded: list[EncodedFrame] = []
        for i, job in zip(active, jobs, strict=True):
            try:
                got = job.result()
            except Exception as exc:  # one encoder's fault is its rung's alone
                self._rung_failed(i, exc)
                continue
            for f in got:
                stats.add(i, len(f.data), self.encoders[i].last_encode_s)
            encoded.extend(got)
        if not encoded:
            return True
        return self.link.publish(FrameSet(pts, wall, tuple(encoded)))

    def run(self) -> None:
        clock = PtsClock(self.origin)
        if self.audio is not None:
            self.audio.start()
        stats = _Stats(started=time.monotonic(), rungs=[_RungCounters() for _ in self.ladder])
        deadline = time.monotonic()
        index = 0
        while self._handle_control():
            if not self.step(index, clock, stats, deadline):
                return  # server went away
            index += 1
            now = time.monotonic()
            if now - stats.started >= STATS_INTERVAL:
                self.link.publish(stats.flush(now))
            deadline += self.period
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif -delay > MAX_LAG_PERIODS * self.period:
                deadline = time.monotonic()


def capture_main(conn: object, config: Config, source_spec: str) -> None:
    """Entry point of the capture process."""
    # Ctrl-C goes to the whole process group; the server decides when capture stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING)
    link = CaptureLink(conn)  # type: ignore[arg-type]
    try:
        loop = CaptureLoop(config, source_spec, link)
    except SourceError as exc:
        link.publish(CaptureError(str(exc)))
        link.close()
        return
    try:
        loop.run()
    except LadderFailed as exc:
        link.publish(CaptureError(str(exc)))
    finally:
        loop.close()
        link.close()


class CaptureProcess:
    """The server's handle on the capture process: start it, get its bus link, stop it."""

    def __init__(self, config: Config, source_spec: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        self.link = ServerLink(parent)
        self.process = ctx.Process(
            target=capture_main, args=(child, config, source_spec), name="capture", daemon=True
        )
        self.process.start()
        # Only the child may hold its end, or the server would never see EOF.
        child.close()
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def close(self, timeout: float = 3.0) -> None:
        if self._closed:
            return
        self._closed = True
        self.link.close()
        self.process.join(timeout)
        if self.process.is_alive():
            logger.warning("capture process did not stop in %.1fs; terminating", timeout)
            self.process.terminate()
            self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
