"""Capture-side faults: back-off, the reconnecting source and its slate, a failing rung."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from media import write_clip

from broadcaster.bus.local import CaptureLink
from broadcaster.bus.packet import (
    CaptureMessage,
    FrameSet,
    RungFailed,
    SourceStatus,
    Stop,
    decode_capture_message,
    encode_server_message,
)
from broadcaster.capture.backoff import Backoff
from broadcaster.capture.faults import (
    ENV_ENCODER_FAULT,
    EncoderFault,
    EncoderFaultHook,
    encoder_fault_from_env,
    parse_encoder_fault,
)
from broadcaster.capture.filesource import FileSource
from broadcaster.capture.process import CaptureLoop, LadderFailed
from broadcaster.capture.reconnect import RETRY_FIRST_S, RETRY_MAX_S, ReconnectingSource
from broadcaster.capture.slate import render_slate, slate_background
from broadcaster.capture.sources import SourceError
from broadcaster.config import Rung, parse_config
from broadcaster.encode.encoder import RungEncoder

SMALL = (320, 180)

# --- back-off -----------------------------------------------------------------------------


def test_backoff_doubles_from_first_to_max_then_stays() -> None:
    b = Backoff(RETRY_FIRST_S, RETRY_MAX_S)
    assert [b.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_backoff_reset_starts_over() -> None:
    b = Backoff(0.5, 5.0)
    b.next_delay(), b.next_delay(), b.next_delay()
    b.reset()
    assert b.next_delay() == 0.5


@pytest.mark.parametrize(("first", "maximum", "factor"), [(0, 5, 2), (2, 1, 2), (1, 5, 0.5)])
def test_backoff_rejects_nonsense(first: float, maximum: float, factor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(first, maximum, factor)


# --- fault hook ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1:60", EncoderFault(1, 60)),
        (" 0:0 ", EncoderFault(0, 0)),
        ("1", None),
        ("a:3", None),
        ("1:x", None),
        ("-1:5", None),
        ("1:-5", None),
    ],
)
def test_parse_encoder_fault(value: str, expected: EncoderFault | None) -> None:
    assert parse_encoder_fault(value) == expected


def test_fault_from_env_is_off_unless_set() -> None:
    assert encoder_fault_from_env({}) is None
    assert encoder_fault_from_env({ENV_ENCODER_FAULT: ""}) is None
    assert encoder_fault_from_env({ENV_ENCODER_FAULT: "2:10"}) == EncoderFault(2, 10)


def _frame(width: int, height: int) -> av.VideoFrame:
    rng = np.random.default_rng(1)
    yuv = rng.integers(0, 255, (height * 3 // 2, width), dtype=np.uint8)
    return av.VideoFrame.from_ndarray(yuv, format="yuv420p")


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_fault_hook_makes_the_real_encoder_raise_after_n_frames(codec: str) -> None:
    encoder = RungEncoder(Rung("180p", *SMALL, 30, 250), codec)
    hook = EncoderFaultHook(EncoderFault(rung=1, after_frames=3))
    for i in range(3):
        hook.before_encode(1, encoder)
        encoder.encode(_frame(*SMALL), i * 3000, i == 0)
    hook.before_encode(0, encoder)  # other rungs are not counted or touched
    hook.before_encode(1, encoder)
    with pytest.raises(av.error.EOFError):
        encoder.encode(_frame(*SMALL), 9000, False)


# --- slate --------------------------------------------------------------------------------


def test_slate_is_the_last_picture_darkened_at_the_top_rung_size() -> None:
    bright = np.full((240, 320, 3), 200, dtype=np.uint8)
    background = slate_background(bright, 1280, 720)
    assert background.shape == (720, 1280, 3) and background.flags.c_contiguous
    assert background[360, 640, 0] == 60  # dimmed to 30 %
    slate = render_slate(background, 3)
    assert slate.shape == background.shape
    assert (slate != background).any(), "the message is drawn"
    assert background[360, 640, 0] == 60, "the background itself is left alone"
    plain = slate_background(None, 640, 360)
    assert plain.shape == (360, 640, 3) and plain.max() < 40


# --- reconnecting source ------------------------------------------------------------------


class Statuses(list[SourceStatus]):
    def __call__(self, status: SourceStatus) -> None:
        self.append(status)


def _read_until(source: ReconnectingSource, now: float, live: bool, limit: float = 5.0) -> float:
    """Read (advancing a fake clock 1/30 s a frame) until the source is (not) live."""
    deadline = time.monotonic() + limit
    while source.live != live:
        assert time.monotonic() < deadline, "timed out"
        frame = source.read(now)
        assert frame.ndim == 3
        now += 1 / 30
        time.sleep(0.002)  # let the reopen thread run
    return now


def test_removed_file_gives_a_slate_retries_with_backoff_and_resumes(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", seconds=0.3, size=SMALL)
    away = tmp_path / "away.mp4"
    statuses = Statuses()
    source = ReconnectingSource(
        FileSource(clip), lambda: FileSource(clip), (640, 360), statuses, Backoff(0.2, 0.8)
    )
    try:
        now = 100.0
        picture = source.read(now)
        assert picture.shape == (SMALL[1], SMALL[0], 3)
        os.rename(clip, away)
        # The open file plays to its end; reopening it for the next loop fails.
        now = _read_until(source, now, live=False)
        assert statuses == [SourceStatus("lost", f"file {clip}: no such file", 0.2)]
        slate = source.read(now)
        assert slate.shape == (360, 640, 3)
        # Still away: every failed attempt waits twice as long, up to the maximum.
        while len(statuses) < 4:
            source.read(now)
            now += 1 / 30
            time.sleep(0.002)
        assert [s.retry_in for s in statuses] == [0.2, 0.4, 0.8, 0.8]
        assert all(s.state == "lost" for s in statuses)
        os.rename(away, clip)
        now = _read_until(source, now, live=True)
        assert statuses[-1] == SourceStatus("live")
        assert source.read(now).shape == (SMALL[1], SMALL[0], 3)
        assert source.losses == 1
    finally:
        source.close()


def test_slate_counter_changes_once_a_second(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", seconds=0.1, size=SMALL)
    source = ReconnectingSource(
        FileSource(clip), lambda: FileSource(clip), (320, 180), Statuses(), Backoff(60, 60)
    )
    try:
        clip.unlink()
        now = _read_until(source, 0.0, live=False)
        first = source.read(now)
        assert source.read(now + 0.5) is first  # same second: not redrawn
        assert not np.array_equal(source.read(now + 1.0), first)
    finally:
        source.close()


# --- a failing rung in the real capture loop ----------------------------------------------

LADDER = [
    {"name": "360p", "width": 640, "height": 360, "fps": 30, "bitrate": 800},
    {"name": "270p", "width": 480, "height": 270, "fps": 30, "bitrate": 500},
    {"name": "180p", "width": 320, "height": 180, "fps": 30, "bitrate": 250},
]


def _run_loop(
    monkeypatch: pytest.MonkeyPatch, fault: str, ladder: list[dict[str, object]], framesets: int
) -> tuple[list[CaptureMessage], BaseException | None]:
    """The real capture loop on the test pattern, in a thread, until ``framesets`` came
    out (or it raised); returns what it published and what it raised."""
    monkeypatch.setenv(ENV_ENCODER_FAULT, fault)
    parent, child = multiprocessing.Pipe(duplex=True)
    loop = CaptureLoop(parse_config({"ladder": ladder}), "test", CaptureLink(child))
    raised: list[BaseException] = []

    def run() -> None:
        try:
            loop.run()
        except BaseException as exc:
            raised.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run)
    thread.start()
    messages: list[CaptureMessage] = []
    try:
        while sum(isinstance(m, FrameSet) for m in messages) < framesets and not raised:
            if parent.poll(0.1):
                messages.append(decode_capture_message(parent.recv_bytes()))
    finally:
        parent.send_bytes(encode_server_message(Stop()))
        thread.join(10)
    assert not thread.is_alive()
    return messages, raised[0] if raised else None


def test_a_source_that_never_opens_still_fails_fast(tmp_path: Path) -> None:
    """Reconnecting is for a source that worked; at startup a bad one is an error."""
    _parent, child = multiprocessing.Pipe(duplex=True)
    config = parse_config({"ladder": LADDER})
    with pytest.raises(SourceError, match="no such file"):
        CaptureLoop(config, f"file:{tmp_path}/none.mp4", CaptureLink(child))


def test_a_failing_rung_leaves_the_ladder_and_the_others_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages, raised = _run_loop(monkeypatch, "1:4", LADDER, framesets=10)
    assert raised is None
    failed = [m for m in messages if isinstance(m, RungFailed)]
    assert len(failed) == 1 and failed[0].rung == 1
    assert "270p encoder failed: EOFError" in failed[0].message
    sets = [m for m in messages if isinstance(m, FrameSet)][:10]
    assert [sorted(f.rung for f in fs.frames) for fs in sets] == [[0, 1, 2]] * 4 + [[0, 2]] * 6


def test_every_rung_failing_is_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    messages, raised = _run_loop(monkeypatch, "0:2", LADDER[:1], framesets=10)
    assert isinstance(raised, LadderFailed) and "every rung" in str(raised)
    assert sum(isinstance(m, FrameSet) for m in messages) == 2
    assert [m.rung for m in messages if isinstance(m, RungFailed)] == [0]
