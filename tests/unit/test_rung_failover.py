"""Server side of capture faults: a rung leaves the ladder, the source comes and goes."""

from __future__ import annotations

import pytest
from test_switcher import Requests, instant

from broadcaster.bus.packet import RungFailed, SourceStatus
from broadcaster.config import DEFAULT_LADDER, AbrConfig
from broadcaster.server import metrics
from broadcaster.server.abr_controller import ViewerAbr
from broadcaster.server.broadcast import Broadcast
from broadcaster.server.feedback import FeedbackCollector
from broadcaster.server.live_rungs import LiveLadder, nearest_live
from broadcaster.server.switcher import SwitcherTrack

TOP, MID, LOW = 0, 1, 2

# --- pure choices -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rung", "live", "expected"),
    [
        (1, [True, True, True], 1),  # live: stays
        (1, [True, False, True], 2),  # dead: next lower first
        (0, [False, True, True], 1),
        (2, [True, True, False], 1),  # lowest dead: next higher
        (1, [True, False, False], 0),
        (3, [True, False, False, False, True], 4),  # skips several dead rungs
        (0, [False, False, False], None),  # nothing left
        (5, [True, True], 1),  # beyond the ladder: the nearest rung below it
    ],
)
def test_nearest_live_prefers_lower_then_higher(
    rung: int, live: list[bool], expected: int | None
) -> None:
    assert nearest_live(rung, live) == expected


def test_live_ladder_maps_positions_and_rungs() -> None:
    view = LiveLadder.of([True, False, True])
    assert view.rungs == (0, 2)
    assert view.bitrates([2500, 800, 250]) == [2500, 250]
    assert [view.position(r) for r in (0, 1, 2)] == [0, 1, 1]
    assert [view.rung(p) for p in (0, 1)] == [0, 2]
    with pytest.raises(ValueError):
        LiveLadder.of([False, False]).position(0)


# --- switcher ------------------------------------------------------------------------------


async def test_switcher_on_a_failed_rung_moves_to_the_next_lower_at_its_keyframe() -> None:
    asks = Requests()
    live = [True, True, True]
    s = SwitcherTrack(MID, asks)
    s.bind_ladder(live)
    s.offer(instant(0, {MID}))
    assert s.current == MID
    live[MID] = False
    s.on_rung_failed(MID)
    assert s.target == LOW and asks[-1] == LOW
    f = s.offer(instant(1, {LOW}))
    assert f is not None and f.rung == LOW
    assert s.switches[-1].reason == "rung-failed"


async def test_switcher_headed_for_a_failed_rung_stays_where_it_is() -> None:
    asks = Requests()
    live = [True, True, True]
    s = SwitcherTrack(LOW, asks)
    s.bind_ladder(live)
    s.offer(instant(0, {LOW}))
    s.select(MID, "probe")
    live[MID] = False
    s.on_rung_failed(MID)
    assert s.target == LOW
    assert s.offer(instant(1, {MID})).rung == LOW  # type: ignore[union-attr]


async def test_switcher_never_aims_at_a_dead_rung() -> None:
    s = SwitcherTrack(TOP, Requests())
    s.bind_ladder([False, True, True])  # a late joiner: the top rung is already gone
    assert s.target == MID and s.switches == []
    s.select(TOP, "auto")
    assert s.target == MID


# --- broadcast -----------------------------------------------------------------------------


def _broadcast() -> tuple[Broadcast, Requests]:
    asks = Requests()
    return Broadcast(DEFAULT_LADDER, asks), asks


