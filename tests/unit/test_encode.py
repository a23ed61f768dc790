"""Ladder scaling, the shared pts clock and keyframe scheduling."""

from __future__ import annotations

import numpy as np
import pytest

from broadcaster.bus.packet import CLOCK_RATE
from broadcaster.config import DEFAULT_LADDER, Rung
from broadcaster.encode.clock import PtsClock
from broadcaster.encode.encoder import RungEncoder
from broadcaster.encode.keyframes import KeyframeScheduler
from broadcaster.encode.ladder import LadderScaler, fit


def test_scaler_gives_every_rung_its_size() -> None:
    scaler = LadderScaler(DEFAULT_LADDER)
    image = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    frames = scaler.scale(image)
    assert [(f.width, f.height) for f in frames] == [(1280, 720), (640, 360), (320, 180)]
    assert all(f.format.name == "yuv420p" for f in frames)


def test_scaler_subset_in_order() -> None:
    scaler = LadderScaler(DEFAULT_LADDER)
    image = np.zeros((720, 1280, 3), dtype=np.uint8)
    frames = scaler.scale(image, [2, 0])
    assert [(f.width, f.height) for f in frames] == [(320, 180), (1280, 720)]


def test_scaler_keeps_colour() -> None:
    # A pure-red picture must still be red (in YUV) at every rung.
    scaler = LadderScaler(DEFAULT_LADDER)
    image = np.zeros((720, 1280, 3), dtype=np.uint8)
    image[:, :, 2] = 255
    for frame in scaler.scale(image):
        rgb = frame.to_ndarray(format="rgb24")
        assert rgb[..., 0].mean() > 200 and rgb[..., 1].mean() < 60


def test_fit_letterboxes_other_aspect() -> None:
    tall = np.full((400, 300, 3), 255, dtype=np.uint8)
    out = fit(tall, 1280, 720)
    assert out.shape == (720, 1280, 3)
    assert out[:, :100].max() == 0  # black bars left and right
    assert out[:, 600:680].min() == 255


def test_pts_clock_is_90khz_and_strictly_increasing() -> None:
    clock = PtsClock(origin=100.0)
    assert clock.pts(100.0) == 0
    assert clock.pts(101.0) == CLOCK_RATE
    # The same instant asked twice (or a clock going backwards) still moves forward.
    assert clock.pts(101.0) == CLOCK_RATE + 1
    assert clock.pts(100.5) == CLOCK_RATE + 2


def test_all_rungs_share_the_pts_of_an_instant() -> None:
    """Encoders stamp exactly the pts they are given: the capture loop gives all the same."""
    clock = PtsClock(origin=0.0)
    scaler = LadderScaler(DEFAULT_LADDER)
    encoders = [RungEncoder(r, "vp8") for r in DEFAULT_LADDER]
    image = np.random.default_rng(2).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    for n in range(3):
        pts = clock.pts(n / 30)
        frames = scaler.scale(image)
        for enc, frame in zip(encoders, frames, strict=True):
            enc.encode(frame, pts, keyframe=n == 0)
            assert frame.pts == pts
    for e in encoders:
        e.close()


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_forced_keyframes(codec: str) -> None:
    rung = Rung("s", 320, 180, 30, 250)
    enc = RungEncoder(rung, codec)
    image = np.random.default_rng(3).integers(0, 255, (180, 320, 3), dtype=np.uint8)
    frame = LadderScaler((rung,)).scale(image)[0]
    keys = []
    for n in range(6):
        out = enc.encode(frame, n * 3000, keyframe=n in (0, 4))
        keys.extend(k for k, _ in out)
    assert keys == [True, False, False, False, True, False]


# ---- keyframe scheduling: a table of (time, requested?, expect keyframe?)
SCHEDULE = [
    (0.00, False, True),  # the first frame is always a keyframe
    (0.10, True, False),  # request inside the 0.5 s throttle: deferred...
    (0.40, False, False),
    (0.50, False, True),  # ...to the window's end, not dropped
    (0.60, True, False),
    (0.70, True, False),  # duplicate requests collapse into one
    (1.00, False, True),
    (1.10, False, False),
    (2.99, False, False),
    (3.00, False, True),  # periodic: 2 s after the last keyframe
]


def test_keyframe_schedule_table() -> None:
    sched = KeyframeScheduler(interval=2.0, min_gap=0.5)
    for now, requested, expect in SCHEDULE:
        if requested:
            sched.request()
        assert sched.due(now) is expect, now


def test_keyframe_throttle_at_most_one_per_gap_under_flood() -> None:
    sched = KeyframeScheduler(interval=10.0, min_gap=0.5)
    fired = []
    for i in range(300):  # 10 s at 30 fps, a request every frame
        now = i / 30
        sched.request()
        if sched.due(now):
            fired.append(now)
    gaps = [b - a for a, b in zip(fired, fired[1:], strict=False)]
    assert min(gaps) >= 0.5 - 1e-9
    assert 18 <= len(fired) <= 21
