"""File source: real-time pacing and the audio track, on a fake clock.

The clips are written with PyAV into tmp_path: frame N of a paced clip has brightness
16 + 8*N (so the pixels tell which frame was returned); the A/V clip is black with a silent
AAC track until t = 0.5 s, then white with a 1 kHz tone until 0.8 s.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from broadcaster.capture.filesource import MAX_BUFFER_S, FileSource
from broadcaster.capture.pcm import SAMPLE_RATE
from broadcaster.capture.sources import SourceError

SIZE = (64, 48)
TONE_FROM, TONE_TO = 0.5, 0.8
# The 44.1 kHz -> 48 kHz resampler holds back a few samples; one AAC frame is the most
# the tests allow anywhere.
RESAMPLER_FRAME = 1024


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def at(self, playback: float) -> None:
        # Set from the start time, never accumulated, so float error cannot pile up.
        self.now = 1000.0 + playback


def _write(
    path: Path,
    *,
    fps: int,
    frames: int,
    shade: Callable[[int], int],
    audio: bool = True,
    audio_rate: int = 44_100,
) -> Path:
    width, height = SIZE
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.bit_rate = 4_000_000  # near-lossless: the brightness tells the frame number
        sound = container.add_stream("aac", rate=audio_rate) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for n in range(frames):
            image = np.full((height, width, 3), shade(n), np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = n, Fraction(1, fps)
            container.mux(video.encode(frame))
        if sound is not None:
            _mux_tone(container, sound, audio_rate, frames / fps)
            container.mux(sound.encode(None))
        container.mux(video.encode(None))
    return path


def _mux_tone(container: object, sound: object, rate: int, seconds: float) -> None:
    t = np.arange(round(seconds * rate)) / rate
    wave = np.where((t >= TONE_FROM) & (t < TONE_TO), 0.5 * np.sin(2 * np.pi * 1000 * t), 0)
    wave = wave.astype(np.float32)
    for start in range(0, len(wave), 1024):
        chunk = wave[None, start : start + 1024]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), "fltp", "mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        container.mux(sound.encode(frame))  # type: ignore[attr-defined]


def _av_clip(tmp_path: Path, name: str = "av.mp4") -> Path:
    """1 s at 20 fps: black and silent, white with a 1 kHz tone from 0.5 s to 0.8 s."""
    return _write(tmp_path / name, fps=20, frames=20, shade=lambda n: 255 if 10 <= n < 16 else 0)


def _shade(n: int) -> int:
    return 16 + 8 * n


def _index(image: np.ndarray) -> int:
    return round((float(image.mean()) - 16) / 8)


def _onsets(pcm: np.ndarray) -> list[int]:
    """Sample indices where the tone starts after at least 0.1 s of quiet."""
    loud = np.flatnonzero(np.abs(pcm[:, 0].astype(np.int32)) > 0.25 * 32767)
    starts = [int(i) for k, i in enumerate(loud) if k == 0 or i - loud[k - 1] > SAMPLE_RATE // 10]
    return starts


# --- pacing -------------------------------------------------------------------------------


def test_25fps_file_read_30_times_a_second_advances_at_25fps(tmp_path: Path) -> None:
    clip = _write(tmp_path / "25.mp4", fps=25, frames=30, shade=_shade, audio=False)
    clock = FakeClock()
    source = FileSource(clip, clock=clock)
    try:
        seen = []
        for i in range(36):  # 1.2 s
            clock.at(i / 30)
            seen.append(_index(source.read()))
    finally:
        source.close()
    assert seen == [i * 25 // 30 for i in range(36)]


def test_60fps_file_read_at_30_drops_every_other_frame(tmp_path: Path) -> None:
    clip = _write(tmp_path / "60.mp4", fps=60, frames=28, shade=_shade, audio=False)
    clock = FakeClock()
    source = FileSource(clip, clock=clock)
    try:
        seen = []
        for i in range(14):
            clock.at(i / 30)
            seen.append(_index(source.read()))
    finally:
        source.close()
    assert seen == list(range(0, 28, 2))


def test_a_picture_not_due_yet_is_the_same_array_again(tmp_path: Path) -> None:
    clip = _write(tmp_path / "25.mp4", fps=25, frames=10, shade=_shade, audio=False)
    clock = FakeClock()
    source = FileSource(clip, clock=clock)
    try:
        first = source.read()
        clock.at(0.039)
        assert source.read() is first  # cached, not converted again
        clock.at(0.04)
        assert _index(source.read()) == 1
    finally:
        source.close()


def test_looping_continues_the_timeline(tmp_path: Path) -> None:
    clip = _write(tmp_path / "25.mp4", fps=25, frames=10, shade=_shade, audio=False)
    clock = FakeClock()
    source = FileSource(clip, clock=clock)
    try:
        seen = []
        for i in range(25):  # 0.4 s passes, read at every frame's due time
            clock.at(i / 25)
            seen.append(_index(source.read()))
    finally:
        source.close()
    assert seen == [i % 10 for i in range(25)]


def test_frames_without_pts_are_counted_at_the_stream_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decode = FileSource._decode

    def without_pts(self: FileSource, packet: object, kind: str = "") -> list[object]:
        frames = decode(self, packet, kind)
        for frame in frames:
            frame.pts = None  # type: ignore[attr-defined]
        return frames

    monkeypatch.setattr(FileSource, "_decode", without_pts)
    clip = _write(tmp_path / "25.mp4", fps=25, frames=10, shade=_shade, audio=False)
    clock = FakeClock()
    source = FileSource(clip, clock=clock)
    try:
        seen = []
        for i in range(15):  # 30 reads a second
            clock.at(i / 30)
            seen.append(_index(source.read()))
    finally:
        source.close()
    assert seen == [i * 25 // 30 % 10 for i in range(15)]


# --- audio --------------------------------------------------------------------------------


def test_tone_onset_and_white_frame_come_at_the_same_playback_time(tmp_path: Path) -> None:
    clock = FakeClock()
    source = FileSource(_av_clip(tmp_path), clock=clock, audio_channels=2)
    audio = source.audio
    assert audio is not None and audio.channels == 2
    white_at = tone_at = None
    chunks: list[np.ndarray] = []
    try:
        for i in range(180):  # 0.9 s in 5 ms steps
            clock.at(i / 200)
            if white_at is None and source.read().mean() > 128:
                white_at = i / 200
            pcm = audio.pull(clock())
            if pcm is not None:
                assert pcm.dtype == np.int16 and pcm.ndim == 2 and pcm.shape[1] == 2
                chunks.append(pcm)
                if tone_at is None and _onsets(pcm):
                    tone_at = i / 200
    finally:
        source.close()
    stream = np.concatenate(chunks)
    assert np.array_equal(stream[:, 0], stream[:, 1])  # mono upmixed
    onset = _onsets(stream)[0] / SAMPLE_RATE
    assert white_at == pytest.approx(TONE_FROM, abs=0.001)
    assert onset == pytest.approx(white_at, abs=0.025)
    assert tone_at == pytest.approx(white_at, abs=0.025)
    # Everything due was handed out, nothing ahead of the clock.
    assert len(stream) == pytest.approx(0.895 * SAMPLE_RATE, abs=1)


def test_looping_keeps_the_audio_continuous(tmp_path: Path) -> None:
    clock = FakeClock()
    source = FileSource(_av_clip(tmp_path), clock=clock, audio_channels=1)
    audio = source.audio
    assert audio is not None
    chunks: list[np.ndarray] = []
    try:
        for i in range(126):  # 2.5 passes of the 1 s clip, 20 ms steps
            clock.at(i / 50)
            source.read()
            pcm = audio.pull(clock())
            if pcm is not None:
                chunks.append(pcm)
    finally:
        source.close()
    stream = np.concatenate(chunks)
    assert stream.shape[1] == 1
    assert abs(len(stream) - 2.5 * SAMPLE_RATE) <= RESAMPLER_FRAME
    # The tone comes back exactly one clip duration later: no gap, no overlap.
    first, second = _onsets(stream)[:2]
    assert first / SAMPLE_RATE == pytest.approx(TONE_FROM, abs=0.005)
    assert abs(second - first - SAMPLE_RATE) <= 32


def test_audio_pulled_while_pictures_are_not_read_keeps_going(tmp_path: Path) -> None:
    clock = FakeClock()
    source = FileSource(_av_clip(tmp_path), clock=clock, audio_channels=1)
    audio = source.audio
    assert audio is not None
    total = 0
    try:
        for i in range(151):  # 3 s, 20 ms steps, no read() at all
            clock.at(i / 50)
            pcm = audio.pull(clock())
            total += 0 if pcm is None else len(pcm)
            assert source.buffered_video_packets <= MAX_BUFFER_S * 20 + 1
    finally:
        source.close()
    assert abs(total - 3 * SAMPLE_RATE) <= RESAMPLER_FRAME


def test_unpulled_audio_stays_bounded(tmp_path: Path) -> None:
    clock = FakeClock()
    source = FileSource(_av_clip(tmp_path), clock=clock, audio_channels=2)
    audio = source.audio
    assert audio is not None
    limit = int(MAX_BUFFER_S * SAMPLE_RATE)
    try:
        for i in range(181):  # 6 s of pictures, nobody pulls the sound
            clock.at(i / 30)
            source.read()
            assert audio.buffered_samples <= limit
        assert audio.buffered_samples > limit // 2  # it did fill up, then dropped
        pcm = audio.pull(clock())
        assert pcm is not None and len(pcm) <= limit
        assert audio.pull(clock()) is None  # the newest was handed out: nothing is left due
    finally:
        source.close()


def test_no_audio_track_or_not_asked_gives_none(tmp_path: Path) -> None:
    silent = _write(tmp_path / "v.mp4", fps=25, frames=5, shade=lambda n: 0, audio=False)
    with_sound = _av_clip(tmp_path)
    for source in (FileSource(silent, audio_channels=2), FileSource(with_sound)):
        try:
            assert source.audio is None
            assert source.read().shape == (SIZE[1], SIZE[0], 3)
        finally:
            source.close()
    with pytest.raises(ValueError, match="audio_channels"):
        FileSource(with_sound, audio_channels=6)


def test_pull_after_close_raises_and_closing_audio_leaves_the_pictures(tmp_path: Path) -> None:
    clip = _av_clip(tmp_path)
    source = FileSource(clip, audio_channels=1)
    audio = source.audio
    assert audio is not None
    audio.close()
    audio.close()
    with pytest.raises(SourceError, match="after close"):
        audio.pull(0.0)
    assert source.read().ndim == 3
    source.close()

    source = FileSource(clip, audio_channels=1)
    audio = source.audio
    assert audio is not None
    source.close()
    with pytest.raises(SourceError, match="after close") as info:
        audio.pull(0.0)
    assert "\n" not in str(info.value)


class _BrokenResampler:
    def __init__(self, **_: object) -> None:
        pass

    def resample(self, frame: object) -> list[object]:
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")


def test_an_audio_fault_silences_the_sound_and_the_pictures_play_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(av, "AudioResampler", _BrokenResampler)
    clock = FakeClock()
    source = FileSource(_av_clip(tmp_path), clock=clock, audio_channels=1)
    audio = source.audio
    assert audio is not None
    try:
        with pytest.raises(SourceError, match="audio resampling failed") as info:
            audio.pull(clock())
        assert "\n" not in str(info.value)
        for i in range(60):  # 2 passes of pictures
            clock.at(i / 30)
            assert source.read().ndim == 3
    finally:
        source.close()