async def test_broadcast_takes_a_failed_rung_out_and_moves_its_viewers() -> None:
    broadcast, asks = _broadcast()
    on_mid, to_mid, on_top = (
        SwitcherTrack(MID, asks),
        SwitcherTrack(MID, asks),
        SwitcherTrack(0, asks),
    )
    for s in (on_mid, to_mid, on_top):
        broadcast.subscribe(s)
    on_mid.offer(instant(0, {MID}))
    on_top.offer(instant(0, {TOP}))
    broadcast.on_message(RungFailed(MID, "360p encoder failed: EOFError: End of file"))
    assert not broadcast.rung_available(MID)
    assert broadcast.rung_available(TOP) and broadcast.rung_available(LOW)
    assert not broadcast.rung_available(7)
    assert broadcast.available_rung_names() == ["720p", "180p"]
    assert (on_mid.target, to_mid.target, on_top.target) == (LOW, LOW, TOP)
    asks.clear()
    broadcast.request_keyframe(MID)  # a dead rung's encoder is not asked for anything
    assert asks == [] and broadcast.keyframe_requests[MID] == 0
    broadcast.on_message(RungFailed(MID, "again"))  # repeated: no effect
    assert broadcast.rung_errors == {MID: "360p encoder failed: EOFError: End of file"}
    assert broadcast.health_fields()["rungs_down"] == ["360p"]
    text = metrics.render(broadcast, 3)
    assert 'broadcaster_rung_available{rung="720p"} 1' in text
    assert 'broadcaster_rung_available{rung="360p"} 0' in text


def test_broadcast_follows_the_source_state() -> None:
    broadcast, _ = _broadcast()
    assert broadcast.health_fields() == {"source": "live", "rungs_down": [], "audio": "off"}
    broadcast.on_message(SourceStatus("lost", "camera 0: read failed", 0.5))
    broadcast.on_message(SourceStatus("lost", "camera 0: cannot open", 1.0))
    assert broadcast.source_state == "lost" and broadcast.source_retry_in == 1.0
    assert broadcast.health_fields() == {
        "source": "lost",
        "rungs_down": [],
        "source_error": "camera 0: cannot open",
        "audio": "off",
    }
    text = metrics.render(broadcast, 0)
    assert "broadcaster_source_live 0" in text
    assert "broadcaster_source_losses_total 1" in text
    broadcast.on_message(SourceStatus("live"))
    assert broadcast.health_fields()["source"] == "live" and broadcast.source_losses == 1
    assert "broadcaster_source_live 1" in metrics.render(broadcast, 0)


# --- ABR -----------------------------------------------------------------------------------


class NoProbe:
    """A viewer without negotiated RTX: no probe traffic is possible."""

    available = False
    bytes_sent = 0

    async def send(self, budget: int) -> int:
        return 0

    async def measure_rtt(self) -> bool:
        return False


def test_abr_never_chooses_a_dead_rung() -> None:
    """REMB that fits the middle rung but not the top one: with the middle rung dead, the
    policy (fed the live rungs only) goes to the lowest, never to the dead one."""
    broadcast, asks = _broadcast()
    switcher = SwitcherTrack(TOP, asks)
    broadcast.subscribe(switcher)
    switcher.offer(instant(0, {TOP}))
    feedback = FeedbackCollector(ssrc=1, started=0.0)
    ladder_bps = [r.bitrate_bps for r in DEFAULT_LADDER]
    prober = NoProbe()
    abr = ViewerAbr(switcher, prober, feedback, ladder_bps, AbrConfig(), now=0.0)
    broadcast.on_message(RungFailed(MID, "360p encoder failed"))
    targets = []
    t = 0.0
    for remb in [3_500_000] * 16 + [1_100_000] * 40:  # 4 s of a good link, then 10 s capped
        t += 0.25
        feedback.remb_bps = remb
        abr.tick(t)
        targets.append(switcher.target)
    assert MID not in targets
    assert targets[-1] == LOW
    assert abr.last is not None and abr.last.target == LOW


def test_health_says_whether_sound_is_arriving() -> None:
    from broadcaster.bus.packet import AudioFrame

    broadcast = Broadcast(DEFAULT_LADDER, Requests(), audio=True)
    assert broadcast.health_fields()["audio"] == "silent"  # configured, nothing yet
    broadcast.on_message(AudioFrame(960, b"\xfc"))
    assert broadcast.health_fields()["audio"] == "live"
    assert broadcast.audio_frames == 1
    broadcast.last_audio_at = (broadcast.last_audio_at or 0) - 2.0
    assert broadcast.health_fields()["audio"] == "silent"  # e.g. the microphone went away
