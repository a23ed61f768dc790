"""The pacer: slices of at most SLICE_S, per-viewer order kept, a hopeless backlog dropped."""

from __future__ import annotations

import asyncio
from collections import deque

from broadcaster.server import pacer as pacer_module
from broadcaster.server.pacer import MAX_BACKLOG_INSTANTS, SLICE_S, Pacer
from broadcaster.server.rtp_stream import SharedFrame


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self, clock: FakeClock, cost: float) -> None:
        self.clock = clock
        self.cost = cost
        self.got: list[int] = []
        self.drops = 0

    def send_frame(self, frame: SharedFrame, ntp: int) -> int:
        self.clock.now += self.cost  # sending takes time
        self.got.append(frame.pts)
        return 100

    def dropped(self, frames: int) -> None:
        self.drops += frames


def frame(pts: int) -> SharedFrame:
    return SharedFrame(rung=0, pts=pts, keyframe=False, bodies=(b"x",), size=1)


def test_a_slice_stops_at_its_budget_and_the_next_goes_on_in_order() -> None:
    clock = FakeClock()
    pacer = Pacer(clock)
    sinks = [Sink(clock, cost=SLICE_S / 4) for _ in range(10)]
    pacer._instants.append(deque((s, frame(1)) for s in sinks))
    pacer._instants.append(deque((s, frame(2)) for s in sinks))
    slices = 0
    while True:
        slices += 1
        more = pacer.run_slice()
        if not more:
            break
    assert slices == 5  # 20 sends of a quarter slice each
    assert all(s.got == [1, 2] for s in sinks)  # every viewer: frame 1 before frame 2
    assert pacer.bytes_sent == 2000 and pacer.pending == 0


def test_a_failing_viewer_does_not_stop_the_others(caplog) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    pacer = Pacer(clock)

    class Broken(Sink):
        def send_frame(self, frame: SharedFrame, ntp: int) -> int:
            raise RuntimeError("boom")

    good = Sink(clock, 0.0)
    pacer._instants.append(deque([(Broken(clock, 0), frame(1)), (good, frame(1))]))
    assert not pacer.run_slice()
    assert good.got == [1]
    assert "sending to a viewer failed" in caplog.text


async def test_submit_sends_without_blocking_the_loop_for_long() -> None:
    clock = FakeClock()
    pacer = Pacer(clock)
    sinks = [Sink(clock, cost=SLICE_S / 2) for _ in range(6)]
    pacer.submit([(s, frame(1)) for s in sinks])
    # Nothing is sent inside submit(): the pacer's task does it, a slice at a time.
    assert all(s.got == [] for s in sinks)
    for _ in range(20):
        await asyncio.sleep(0)
    assert all(s.got == [1] for s in sinks)
    assert pacer.slices >= 3
    await pacer.close()


def test_backlog_beyond_the_limit_is_dropped_and_viewers_restart(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    pacer = Pacer(clock)
    sink = Sink(clock, 0.0)
    # The pacer's task never gets to run in between: sending fell behind.
    monkeypatch.setattr(pacer_module.asyncio, "ensure_future", lambda coro: coro.close())
    for pts in range(MAX_BACKLOG_INSTANTS + 1):
        pacer.submit([(sink, frame(pts))])
    assert sink.drops == MAX_BACKLOG_INSTANTS and pacer.backlog_drops == 1
    assert pacer.pending == 1  # only the newest instant is left
    assert not pacer.run_slice() and sink.got == [MAX_BACKLOG_INSTANTS]
