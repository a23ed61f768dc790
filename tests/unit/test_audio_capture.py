"""Audio in the capture process: sync marks, the tone, a real FFmpeg input device, the
pipeline that cuts, stamps and encodes (real libopus, decoded back here)."""

from __future__ import annotations

import time

import av
import numpy as np
import pytest

from broadcaster.bus.packet import AudioFrame, CaptureMessage
from broadcaster.capture.audio import (
    AudioPipeline,
    AudioPump,
    DeviceSource,
    OpusEncoder,
    ToneSource,
    resolve_kind,
)
from broadcaster.capture.pcm import FRAME_SAMPLES, SAMPLE_RATE, Pcm
from broadcaster.capture.sources import SourceError
from broadcaster.capture.syncmarks import MARK_SAMPLES, SyncMarks, draw_flash, sample_of
from broadcaster.config import AudioConfig

PERIOD = 3000  # 30 fps in 90 kHz


def frames(start_s: float, end_s: float, period: int = PERIOD) -> list[int]:
    first = round(start_s * 90_000)
    return list(range(first, round(end_s * 90_000), period))


def test_flash_starts_at_the_first_frame_of_each_second_and_lasts_100_ms() -> None:
    marks = SyncMarks(PERIOD)
    flashing = [pts for pts in frames(0.95, 2.2, PERIOD) if marks.on_frame(pts)]
    # 30 fps from 0.95 s: frames at ..., 0.9833, 1.0167, ...: 1.0167 s starts the mark.
    first = next(p for p in frames(0.95, 2.2) if p >= 90_000)
    second = next(p for p in frames(0.95, 2.2) if p >= 180_000)
    expected = [p for p in frames(0.95, 2.2) if 0 <= p - first < 9000 or 0 <= p - second < 9000]
    assert flashing == expected
    assert len(flashing) == 6  # 3 frames of 33 ms each time


def test_beep_covers_exactly_the_marks_samples() -> None:
    marks = SyncMarks(PERIOD)
    for pts in frames(0.95, 1.1):
        marks.on_frame(pts)
    start = sample_of(next(p for p in frames(0.95, 1.1) if p >= 90_000))
    mask = marks.beeping(start - 100, MARK_SAMPLES + 200)
    assert not mask[:100].any()
    assert mask[100 : 100 + MARK_SAMPLES].all()
    assert not mask[100 + MARK_SAMPLES :].any()


def test_beep_is_known_before_the_frame_that_starts_it() -> None:
    # The tone runs ahead of the pictures: frames every period let it predict the start.
    marks = SyncMarks(PERIOD)
    for pts in frames(0.90, 0.99):
        marks.on_frame(pts)
    predicted = next(p for p in frames(0.90, 1.1) if p >= 90_000)
    mask = marks.beeping(sample_of(predicted) - 10, 20)
    assert mask.tolist() == [False] * 10 + [True] * 10
    assert marks.on_frame(predicted)  # and the frame then flashes as foretold


def test_flash_square_is_white_in_a_mark_and_black_otherwise() -> None:
    image = np.full((180, 320, 3), 128, np.uint8)
    draw_flash(image, True)
    assert image[-1, -1].tolist() == [255, 255, 255] and image[-30, -30].tolist() == [255] * 3
    assert image[0, 0].tolist() == [128, 128, 128]
    draw_flash(image, False)
    assert image[-1, -1].tolist() == [0, 0, 0]


class Sink:
    def __init__(self) -> None:
        self.frames: list[AudioFrame] = []

    def __call__(self, msg: CaptureMessage) -> bool:
        assert isinstance(msg, AudioFrame)
        self.frames.append(msg)
        return True


def decode(frames: list[AudioFrame], channels: int = 1) -> np.ndarray:
    codec = av.CodecContext.create("libopus", "r")
    codec.sample_rate = SAMPLE_RATE
    codec.layout = "mono" if channels == 1 else "stereo"
    out = []
    for f in frames:
        packet = av.Packet(f.data)
        packet.pts = f.pts
        for decoded in codec.decode(packet):
            out.append(decoded.to_ndarray().reshape(-1, channels)[:, 0])
    return np.concatenate(out)


def test_tone_through_opus_beeps_at_the_marks_on_the_capture_clock() -> None:
    origin = 1000.0
    marks = SyncMarks(PERIOD)
    tone = ToneSource(marks, origin, channels=1)
    sink = Sink()
    pipeline = AudioPipeline(lambda: tone, OpusEncoder(1, 64), sink, origin)
    # Simulated time: a frame every 33.3 ms, the pump every 20 ms, for 3.2 s.
    video = iter(frames(0.0, 3.3))
    next_pts = next(video)
    for step in range(0, 3200, 5):
        now = origin + step / 1000
        while next_pts / 90_000 <= step / 1000:
            marks.on_frame(next_pts)
            next_pts = next(video)
        if step % 20 == 0:
            pipeline.pump(now)
    pts = [f.pts for f in sink.frames]
    assert len(pts) > 150 and set(np.diff(pts)) == {FRAME_SAMPLES}
    pcm = decode(sink.frames)
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 4000)
    gaps = zip(loud[:-1], loud[1:], strict=True)
    onsets = [int(loud[0])] + [int(b) for a, b in gaps if b - a > 4800]
    onset_samples = [pts[0] + o for o in onsets]
    expected = [sample_of(p) for p in frames(0.0, 3.3) if p % 90_000 < PERIOD][1:]
    # Decoded beeps start on the mark's sample: within a couple of samples of codec delay.
    for got, want in zip(onset_samples[-3:], expected[-3:], strict=True):
        assert abs(got - want) <= 24, (onset_samples, expected)


