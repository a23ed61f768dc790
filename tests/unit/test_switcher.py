"""The switcher: one frame per instant, switch only at the target's keyframe, never raise."""

from __future__ import annotations

import asyncio

import pytest
from aiortc.mediastreams import MediaStreamError

from broadcaster.bus.packet import EncodedFrame
from broadcaster.server.switcher import SwitcherTrack


def instant(pts: int, keyframes: set[int] = frozenset(), rungs: int = 3) -> dict[int, EncodedFrame]:  # type: ignore[assignment]
    return {r: EncodedFrame(r, r in keyframes, pts, bytes([r]) * (10 + r)) for r in range(rungs)}


class Requests(list[int]):
    def __call__(self, rung: int) -> None:
        self.append(rung)


async def test_starts_on_target_keyframe_and_asks_for_one() -> None:
    asks = Requests()
    s = SwitcherTrack(start_rung=0, request_keyframe=asks)
    assert asks == [0]  # a new viewer asks for a keyframe at once
    assert s.offer(instant(0)) is None  # no keyframe yet: nothing to decode from
    sent = s.offer(instant(1, {0}))
    assert sent is not None and sent.rung == 0 and sent.keyframe
    again = s.offer(instant(2))
    assert again is not None and again.pts == 2 and not again.keyframe


async def test_switch_happens_only_at_target_keyframe_one_frame_per_instant() -> None:
    asks = Requests()
    s = SwitcherTrack(0, asks)
    s.offer(instant(0, {0}))
    s.select(2, "pinned")
    assert asks[-1] == 2
    # Rung 2 has no keyframe yet, so the viewer stays on rung 0.
    sent = [s.offer(instant(1)), s.offer(instant(2, {1}))]
    assert [f.rung for f in sent if f] == [0, 0]
    # Rung 2's keyframe arrives together with rung 0's frame: exactly one is handed out.
    f = s.offer(instant(3, {2}))
    assert f is not None and f.rung == 2 and f.keyframe
    assert s.current == 2
    assert s.offer(instant(4)).rung == 2  # type: ignore[union-attr]
    assert s.frames_out == 5
    assert [(sw.from_rung, sw.to_rung, sw.reason) for sw in s.switches] == [
        (None, 0, "start"),
        (0, 2, "pinned"),
    ]


async def test_reselecting_current_rung_cancels_pending_switch() -> None:
    s = SwitcherTrack(0, Requests())
    s.offer(instant(0, {0}))
    s.select(1, "pinned")
    s.select(0, "auto")
    assert s.offer(instant(1, {1})).rung == 0  # type: ignore[union-attr]


async def test_pli_asks_for_keyframe_on_the_rung_being_decoded() -> None:
    asks = Requests()
    s = SwitcherTrack(1, asks)
    s.on_keyframe_request()
    assert asks == [1, 1]
    s.offer(instant(0, {1}))
    s.select(2, "x")
    s.on_keyframe_request()
    assert asks[-1] == 1


async def test_restart_waits_for_a_keyframe_and_asks_for_one() -> None:
    asks = Requests()
    s = SwitcherTrack(0, asks)
    s.offer(instant(0, {0}))
    s.offer(instant(1))
    s.restart(dropped=7)  # e.g. the send backlog was dropped
    assert s.current is None and asks[-1] == 0 and s.dropped == 7
    assert s.offer(instant(2)) is None  # no partial GOP
    assert s.offer(instant(3, {0})) is not None


async def test_stopped_track_takes_nothing_and_ends_aiortc_loop() -> None:
    s = SwitcherTrack(0, Requests())
    s.offer(instant(0, {0}))
    waiting = asyncio.ensure_future(s.recv())  # aiortc's own send loop never gets a frame
    await asyncio.sleep(0.01)
    assert not waiting.done()
    s.stop()
    assert s.offer(instant(1, {0})) is None
    with pytest.raises(MediaStreamError):
        await waiting


async def test_drain_stops_the_old_rung_until_the_target_keyframe() -> None:
    s = SwitcherTrack(0, Requests())
    s.offer(instant(0, {0}))
    s.select(2, "remb", drain=True)
    # Congested: nothing more of rung 0 while rung 2's keyframe is on its way...
    assert s.offer(instant(1)) is None
    assert s.offer(instant(2, {0})) is None
    # ...then rung 2 from its keyframe on.
    f = s.offer(instant(3, {2}))
    assert f is not None and f.rung == 2 and f.keyframe
    assert s.offer(instant(4)).rung == 2  # type: ignore[union-attr]
    assert s.switches[-1].pts == 3


async def test_cancelling_a_drained_switch_resumes_the_current_rung() -> None:
    s = SwitcherTrack(0, Requests())
    s.offer(instant(0, {0}))
    s.select(2, "remb", drain=True)
    assert s.offer(instant(1)) is None
    s.select(0, "auto")
    assert s.offer(instant(2)).rung == 0  # type: ignore[union-attr]
