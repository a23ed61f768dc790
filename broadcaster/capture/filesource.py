"""File source: plays a media file at its own speed, looping forever.

The first video stream is handed out by ``read()`` (the picture due now), and, when asked
for, the first audio stream as 48 kHz PCM through ``FileSource.audio`` (a ``PcmSource``).
Both follow one playback clock, so they stay in sync however often each is polled.

Playback timeline: a frame is due at ``pass offset + (pts - first pts) * time_base``; each
pass through the file (reopened at end of file) starts where the previous one ended, the
previous pass lasting from its first frame to its last frame's pts + frame duration. Audio
is laid on the same timeline by sample index: placed by its timestamps, gaps filled with
silence, overlaps trimmed, and cut/padded to the exact end of each pass.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from broadcaster.capture.pcm import SAMPLE_RATE, Pcm, silence
from broadcaster.capture.sources import Frame, SourceError, one_line

log = logging.getLogger(__name__)

# Undelivered media held at most, per kind (PCM, video packets): enough to ride out a
# coarsely interleaved file or a consumer's hiccup, bounded so that a consumer who stops
# asking cannot grow memory.
MAX_BUFFER_S = 2.0
# Audio timestamps this close to where the PCM already ends are resampler delay or
# rounding, not a real gap or overlap; larger differences are filled or trimmed.
RESYNC_SAMPLES = SAMPLE_RATE // 100
# Float slack when comparing a due time with the clock (sums of frame periods drift).
_DUE_SLACK_S = 1e-6
# Frame rate assumed when a stream states none and its frames carry no pts/duration.
_FALLBACK_FPS = Fraction(30)
_LAYOUTS = {1: "mono", 2: "stereo"}


@dataclass
class _Picture:
    frame: Any  # av.VideoFrame
    due: Fraction  # playback time (s)
    image: Frame | None = None  # converted lazily, once


class FileSource:
    """Pictures (and optionally PCM) of ``path`` at the file's own speed, looping forever.

    ``clock`` gives the playback time (seconds, monotonic); playback starts at the first
    ``read()`` or audio ``pull()``, whichever comes first. ``audio_channels`` (1 or 2)
    asks for the file's first audio stream as PCM, see ``audio``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        audio_channels: int | None = None,
    ) -> None:
        if audio_channels is not None and audio_channels not in _LAYOUTS:
            raise ValueError(f"audio_channels must be 1, 2 or None, not {audio_channels!r}")
        self._path = os.path.expanduser(os.fspath(path))
        self._name = f"file {self._path}"
        self._clock = clock
        # One lock for everything: read() and pull() may run on different threads and both
        # demux the same container; close() must not free it mid-decode.
        self._lock = threading.Lock()
        self._closed = False
        self._start: float | None = None
        self._shown: _Picture | None = None
        self._next: _Picture | None = None
        self._pcm: _PcmQueue | None = None
        if audio_channels is not None:
            self._pcm = _PcmQueue(audio_channels, int(MAX_BUFFER_S * SAMPLE_RATE))
        self._audio_closed = False
        self._audio_error: str | None = None
        self._pass_offset = Fraction(0)
        self._reset_pass()
        self._container: Any = None
        self._packets: Iterator[Any] | None = None
        if not os.path.exists(self._path):
            raise SourceError(f"{self._name}: no such file")
        if os.path.isdir(self._path):
            raise SourceError(f"{self._name}: is a directory, not a media file")
        video, audio = self._open()
        # Decode one frame now so a file whose codec cannot be decoded fails at open time,
        # with the other "cannot open" errors, rather than on the first read.
        try:
            self._next = self._next_picture()
        except SourceError:
            self._release()
            raise
        if self._next is None:
            self._release()
            raise SourceError(f"{self._name}: video stream has no decodable frames")
        self._audio: FileAudio | None = None
        if audio is not None and audio_channels is not None:
            self._audio = FileAudio(self, audio_channels)
        elif self._pcm is not None:
            self._pcm = None  # nothing to play: stop any later pass from decoding audio
        self._log_opened(video, audio)

    @property
    def audio(self) -> FileAudio | None:
        """The file's audio track as a ``PcmSource``; None without audio_channels or
        without an audio stream in the file."""
        return self._audio

    def read(self) -> Frame:
        """The picture due at the current playback time (the same array again until the
        next one is due)."""
        with self._lock:
            if self._closed:
                raise SourceError(f"{self._name}: read after close")
            picture = self._advance(self._elapsed())
        if picture.image is None:
            # Converted outside the lock (a decoded frame owns its buffers) so a 1080p
            # conversion does not hold up an audio pull.
            image = picture.frame.to_ndarray(format="bgr24")
            # PyAV may return a view that skips row padding; the contract is C-contiguous.
            picture.image = np.ascontiguousarray(image, dtype=np.uint8)
        return picture.image

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._shown = self._next = None
            if self._pcm is not None:
                self._pcm.clear()
            self._release()
        log.info("%s closed", self._name)

    @property
    def buffered_video_packets(self) -> int:
        """Video packets demuxed but not decoded yet (diagnostics, tests)."""
        return len(self._video_packets)

    # ------------------------------------------------------------------ playback clock

    def _elapsed(self) -> float:
        now = self._clock()
        if self._start is None:
            self._start = now
        return now - self._start

    def _advance(self, elapsed: float) -> _Picture:
        """Make the latest picture due at ``elapsed`` the shown one, dropping skipped ones."""
        if self._shown is None:
            self._shown = self._take()
        while float(self._peek().due) <= elapsed + _DUE_SLACK_S:
            self._shown = self._take()
        return self._shown

    def _take(self) -> _Picture:
        picture = self._peek()
        self._next = None
        return picture

    def _peek(self) -> _Picture:
        if self._next is None:
            self._next = self._next_picture()
        if self._next is None:
            self._loop()
            self._next = self._next_picture()
            if self._next is None:
                raise SourceError(f"{self._name}: video stream has no decodable frames")
        return self._next

    # ------------------------------------------------------------------ one pass

    def _reset_pass(self) -> None:
        self._video_packets: deque[Any] = deque()
        self._pictures: deque[_Picture] = deque()
        self._exhausted = False
        self._origin: Fraction | None = None  # first frame's time in this pass
        self._frames_in_pass = 0
        self._pass_length = Fraction(0)
        self._held_audio: list[tuple[Fraction | None, Pcm]] = []
        self._resampler: Any = None
        self._video: Any = None
        self._rate = _FALLBACK_FPS
        self._max_video_packets = math.ceil(MAX_BUFFER_S * _FALLBACK_FPS)

    def _next_picture(self) -> _Picture | None:
        """The next picture of this pass, or None once the pass is over."""
        while not self._pictures:
            if self._video_packets:
                self._decode_video(self._video_packets.popleft())
            elif not self._demux_one():
                return None
        return self._pictures.popleft()

    def _demux_one(self) -> bool:
        """Route the next packet to its stream; False at the end of the file."""
        if self._packets is None or self._exhausted:
            return False
        try:
            packet = next(self._packets, None)
        except av.FFmpegError as exc:
            raise SourceError(f"{self._name}: decode failed ({one_line(exc)})") from exc
        if packet is None:
            self._exhausted = True
            return False
        if packet.stream.index == self._video.index:
            self._video_packets.append(packet)
        else:
            self._decode_audio(packet)
        return True

    def _decode_video(self, packet: Any) -> None:
        for frame in self._decode(packet):
            self._pictures.append(_Picture(frame, self._pass_offset + self._place_frame(frame)))

    def _place_frame(self, frame: Any) -> Fraction:
        """The frame's time relative to this pass's first frame; tracks the pass length."""
        tb = self._video.time_base
        if frame.pts is not None and tb is not None:
            at = Fraction(frame.pts) * Fraction(tb)
            duration = Fraction(frame.duration or 0) * Fraction(tb) or 1 / self._rate
        else:
            # No timestamps: count frames at the stream's rate.
            at = self._frames_in_pass / self._rate
            duration = 1 / self._rate
        self._frames_in_pass += 1
        if self._origin is None:
            self._origin = at
            self._place_held_audio()
        relative = at - self._origin
        self._pass_length = max(self._pass_length, relative + duration)
        return relative

    def _loop(self) -> None:
        """End of file: start over, the new pass starting where this one ended.

        Reopening (rather than seeking) works for every container, including ones that
        cannot seek.
        """
        log.debug("%s: end of file, looping", self._name)
        boundary = self._pass_offset + self._pass_length
        self._end_audio_pass(round(boundary * SAMPLE_RATE))
        self._release()
        self._pass_offset = boundary
        self._reset_pass()
        self._open()

    # ------------------------------------------------------------------ audio

    def _audio_wanted(self) -> bool:
        return self._pcm is not None and not self._audio_closed

    def _decode_audio(self, packet: Any) -> None:
        if not self._audio_wanted() or self._resampler is None:
            return
        try:
            frames = self._decode(packet, "audio ")
            resampled = [(frame, self._resample(frame)) for frame in frames]
        except SourceError as exc:
            # The sound's fault is the sound's alone: pull() reports it, pictures go on.
            self._fail_audio(str(exc))
            return
        for frame, pcm in resampled:
            at = None
            if frame.pts is not None and frame.time_base is not None:
                at = Fraction(frame.pts) * Fraction(frame.time_base)
            if self._origin is None:
                # Not placeable before the pass's first picture fixes the time origin.
                self._held_audio.append((at, pcm))
                self._bound_held_audio()
            else:
                self._place_audio(at, pcm)

    def _resample(self, frame: Any) -> Pcm:
        assert self._pcm is not None
        try:
            out = self._resampler.resample(frame)
        except av.FFmpegError as exc:
            raise SourceError(f"{self._name}: audio resampling failed ({one_line(exc)})") from exc
        channels = self._pcm.channels
        parts = [f.to_ndarray().reshape(-1, channels) for f in out]
        if not parts:
            return silence(0, channels)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _place_audio(self, at: Fraction | None, pcm: Pcm) -> None:
        assert self._pcm is not None and self._origin is not None
        if at is None:
            self._pcm.put(self._pcm.end, pcm)
            return
        self._pcm.put(round((self._pass_offset + at - self._origin) * SAMPLE_RATE), pcm)

    def _place_held_audio(self) -> None:
        held, self._held_audio = self._held_audio, []
        for at, pcm in held:
            self._place_audio(at, pcm)

    def _bound_held_audio(self) -> None:
        limit = MAX_BUFFER_S * SAMPLE_RATE
        while len(self._held_audio) > 1 and sum(len(p) for _, p in self._held_audio) > limit:
            self._held_audio.pop(0)

    def _end_audio_pass(self, boundary: int) -> None:
        """Flush the resampler and make this pass's PCM end exactly at ``boundary``, so
        the next pass continues it without a gap or an overlap."""
        if not self._audio_wanted() or self._resampler is None:
            return
        assert self._pcm is not None
        try:
            tail = self._resample(None)
        except SourceError as exc:
            self._fail_audio(str(exc))
            return
        self._pcm.put(self._pcm.end, tail)
        self._pcm.end_at(boundary)

    def _fail_audio(self, message: str) -> None:
        log.warning("%s; the pictures play on without sound", message)
        self._audio_error = message
        self._audio_closed = True
        self._resampler = None
        if self._pcm is not None:
            self._pcm.clear()

    def _pull_audio(self) -> Pcm | None:
        with self._lock:
            if self._closed or (self._audio_closed and self._audio_error is None):
                raise SourceError(f"{self._name}: audio pull after close")
            if self._audio_error is not None:
                raise SourceError(self._audio_error)
            assert self._pcm is not None
            elapsed = self._elapsed()
            until = int((elapsed + _DUE_SLACK_S) * SAMPLE_RATE)
            while self._pcm.end < until and self._demux_for_audio(elapsed):
                pass
            return self._pcm.take(until)

    def _demux_for_audio(self, elapsed: float) -> bool:
        """Demux further for audio; False when that cannot progress right now."""
        if not self._exhausted and len(self._video_packets) < self._max_video_packets:
            return self._demux_one()
        # Video packets pile up (pictures not read lately) or the file ended: let the
        # video catch up to the playback time, as a read() would. That frees the packets
        # of pictures already due, and loops at end of file once every picture was due.
        before = (self._pass_offset, len(self._video_packets), self._exhausted)
        self._advance(elapsed)
        return (self._pass_offset, len(self._video_packets), self._exhausted) != before

    def _close_audio(self) -> None:
        with self._lock:
            self._audio_closed = True
            if self._pcm is not None:
                self._pcm.clear()

    # ------------------------------------------------------------------ container

    def _decode(self, packet: Any, kind: str = "") -> list[Any]:
        try:
            frames: list[Any] = packet.decode()
        except av.FFmpegError as exc:
            raise SourceError(f"{self._name}: {kind}decode failed ({one_line(exc)})") from exc
        return frames

    def _open(self) -> tuple[Any, Any]:
        """Open the file and start demuxing its first video (and audio) stream."""
        try:
            container: Any = av.open(self._path, mode="r")
        except FileNotFoundError as exc:
            raise SourceError(f"{self._name}: no such file") from exc
        except PermissionError as exc:
            raise SourceError(f"{self._name}: permission denied") from exc
        except (av.FFmpegError, UnicodeDecodeError) as exc:
            raise SourceError(f"{self._name}: not a media file ({one_line(exc)})") from exc
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self._name}: has no video stream")
        video = container.streams.video[0]
        # Frame threading: decoding a 1080p file must not eat the capture loop's budget.
        video.thread_type = "AUTO"
        audio = None
        streams = [video]
        if self._audio_wanted() and container.streams.audio:
            audio = container.streams.audio[0]
            if audio.codec_context is None:
                log.warning("%s: no decoder for its audio; playing without sound", self._name)
                audio = None
        if audio is not None:
            streams.append(audio)
            assert self._pcm is not None
            self._resampler = av.AudioResampler(
                format="s16", layout=_LAYOUTS[self._pcm.channels], rate=SAMPLE_RATE
            )
        self._container = container
        self._video = video
        self._rate = Fraction(video.average_rate or video.guessed_rate or _FALLBACK_FPS)
        self._max_video_packets = math.ceil(MAX_BUFFER_S * self._rate)
        self._packets = container.demux(*streams)
        return video, audio

    def _release(self) -> None:
        self._video_packets.clear()
        self._pictures.clear()
        self._resampler = None
        if self._packets is not None:
            close_gen = getattr(self._packets, "close", None)
            if close_gen is not None:
                close_gen()
            self._packets = None
        if self._container is not None:
            self._container.close()
            self._container = None

    def _log_opened(self, video: Any, audio: Any) -> None:
        ctx = video.codec_context
        sound = "no audio"
        if audio is not None:
            sound = f"audio {audio.codec_context.name} {audio.codec_context.sample_rate} Hz"
        log.info(
            "%s opened: %s %dx%d, %s fps, %s",
            self._name,
            ctx.name,
            ctx.width,
            ctx.height,
            video.average_rate,
            sound,
        )


