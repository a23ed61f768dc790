"""The ABR policy, driven by tables of synthetic snapshots (no network, no clock)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from broadcaster.config import AbrConfig
from broadcaster.server.abr import AbrState, Decision, decide
from broadcaster.server.feedback import Snapshot

CFG = AbrConfig()
LADDER = [2_500_000, 800_000, 250_000]  # 720p, 360p, 180p
TICK = 0.25
TOP, MID, LOW = 0, 1, 2


def snap(
    t: float,
    remb: float | None = 3_500_000,
    loss: float | None = 0.0,
    *,
    sent: float = 2_500_000,
    rtt: float | None = 20.0,
    probe: float = 0.0,
    rtx: float = 0.0,
) -> Snapshot:
    return Snapshot(
        t=t,
        remb_bps=remb,
        loss=loss,
        expected=60,
        reports=1,
        jitter_ms=5.0,
        rtt_ms=rtt,
        nack_per_s=0.0,
        pli=0,
        sent_bps=sent,
        probe_bps=probe,
        rtx_bps=rtx,
    )


class Browser:
    """(REMB, loss) a browser would report: a crude model of its delay-based estimator,
    shaped after what Chromium did here. Over the cap the queue overflows (loss) and the
    estimate drops to 0.85x what arrives; otherwise it ramps up ~8 %/s, never above 1.5x
    what arrives, and never falls on its own when the rate drops.
    """

    def __init__(self) -> None:
        self.remb: float | None = None
        self.draining = 0  # ticks the overflowed bottleneck queue still drops packets

    def step(self, offered: float, cap: float | None, random_loss: float) -> tuple[float, float]:
        if cap is not None and offered > cap:
            self.remb = 0.85 * cap
            self.draining = 2
            return self.remb, max(1 - cap / offered, random_loss)
        if self.draining:
            self.draining -= 1
            assert self.remb is not None
            return self.remb, max(0.3, random_loss)
        received = offered * (1 - random_loss)
        if self.remb is None:
            self.remb = 0.9 * received
        elif self.remb < 1.5 * received:
            self.remb = min(self.remb * 1.08**TICK, 1.5 * received)
        return self.remb, random_loss


class Run:
    """Feeds the policy tick by tick, the way the controller does, and records decisions."""

    def __init__(self, aim: int = TOP, joined: float = 0.0, cfg: AbrConfig = CFG) -> None:
        self.aim = aim
        self.cfg = cfg
        self.state = AbrState(joined=joined)
        self.history: list[Snapshot] = []
        self.t = 0.0
        self.decisions: list[tuple[float, Decision]] = []
        self.browser = Browser()

    def run(
        self,
        seconds: float,
        cap: float | None = None,
        random_loss: float = 0.0,
        **override: float | None,
    ) -> Run:
        """Run over a link with capacity ``cap``; ``override`` forces snapshot fields."""
        for _ in range(round(seconds / TICK)):
            self.t = round(self.t + TICK, 6)
            sent = LADDER[self.aim]
            last = self.decisions[-1][1] if self.decisions else None
            probe = last.probe_bps if last else 0.0
            remb, loss = self.browser.step(sent * CFG.overhead + probe, cap, random_loss)
            fields = {"sent": sent, "probe": probe, "remb": remb, "loss": loss, **override}
            self.history.append(snap(self.t, **fields))  # type: ignore[arg-type]
            self.history = self.history[-40:]
            decision, self.state = decide(
                self.history, LADDER, self.aim, self.state, self.t, self.cfg
            )
            self.decisions.append((self.t, decision))
            self.aim = decision.target
        return self

    def switches(self, after: float = -math.inf) -> list[tuple[float, int, str]]:
        out = []
        prev = None
        for t, d in self.decisions:
            if prev is not None and d.target != prev and t > after:
                out.append((t, d.target, d.reason))
            prev = d.target
        return out

    def reasons(self) -> set[str]:
        return {d.reason for _, d in self.decisions}


# ------------------------------------------------------------------ down rules

QUIET, LOSSY = CFG.down_hold_quiet, CFG.down_hold
DOWN_TABLE = [
    # (label, link during the change, expected rung, reason, reacts within seconds)
    ("remb alone fits middle", {"remb": 1_100_000}, MID, "remb", QUIET),
    ("remb alone fits low only", {"remb": 400_000}, LOW, "remb", QUIET),
    ("remb below everything", {"remb": 150_000}, LOW, "remb", QUIET),
    ("remb with random loss is slow", {"remb": 1_100_000, "loss": 0.06}, MID, "remb", QUIET),
    ("remb backed by rtt", {"remb": 1_100_000, "rtt": 120.0}, MID, "remb", LOSSY),
    ("heavy loss", {"loss": 0.7}, LOW, "loss", CFG.loss_hold),
    ("loss at 15 % steps down", {"loss": 0.15}, MID, "loss", CFG.loss_hold),
    ("random 5 % loss holds", {"loss": 0.05}, TOP, None, 0),
    ("rtt queue building", {"rtt": 500.0}, MID, "rtt", LOSSY),
    ("healthy link holds", {}, TOP, None, 0),
]


@pytest.mark.parametrize(
    ("label", "link", "rung", "reason", "within"), DOWN_TABLE, ids=[r[0] for r in DOWN_TABLE]
)
def test_down_rules(
    label: str, link: dict[str, float], rung: int, reason: str | None, within: float
) -> None:
    run = Run().run(5.0)  # settle on a good link past the startup grace
    assert run.aim == TOP and run.switches() == []
    start = run.t
    run.run(CFG.down_hold_quiet + 1.0, **link)
    if reason is None:
        assert run.switches() == []
    else:
        first = run.switches()[0]
        assert first[1:] == (rung, reason)
        # Reacts within its hold time plus a tick or two, straight to the rung that fits.
        assert first[0] - start <= within + 2 * TICK
        if reason == "remb":
            assert len(run.switches()) == 1


def test_a_single_dip_does_not_move() -> None:
    run = Run().run(5.0)
    run.run(1.5, remb=500_000)  # shorter than down_hold_quiet, and no loss
    run.run(5.0)
    assert run.switches() == []


def test_nothing_moves_during_startup_grace() -> None:
    # Browsers start their estimate low, and the first keyframe of a new viewer is a
    # burst that a small bottleneck queue drops in part: neither is the link's capacity.
    run = Run().run(CFG.startup_grace - 0.25, remb=300_000, loss=0.6)
    assert run.switches() == []
    run.run(1.5, remb=300_000, loss=0.6)
    assert run.switches() and run.aim == LOW


def test_no_second_down_while_settling_unless_much_worse() -> None:
    run = Run().run(5.0)
    run.run(1.0, remb=1_000_000, rtt=120.0)  # a queue filling: the quick down_hold applies
    assert run.aim == MID
    # Just under the middle rung's need during down_settle: hold...
    run.run(1.0, remb=550_000, rtt=120.0)
    assert run.aim == MID
    # ...but a collapse still moves at once.
    run.run(1.0, remb=200_000, rtt=120.0)
    assert run.aim == LOW


def test_lowest_rung_never_goes_further() -> None:
    run = Run(aim=LOW).run(5.0, remb=50_000, loss=0.4)
    assert run.aim == LOW and run.switches() == []


# ------------------------------------------------------------------ up: probing


def test_no_probe_without_headroom_conditions() -> None:
    run = Run(aim=MID).run(10.0, random_loss=0.05)  # loss above loss_clean
    assert "probing" not in run.reasons()


def test_probe_ramps_to_the_top_and_switches_once() -> None:
    run = Run(aim=LOW).run(20.0)
    ups = run.switches()
    assert ups and ups[0][1:] == (TOP, "probe")  # proved all the way: one switch, to the top
    probes = [d.probe_bps for _, d in run.decisions if d.reason == "probing"]
    need = [r * CFG.overhead for r in LADDER]
    # A geometric ramp: the total grows by probe_growth per second, up to the top's need.
    totals = [need[LOW] + p for p in probes]
    step = CFG.probe_growth**TICK
    assert totals[0] == pytest.approx(need[LOW] * step)
    for a, b in zip(totals, totals[1:], strict=False):
        assert b == pytest.approx(min(a * step, need[TOP]))
    assert totals[-1] == pytest.approx(need[TOP])
    # It held the top's rate for probe_hold before switching.
    held = sum(TICK for t in totals if t == pytest.approx(need[TOP]))
    assert held >= CFG.probe_hold
    # No probe traffic once on the top rung.
    assert all(d.probe_bps == 0 for t, d in run.decisions if t > ups[0][0])


def test_failed_probe_backs_off_and_does_not_switch() -> None:
    run = Run(aim=MID, joined=-100).run(2.0, cap=1_200_000)
    probe_started = [t for t, d in run.decisions if d.reason == "probing"][0]
    # The probe overflows the 1.2 Mbit/s link: loss and a falling estimate.
    assert "probe-failed" in run.reasons()
    assert run.aim == MID
    assert run.state.backoff_until >= probe_started + CFG.probe_backoff
    run.run(60.0, cap=1_200_000)  # every later probe fails too...
    assert run.switches() == []
    starts = [
        t
        for t, d in run.decisions
        if d.reason == "probing"
        and (run.decisions[run.decisions.index((t, d)) - 1][1].reason != "probing")
    ]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # ...and they come ever less often, up to the cap on back-off.
    # (gap = back-off + the ramp until it fails, well under 2 s here)
    assert gaps == sorted(gaps) and max(gaps) <= CFG.probe_backoff_max + 2.0
    assert max(gaps) >= CFG.probe_backoff_max


def test_partial_probe_takes_the_rung_it_proved() -> None:
    cfg = replace(CFG, up_after_down=1.0)
    run = Run(aim=LOW, joined=-100, cfg=cfg).run(0.25, cap=1_500_000)
    assert run.decisions[-1][1].reason == "probing"
    run.run(5.0, cap=1_500_000)  # the ramp covers 360p for long enough, then overflows
    assert run.aim == MID and run.switches()[-1][2] == "probe"


def test_loss_during_probe_fails_it() -> None:
    run = Run(aim=MID, joined=-100).run(0.25)
    run.run(0.5, random_loss=0.08)
    assert "probe-failed" in run.reasons() and run.aim == MID


def test_no_up_soon_after_down() -> None:
    run = Run().run(5.0)
    run.run(CFG.down_hold_quiet + 0.5, remb=1_000_000)
    down_at = run.switches()[0][0]
    run.run(20.0, cap=None)  # the link is fine again
    ups = [s for s in run.switches() if s[1] < MID]
    assert ups and ups[0][0] - down_at >= CFG.up_after_down


# ------------------------------------------------------------------ whole scenarios


def test_cap_then_lift_timeline() -> None:
    """Steady, then 1.2 Mbit/s, then 300 kbit/s, then free: one switch per change."""
    run = Run().run(10.0)
    t0 = run.t
    run.run(20.0, cap=1_200_000)
    t1 = run.t
    run.run(20.0, cap=300_000)
    t2 = run.t
    run.run(20.0)
    assert [s[1] for s in run.switches()] == [MID, LOW, TOP]
    assert [s[1] for s in run.switches(after=t0) if s[0] <= t1] == [MID]
    assert [s[1] for s in run.switches(after=t1) if s[0] <= t2] == [LOW]
    up = [s for s in run.switches(after=t2)]
    assert up[0][1] == TOP and up[0][0] - t2 < 15


def test_sawtooth_one_switch_per_change() -> None:
    run = Run().run(5.0)
    for _ in range(3):
        start = run.t
        run.run(20.0, cap=600_000)
        assert len(run.switches(after=start)) == 1 and run.aim == LOW
        start = run.t
        run.run(20.0, cap=3_000_000)
        assert len(run.switches(after=start)) == 1 and run.aim == TOP


def test_random_loss_does_not_oscillate() -> None:
    run = Run()
    for i in range(240):  # 60 s, loss hovering around 5 %
        run.run(0.25, random_loss=0.02 + 0.06 * ((i * 7) % 10) / 10)
    assert len(run.switches()) <= 2


def test_one_heavy_report_among_light_ones_is_noise() -> None:
    run = Run().run(5.0)
    for i in range(40):
        run.run(0.25, loss=0.14 if i % 2 else 0.02)
    assert run.switches() == []


def test_loss_caused_by_a_failed_probe_does_not_move_down() -> None:
    """A probe overflows a 1.2 Mbit/s link; the loss it causes is its own, not the rung's."""
    run = Run(aim=MID, joined=-100).run(30.0, cap=1_200_000)
    assert "probe-failed" in run.reasons()
    assert run.switches() == []


