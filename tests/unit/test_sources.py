"""Capture sources: test pattern, file source, and the factory's error messages."""

from __future__ import annotations

import statistics
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from broadcaster.capture.filesource import FileSource
from broadcaster.capture.sources import SourceError, open_source
from broadcaster.capture.testpattern import TestPattern

RUNG = {"width": 1280, "height": 720, "fps": 30.0}


def _assert_frame(frame: np.ndarray, height: int, width: int) -> None:
    assert frame.shape == (height, width, 3)
    assert frame.dtype == np.uint8
    assert frame.flags.c_contiguous


def _source_error(spec: str) -> str:
    with pytest.raises(SourceError) as info:
        open_source(spec, **RUNG)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message, "SourceError must read as one line"
    return message


# --- test pattern -------------------------------------------------------------------------


def test_pattern_renders_exactly_the_requested_size() -> None:
    source = open_source("test", width=640, height=360, fps=30)
    try:
        _assert_frame(source.read(), 360, 640)
    finally:
        source.close()


def test_pattern_consecutive_frames_differ() -> None:
    pattern = TestPattern(320, 180, 30)
    frames = [pattern.read() for _ in range(3)]
    assert not np.array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[1], frames[2])


def test_pattern_close_is_idempotent_and_final() -> None:
    pattern = TestPattern(64, 64, 30)
    pattern.close()
    pattern.close()
    with pytest.raises(SourceError, match="after close"):
        pattern.read()


def test_pattern_rejects_a_degenerate_size() -> None:
    with pytest.raises(SourceError, match="too small"):
        TestPattern(0, 720, 30)


def test_pattern_cost_per_720p_frame() -> None:
    pattern = TestPattern(1280, 720, 30)
    pattern.read()  # first frame pays for lazy allocations
    costs = []
    for _ in range(60):
        start = time.perf_counter()
        pattern.read()
        costs.append(time.perf_counter() - start)
    median_ms = statistics.median(costs) * 1e3
    print(f"test pattern 1280x720: median {median_ms:.2f} ms/frame, max {max(costs) * 1e3:.2f}")
    # Loose on purpose: a loaded CI box must pass; the design target is < 4 ms.
    assert median_ms < 30


def _vp8_bitrate(frames: list[np.ndarray], width: int, height: int, bit_rate: int) -> float:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.bit_rate = bit_rate
    codec.time_base = Fraction(1, 30)
    codec.framerate = Fraction(30)
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    total = 0
    for pts, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        frame.pts = pts
        total += sum(packet.size for packet in codec.encode(frame))
    total += sum(packet.size for packet in codec.encode(None))
    return total * 8 / (len(frames) / 30)


def test_pattern_reaches_vp8_target_bitrate() -> None:
    """Flat synthetic video undershoots badly; the grain must make the encoder work."""
    pattern = TestPattern(1280, 720, 30)
    frames = [
        cv2.resize(pattern.read(), (640, 360), interpolation=cv2.INTER_AREA) for _ in range(60)
    ]
    target = 800_000
    achieved = _vp8_bitrate(frames, 640, 360, target)
    print(f"VP8 640x360 @ {target // 1000}k: {achieved / 1000:.0f}k ({achieved / target:.0%})")
    assert achieved >= 0.5 * target


# --- file source --------------------------------------------------------------------------

CLIP_FRAMES = 30  # 2 s at 15 fps


def _write_clip(path: Path) -> None:
    """A 320x240 clip whose frame N has brightness 8*N, so a loop is visible in the pixels."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=15)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for n in range(CLIP_FRAMES):
            image = np.full((240, 320, 3), 8 * n, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_file_source_loops_forever(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    _write_clip(clip)
    opened = open_source(f"file:{clip}", **RUNG)  # type: ignore[arg-type]
    assert isinstance(opened, FileSource)
    opened.close()
    # The source plays at the file's speed: a clock that moves one frame period (1/15 s)
    # per read gets the next frame each time.
    now = [0.0]
    source = FileSource(clip, clock=lambda: now[0])
    try:
        frames = []
        for n in range(2 * CLIP_FRAMES + 10):
            now[0] = n / 15
            frames.append(source.read())
    finally:
        source.close()
    for frame in frames:
        _assert_frame(frame, 240, 320)
    means = [float(frame.mean()) for frame in frames]
    # Brightness climbs through the clip, then starts over at the first frame.
    assert means[CLIP_FRAMES - 1] > means[0] + 100
    assert means[CLIP_FRAMES] == pytest.approx(means[0], abs=4)
    assert means[2 * CLIP_FRAMES + 5] == pytest.approx(means[5], abs=4)


def test_file_source_close_is_idempotent(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    _write_clip(clip)
    source = FileSource(clip)
    source.close()
    source.close()
    with pytest.raises(SourceError, match="after close"):
        source.read()


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    message = _source_error(f"file:{missing}")
    assert message == f"file {missing}: no such file"


def test_text_file_renamed_mp4(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video\n" * 50)
    message = _source_error(f"file:{fake}")
    assert message.startswith(f"file {fake}: not a media file (")


def test_audio_only_file(tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    with av.open(str(wav), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        samples = np.zeros((1, 800), np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert _source_error(f"file:{wav}") == f"file {wav}: has no video stream"


def test_file_spec_without_path() -> None:
    assert "needs a path" in _source_error("file:")


# --- factory / camera ---------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["bogus", "", "test:1", "file", "webcam:0"])
def test_unknown_spec_names_the_valid_forms(spec: str) -> None:
    message = _source_error(spec)
    assert "unknown source" in message
    for form in ("test", "camera:INDEX", "screen:INDEX", "file:PATH"):
        assert form in message


@pytest.mark.parametrize("spec", ["camera:x", "camera:-1", "screen:two"])
def test_bad_index(spec: str) -> None:
    assert "INDEX must be a non-negative integer" in _source_error(spec)


def test_missing_camera() -> None:
    # No capture device on the test machines; index 7 is unlikely to exist anywhere.
    message = _source_error("camera:7")
    assert message.startswith("camera 7: cannot open")
    assert "/dev/video7" in message or "missing" in message