class FileAudio:
    """A ``FileSource``'s audio track as a ``PcmSource`` (48 kHz s16, ``channels`` wide).

    ``pull(now)`` returns the PCM not handed out yet whose playback time has come, on the
    source's own playback clock (the injected ``clock``, shared with the pictures); ``now``
    is ignored, so pictures and sound cannot drift apart. It never blocks: it demuxes (and
    if pictures lag, decodes video) just far enough to cover the playback time. PCM
    nobody pulls is kept for at most ``MAX_BUFFER_S``, oldest dropped first.
    ``close()`` stops the audio only; the pictures play on.
    """

    def __init__(self, source: FileSource, channels: int) -> None:
        self._source = source
        self.channels = channels

    def pull(self, now: float) -> Pcm | None:
        return self._source._pull_audio()

    def close(self) -> None:
        self._source._close_audio()

    @property
    def buffered_samples(self) -> int:
        """PCM decoded but not pulled yet, in samples per channel (diagnostics, tests)."""
        pcm = self._source._pcm
        return 0 if pcm is None else pcm.queued


class _PcmQueue:
    """PCM on the playback timeline: sample ``head`` is the next one to hand out, the
    queue holds ``head`` up to ``end`` (exclusive), at most ``limit`` samples."""

    def __init__(self, channels: int, limit: int) -> None:
        self.channels = channels
        self._limit = limit
        self._chunks: deque[Pcm] = deque()
        self.head = 0
        self.end = 0
        self._dropping = False

    @property
    def queued(self) -> int:
        return self.end - self.head

    def put(self, at: int, pcm: Pcm) -> None:
        """Queue ``pcm`` meant to start at sample ``at``: a gap is filled with silence,
        an overlap trimmed off ``pcm``, a difference within RESYNC_SAMPLES ignored."""
        gap = at - self.end
        if gap > RESYNC_SAMPLES:
            self._append(silence(gap, self.channels))
        elif gap < -RESYNC_SAMPLES:
            pcm = pcm[-gap:]
        self._append(pcm)

    def end_at(self, at: int) -> None:
        """Pad with silence or cut the tail so the queue ends at ``at`` (PCM already
        handed out cannot be taken back)."""
        if at > self.end:
            self._append(silence(at - self.end, self.channels))
        else:
            self._cut_tail(max(at, self.head))

    def take(self, until: int) -> Pcm | None:
        """Hand out the queued samples before ``until``."""
        count = min(until, self.end) - self.head
        if count <= 0:
            return None
        return self._pop_front(count)

    def clear(self) -> None:
        self._chunks.clear()
        self.head = self.end

    def _append(self, pcm: Pcm) -> None:
        if not len(pcm):
            return
        self._chunks.append(pcm)
        self.end += len(pcm)
        excess = self.queued - self._limit
        if excess > 0:
            if not self._dropping:
                log.debug("audio not pulled: dropping the oldest PCM to stay bounded")
                self._dropping = True
            self._pop_front(excess)
        else:
            self._dropping = False

    def _pop_front(self, count: int) -> Pcm:
        parts: list[Pcm] = []
        need = count
        while need:
            chunk = self._chunks[0]
            if len(chunk) <= need:
                parts.append(self._chunks.popleft())
                need -= len(chunk)
            else:
                parts.append(chunk[:need])
                self._chunks[0] = chunk[need:]
                need = 0
        self.head += count
        out: Pcm = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return np.ascontiguousarray(out)

    def _cut_tail(self, at: int) -> None:
        excess = self.end - at
        while excess > 0:
            chunk = self._chunks[-1]
            if len(chunk) <= excess:
                self._chunks.pop()
                excess -= len(chunk)
            else:
                self._chunks[-1] = chunk[: len(chunk) - excess]
                excess = 0
        self.end = at