def test_no_second_step_while_the_old_rung_drains() -> None:
    """After a down-switch little is sent (old rung stopped, keyframe pending) while the
    queue still drops: that is not a sign the new rung won't fit."""
    run = Run().run(5.0)
    run.run(0.25, loss=0.55)  # 2.75 Mbit/s into a 1.2 Mbit/s link
    assert run.switches()[-1][1] == MID
    run.run(0.75, loss=0.55, sent=20_000)  # draining: almost nothing sent, still lossy
    assert run.aim == MID and len(run.switches()) == 1


def test_retransmissions_count_in_what_was_offered() -> None:
    """2.75 Mbit/s of media plus 1.1 of NACK answers into a 1.2 Mbit/s link loses 69 %:
    the link still carries the middle rung, which media-only arithmetic would miss."""
    run = Run().run(5.0)
    run.run(1.0, loss=0.69, rtx=1_100_000)
    assert run.switches()[0][1:] == (MID, "loss")
    run2 = Run().run(5.0)
    run2.run(1.0, loss=0.69)
    assert run2.switches()[0][1:] == (LOW, "loss")


def test_probe_stops_when_the_queue_builds_before_any_loss() -> None:
    run = Run(aim=MID, joined=-100).run(0.5, rtt=10.0)
    assert run.decisions[-1][1].reason == "probing"
    run.run(0.5, rtt=90.0)  # 80 ms of queue: no loss yet, but the ramp must stop
    assert "probe-failed" in run.reasons() and run.aim == MID
    assert run.decisions[-1][1].probe_bps == 0