def test_stereo_frames_decode_to_two_identical_channels() -> None:
    origin = 0.0
    marks = SyncMarks(PERIOD)
    marks.on_frame(0)
    tone = ToneSource(marks, origin, channels=2)
    sink = Sink()
    pipeline = AudioPipeline(lambda: tone, OpusEncoder(2, 96), sink, origin)
    for ms in range(1, 400, 20):
        pipeline.pump(origin + ms / 1000)
    assert len(sink.frames) >= 15
    assert resolve_kind(AudioConfig(channels=2), "test") == "tone"


class Drifting:
    """A device whose clock runs 1 % fast: 48480 samples per second of capture clock."""

    channels = 1

    def __init__(self) -> None:
        self.failed = False

    def pull(self, now: float) -> Pcm | None:
        if self.failed:
            raise SourceError("device gone")
        return np.zeros((int(0.020 * SAMPLE_RATE * 1.01), 1), np.int16)


def test_drifting_device_is_reanchored_and_a_failed_one_goes_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = Drifting()
    sink = Sink()
    pipeline = AudioPipeline(lambda: device, OpusEncoder(1, 32), sink, 0.0)
    for i in range(1, 2001):  # 40 s: 1 % is 400 ms, past the 200 ms limit twice
        pipeline.pump(i * 0.020)
    pts = np.array([f.pts for f in sink.frames])
    # Mostly 20 ms apart; a couple of jumps back onto the clock; never far off it.
    jumps = np.flatnonzero(np.diff(pts) != FRAME_SAMPLES)
    assert 1 <= len(jumps) <= 4, jumps
    assert abs(int(pts[-1]) - 40 * SAMPLE_RATE) < 0.25 * SAMPLE_RATE
    before = len(sink.frames)
    device.failed = True
    pipeline.pump(40.02)
    pipeline.pump(40.04)
    assert len(sink.frames) == before
    assert sum("audio source failed" in r.message for r in caplog.records) == 1


def test_pump_thread_paces_the_pipeline_and_stops() -> None:
    origin = time.monotonic()
    marks = SyncMarks(PERIOD)
    tone = ToneSource(marks, origin, channels=1)
    sink = Sink()
    pump = AudioPump(AudioPipeline(lambda: tone, OpusEncoder(1, 64), sink, origin), origin)
    pump.start()
    time.sleep(0.5)
    pump.close()
    count = len(sink.frames)
    assert 18 <= count <= 27, count  # 25 frames in 0.5 s, give or take a loaded machine
    time.sleep(0.1)
    assert len(sink.frames) == count


def test_ffmpeg_input_device_delivers_realtime_pcm() -> None:
    device = DeviceSource("lavfi", "sine=frequency=440:sample_rate=44100,arealtime", 1)
    try:
        time.sleep(0.6)
        pcm = device.pull(time.monotonic())
        assert pcm is not None and pcm.dtype == np.int16 and pcm.shape[1] == 1
        # Resampled to 48 kHz, at the pace of real time: ~0.6 s worth.
        assert 0.4 * SAMPLE_RATE < len(pcm) < 0.9 * SAMPLE_RATE, len(pcm)
        x = pcm[:, 0].astype(np.int32)
        rising = np.count_nonzero((x[:-1] < 0) & (x[1:] >= 0))
        assert abs(rising / (len(pcm) / SAMPLE_RATE) - 440) < 15
    finally:
        device.close()
        device.close()


@pytest.mark.parametrize(
    ("fmt", "device", "message"),
    [
        ("lavfi", "no_such_filter=1", "cannot open"),
        ("no-such-format", "default", "cannot open"),
    ],
)
def test_device_that_cannot_open_is_one_clear_line(fmt: str, device: str, message: str) -> None:
    with pytest.raises(SourceError) as info:
        DeviceSource(fmt, device, 1)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert f"{fmt}:{device}" in str(info.value)


@pytest.mark.parametrize(
    ("source", "video", "kind"),
    [
        ("auto", "test", "tone"),
        ("auto", "file:/x.mp4", "file"),
        ("auto", "camera:1", "mic"),
        ("auto", "screen", "none"),
        ("none", "test", "none"),
        ("mic:alsa:hw:1", "test", "mic"),
        ("tone", "camera", "tone"),
    ],
)
def test_auto_audio_follows_the_video_source(source: str, video: str, kind: str) -> None:
    assert resolve_kind(AudioConfig(source=source), video) == kind
