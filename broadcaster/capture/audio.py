"""Audio in the capture process: a source, one Opus encoder, packets on the capture clock.

Sources (all ``PcmSource``, pcm.py):

- ``ToneSource``: the test pattern's tone, a 1 kHz beep at every mark (syncmarks.py), so
  the beep and the flash leave capture at the same instant;
- ``DeviceSource``: an FFmpeg input device through PyAV, by default the microphone
  (``alsa:default``); ``mic:FORMAT:DEVICE`` picks another, e.g. ``mic:alsa:hw:1`` or,
  for a machine without a sound card, ``mic:lavfi:sine=frequency=440,realtime``;
- a file's own audio track (``FileSource.audio``), on the file's playback clock.

``AudioPipeline`` cuts whatever PCM arrives into 20 ms frames, encodes each frame ONCE and
publishes it as an ``AudioFrame`` whose pts counts 48 kHz samples on the same clock as
video pts (sample 0 is the instant of video pts 0): that shared clock is what lets the
server's sender reports, and so the browser, line audio up with video.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import av
import numpy as np

from ..bus.packet import AudioFrame, CaptureMessage
from ..config import AudioConfig
from .pcm import FRAME_SAMPLES, SAMPLE_RATE, Pcm, PcmSource
from .sources import SourceError, one_line
from .syncmarks import SyncMarks

logger = logging.getLogger(__name__)

TONE_HZ = 1000.0
TONE_AMPLITUDE = 0.5  # of full scale
# Sources that deliver at their own pace (a device, a file) drift against the capture
# clock; beyond this the stream is re-anchored on the clock (a jump the browser absorbs).
RESYNC_S = 0.2
# The pump wakes this long after each 20 ms boundary of the capture clock.
PUMP_AFTER_S = 0.001
# A device source keeps at most this much unread audio; older audio is dropped.
DEVICE_BUFFER_S = 2.0
LAYOUTS = {1: "mono", 2: "stereo"}


class ToneSource:
    """Silence, with a beep during every sync mark. Generated on the capture clock itself,
    so its samples never drift, in whole 20 ms frames from the clock's origin (the pump
    wakes as each one completes)."""

    def __init__(self, marks: SyncMarks, origin: float, channels: int) -> None:
        self.channels = channels
        self._marks = marks
        self._origin = origin
        self._next: int | None = None  # sample index of the next sample to hand out
        self._closed = False

    def pull(self, now: float) -> Pcm | None:
        if self._closed:
            raise SourceError("tone: pull after close")
        until = int((now - self._origin) * SAMPLE_RATE)
        if self._next is None:
            # Starts now (nothing in the past to make up), on a frame boundary.
            self._next = until - until % FRAME_SAMPLES
        count = until - self._next
        if count <= 0:
            return None
        index = np.arange(self._next, until, dtype=np.int64)
        wave = np.sin(2 * np.pi * TONE_HZ / SAMPLE_RATE * index) * (TONE_AMPLITUDE * 32767)
        mono = np.where(self._marks.beeping(self._next, count), wave, 0.0).astype(np.int16)
        self._next = until
        return np.repeat(mono[:, None], self.channels, axis=1)

    def close(self) -> None:
        self._closed = True


class DeviceSource:
    """An FFmpeg input device read by a thread; ``pull`` takes what it has gathered."""

    def __init__(self, fmt: str, device: str, channels: int) -> None:
        self.channels = channels
        self._name = f"audio device {fmt}:{device}"
        try:
            self._container: Any = av.open(device, format=fmt, mode="r")
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise SourceError(f"{self._name}: cannot open ({one_line(exc)})") from exc
        if not self._container.streams.audio:
            self._container.close()
            raise SourceError(f"{self._name}: has no audio stream")
        self._resampler = av.AudioResampler(
            format="s16", layout=LAYOUTS[channels], rate=SAMPLE_RATE
        )
        self._chunks: deque[Pcm] = deque()
        self._buffered = 0
        self._lock = threading.Lock()
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audio-device", daemon=True)
        self._thread.start()
        logger.info("%s opened", self._name)

    def _run(self) -> None:
        try:
            for frame in self._container.decode(self._container.streams.audio[0]):
                if self._stop.is_set():
                    return
                for out in self._resampler.resample(frame):
                    pcm: Pcm = out.to_ndarray().astype(np.int16, copy=False)
                    self._add(pcm.reshape(-1, self.channels))
            self._error = "ended"
        except (av.FFmpegError, OSError, ValueError) as exc:
            if not self._stop.is_set():
                self._error = one_line(exc)

    def _add(self, pcm: Pcm) -> None:
        with self._lock:
            self._chunks.append(pcm)
            self._buffered += len(pcm)
            while self._buffered > DEVICE_BUFFER_S * SAMPLE_RATE:
                self._buffered -= len(self._chunks.popleft())

    def pull(self, now: float) -> Pcm | None:
        with self._lock:
            chunks, self._chunks, self._buffered = list(self._chunks), deque(), 0
        if not chunks:
            if self._error is not None:
                raise SourceError(f"{self._name}: {self._error}")
            return None
        return np.concatenate(chunks)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        # Closing the container ends a blocked read; the thread is a daemon either way.
        self._thread.join(timeout=0.5)
        try:
            self._container.close()
        except (av.FFmpegError, OSError):
            pass
        logger.info("%s closed", self._name)


class OpusEncoder:
    """One libopus encoder: 48 kHz, 20 ms frames."""

    def __init__(self, channels: int, bitrate_kbps: int) -> None:
        self.channels = channels
        codec: Any = av.CodecContext.create("libopus", "w")
        codec.sample_rate = SAMPLE_RATE
        codec.layout = LAYOUTS[channels]
        codec.format = "s16"
        codec.bit_rate = bitrate_kbps * 1000
        codec.options = {"frame_duration": "20", "application": "audio"}
        codec.open()
        self._codec = codec

    def encode(self, pcm: Pcm, pts: int) -> list[tuple[int, bytes]]:
        """One 20 ms frame in; (pts, packet) out, pts as libopus places it (its lookahead
        makes the first packets come out a few ms "early")."""
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout=LAYOUTS[self.channels]
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = pts
        return [(int(p.pts), bytes(p)) for p in self._codec.encode(frame) if p.pts is not None]


class AudioPipeline:
    """Source -> 20 ms frames -> Opus, once -> AudioFrame messages on the capture clock."""

    def __init__(
        self,
        source: Callable[[], PcmSource | None],
        encoder: OpusEncoder,
        publish: Callable[[CaptureMessage], object],
        origin: float,
    ) -> None:
        self._source = source
        self._encoder = encoder
        self._publish = publish
        self._origin = origin
        self._current: PcmSource | None = None
        self._pending: list[Pcm] = []
        self._pending_samples = 0
        self._next_pts: int | None = None  # sample index of the first pending sample
        self._failed: str | None = None
        self.frames = 0

    def pump(self, now: float) -> None:
        pcm = self._pull(now)
        if pcm is None or not len(pcm):
            return
        clock = int((now - self._origin) * SAMPLE_RATE)  # where the newest sample belongs
        end = None if self._next_pts is None else self._next_pts + self._pending_samples
        if end is None or abs(end + len(pcm) - clock) > RESYNC_S * SAMPLE_RATE:
            if end is not None:
                logger.info("audio re-anchored on the capture clock (drift %d samples)",
                            end + len(pcm) - clock)  # fmt: skip
            self._pending, self._pending_samples = [], 0
            self._next_pts = clock - len(pcm)
        self._pending.append(pcm)
        self._pending_samples += len(pcm)
        self._encode_ready()

    def _pull(self, now: float) -> Pcm | None:
        source = self._source()
        if source is not self._current:
            self._current = source
            self._next_pts = None  # a new source starts a new run of timestamps
            self._pending, self._pending_samples = [], 0
            self._failed = None
        if source is None or self._failed is not None:
            return None
        try:
            return source.pull(now)
        except (SourceError, OSError, av.FFmpegError) as exc:
            self._failed = one_line(exc)
            logger.warning("audio source failed: %s; video goes on without sound", self._failed)
            return None

    def _encode_ready(self) -> None:
        if self._pending_samples < FRAME_SAMPLES:
            return
        assert self._next_pts is not None
        pcm = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        whole = len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES
        for start in range(0, whole, FRAME_SAMPLES):
            for pts, data in self._encoder.encode(
                pcm[start : start + FRAME_SAMPLES], self._next_pts
            ):
                self._publish(AudioFrame(pts, data))
                self.frames += 1
            self._next_pts += FRAME_SAMPLES
        rest = pcm[whole:]
        self._pending = [rest] if len(rest) else []
        self._pending_samples = len(rest)


class AudioPump:
    """Runs a pipeline every 20 ms on its own thread: packets leave evenly spaced (the
    browser's jitter buffer sizes itself by their spacing), whatever the video encoders'
    pace."""

    def __init__(
        self, pipeline: AudioPipeline, origin: float, period: float = FRAME_SAMPLES / SAMPLE_RATE
    ) -> None:
        self._pipeline = pipeline
        self._origin = origin
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audio", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        # Just after a frame boundary of the clock: a tone frame is then complete.
        elapsed = time.monotonic() - self._origin
        due = self._origin + (elapsed // self._period + 1) * self._period + PUMP_AFTER_S
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            try:
                self._pipeline.pump(time.monotonic())
            except Exception:  # the encoder broke: video goes on without sound
                logger.exception("audio stopped")
                return
            due += self._period
            if time.monotonic() - due > 10 * self._period:
                due = time.monotonic()  # starved for a while: do not burst to catch up

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)


class AudioCapture:
    """The capture process's sound: the pump (with its pipeline and encoder) and the
    device it owns, if any. ``close`` is idempotent and releases both."""

    def __init__(self, pump: AudioPump, device: PcmSource | None) -> None:
        self._pump = pump
        self._device = device
        self._closed = False

    def start(self) -> None:
        self._pump.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pump.close()
        if self._device is not None:
            self._device.close()


def open_audio(
    audio: AudioConfig,
    kind: str,
    marks: SyncMarks,
    origin: float,
    file_audio: Callable[[], PcmSource | None],
    publish: Callable[[CaptureMessage], object],
) -> AudioCapture | None:
    """The sound for ``kind`` (resolve_kind), or None for none / an absent microphone
    that was only asked for by "auto". Raises SourceError for one asked for by name."""
    device: PcmSource | None = None
    if kind == "none":
        return None
    if kind == "tone":
        device = ToneSource(marks, origin, audio.channels)
    elif kind == "mic":
        try:
            device = open_device(audio)
        except SourceError as exc:
            if audio.source != "auto":
                raise
            logger.warning("no microphone (%s); going live without sound", exc)
            return None
    owned = device
    source = (lambda: owned) if owned is not None else file_audio
    encoder = OpusEncoder(audio.channels, audio.bitrate)
    pipeline = AudioPipeline(source, encoder, publish, origin)
    return AudioCapture(AudioPump(pipeline, origin), device)


def resolve_kind(audio: AudioConfig, source_spec: str) -> str:
    """tone | file | mic | none, with "auto" decided by the video source."""
    kind = audio.source.partition(":")[0]
    if kind != "auto":
        return kind
    video = source_spec.strip().partition(":")[0].lower()
    return {"test": "tone", "file": "file", "camera": "mic"}.get(video, "none")


def open_device(audio: AudioConfig) -> DeviceSource:
    _, _, rest = audio.source.partition(":")
    fmt, _, device = rest.partition(":")
    return DeviceSource(fmt or "alsa", device or "default", audio.channels)
