"""Which rung should this viewer get: a pure function of feedback history and ``now``.

``decide(history, ladder_bps, aim, state, now, cfg) -> (Decision, new state)``. No clock,
no network, no asyncio: the controller (abr_controller.py) feeds it snapshots every tick
and carries out the decision (the switcher moves at the target's next keyframe; the
prober sends the requested probe traffic).

Rules, in order:
1. Down, fast: when the link's capacity estimate (REMB, and delivered rate when loss is
   high) stays below what the aimed rung needs for ``down_hold``, go to the best rung
   that fits, in one step. A queue building (RTT rising) steps down one rung.
2. Up, carefully: REMB cannot show spare capacity (it tops out near 1.5x what is
   received), so an up-switch needs a capacity probe: extra traffic that ramps the total
   up geometrically (``probe_growth`` per second) towards the top rung's rate. A rung is
   proven once the total has covered its need for ``probe_hold`` without loss or a
   falling REMB; the ramp stops at the first such sign (a gentle ramp lets a queue show
   itself before it overflows). The viewer moves to the best rung proven; a probe that
   proves nothing
   backs off. No up-switch within ``up_after_down`` of a down-switch, nor within
   ``up_stable`` of any switch.
All thresholds are named in ``AbrConfig`` (config.toml ``[abr]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..config import AbrConfig
from .feedback import Snapshot

# How far down a reading must fall to move down again during down_settle.
SETTLE_FACTOR = 0.6
# The probe ramp rises in steps of (about) one controller tick.
PROBE_STEP = 0.25
# RTT this far above the lowest seen confirms that a REMB drop is a queue filling.
RTT_CONGESTED_MS = 60.0
# Loss is averaged over this many seconds before deciding whether to probe.
PROBE_CLEAN_WINDOW = 2.0
# Loss while a probe runs, and this long after, is the probe's doing (its traffic is
# still draining from the bottleneck queue), not a reason to move down.
PROBE_DRAIN = 1.0


@dataclass(frozen=True, slots=True)
class Probe:
    started: float
    remb_peak: float | None  # highest REMB since the probe began
    # When the ramp's total first covered each rung's need (rung -> time).
    covered: tuple[tuple[int, float], ...] = ()
    proven: int | None = None


@dataclass(frozen=True, slots=True)
class AbrState:
    joined: float
    last_switch: float = -math.inf
    last_down: float = -math.inf
    probe: Probe | None = None
    backoff_until: float = -math.inf
    failures: int = 0
    min_rtt_ms: float | None = None
    # REMB ramps up slowly (~8 %/s) after the rate it sees rises: until it has caught up
    # with the aimed rung, only a fall from its peak counts as a capacity signal.
    remb_trusted: bool = False
    remb_peak: float | None = None
    probe_ended: float = -math.inf


@dataclass(frozen=True, slots=True)
class Decision:
    target: int
    reason: str
    probe_bps: float = 0.0  # extra traffic to send now (0: none)


def _need(ladder_bps: Sequence[int], rung: int, cfg: AbrConfig) -> float:
    return ladder_bps[rung] * cfg.overhead


def _window(history: Sequence[Snapshot], now: float, span: float) -> list[Snapshot]:
    """Snapshots of the last ``span`` seconds, or [] if history does not cover it yet."""
    if not history or history[0].t > now - span + 1e-9:
        return []
    return [s for s in history if s.t > now - span + 1e-9]


def _remb_counts(s: Snapshot, state: AbrState, cfg: AbrConfig) -> bool:
    if s.remb_bps is None or s.t - state.joined < cfg.startup_grace:
        return False
    if state.remb_trusted:
        return True
    return state.remb_peak is not None and s.remb_bps < state.remb_peak * cfg.probe_remb_drop


def _remb_capacity(s: Snapshot, state: AbrState, cfg: AbrConfig) -> float:
    if s.remb_bps is not None and _remb_counts(s, state, cfg):
        return s.remb_bps / cfg.remb_headroom
    return math.inf


def mean_loss(window: Sequence[Snapshot], min_reports: int = 2) -> float | None:
    """Share of packets lost over a window; None with fewer than ``min_reports`` reports."""
    measured = [s for s in window if s.loss is not None and s.expected > 0]
    if sum(s.reports for s in measured) < min_reports:
        return None
    expected = sum(s.expected for s in measured)
    return sum(s.loss * s.expected for s in measured if s.loss is not None) / expected


def _loss_capacity(window: Sequence[Snapshot], cfg: AbrConfig) -> float:
    """What actually arrives when loss is heavy: the rate sent, less what was lost.

    Heavy means the loss over the whole window (all its reports pooled: Chromium sends
    ~10 small ones a second, each alone is noisy) and in its latest interval. The
    latest interval also sizes the estimate: the window's mean lags a sudden cap.
    """
    loss = mean_loss(window, min_reports=3)
    fresh = [s for s in window if s.loss is not None]
    if loss is None or loss <= cfg.loss_down or not fresh:
        return math.inf
    latest = fresh[-1].loss
    assert latest is not None
    if latest <= cfg.loss_down:
        return math.inf
    # The most we sent in the window: right after a down-switch we send little (the old
    # rung drained, the new one's keyframe pending) while the queue still loses. Answers
    # to NACKs count: over a cap they can add a third to the load, and the loss with them.
    sent = max(s.sent_bps * cfg.overhead + s.probe_bps + s.rtx_bps for s in window)
    return sent * (1 - latest)


def _best_fit(ladder_bps: Sequence[int], capacity: float, cfg: AbrConfig) -> int:
    for rung in range(len(ladder_bps)):
        if _need(ladder_bps, rung, cfg) <= capacity:
            return rung
    return len(ladder_bps) - 1


def _down(
    history: Sequence[Snapshot],
    ladder_bps: Sequence[int],
    aim: int,
    state: AbrState,
    now: float,
    cfg: AbrConfig,
) -> Decision | None:
    if aim == len(ladder_bps) - 1 or now - state.joined < cfg.startup_grace:
        return None
    recent = _window(history, now, cfg.down_hold)
    if not recent:
        return None
    loss = mean_loss(recent, min_reports=1)
    # A REMB drop is acted on quickly only when the link itself confirms congestion:
    # heavy loss (a small queue overflowing) or RTT up (a big one filling). Chromium's
    # estimate also dips under random loss or a CPU hiccup with neither.
    rtt = recent[-1].rtt_ms
    queueing = (
        rtt is not None
        and state.min_rtt_ms is not None
        and rtt - state.min_rtt_ms > RTT_CONGESTED_MS
    )
    lossy = (loss is not None and loss > cfg.loss_down) or queueing
    # Sustained: even the best REMB reading of the window falls short.
    window = recent if lossy else _window(history, now, cfg.down_hold_quiet)
    by_remb = max(_remb_capacity(s, state, cfg) for s in window) if window else math.inf
    loss_window = [
        s for s in _window(history, now, cfg.loss_hold) if s.t > state.probe_ended + PROBE_DRAIN
    ]
    by_loss = math.inf if state.probe is not None else _loss_capacity(loss_window, cfg)
    capacity = min(by_remb, by_loss)
    need = _need(ladder_bps, aim, cfg)
    settling = now - state.last_down < cfg.down_settle
    if capacity < need * (SETTLE_FACTOR if settling else 1.0):
        reason = "loss" if by_loss < by_remb else "remb"
        return Decision(max(aim + 1, _best_fit(ladder_bps, capacity, cfg)), reason)
    if not settling and state.min_rtt_ms is not None:
        rtts = [s.rtt_ms for s in recent]
        if all(r is not None and r - state.min_rtt_ms > cfg.rtt_rise_ms for r in rtts):
            return Decision(aim + 1, "rtt")
    return None


def _ramp_total(
    ladder_bps: Sequence[int], aim: int, probe: Probe, now: float, cfg: AbrConfig
) -> float:
    """Total wire rate the ramp asks for now: the aimed rung's need, grown step by step."""
    steps = math.floor((now - probe.started) / PROBE_STEP + 1e-9) + 1
    growth: float = cfg.probe_growth ** (steps * PROBE_STEP)
    return min(_need(ladder_bps, aim, cfg) * growth, _need(ladder_bps, 0, cfg))


def _probe_failed(
    probe: Probe, history: Sequence[Snapshot], state: AbrState, cfg: AbrConfig
) -> bool:
    during = [s for s in history if s.t > probe.started]
    if any(s.loss is not None and s.loss > cfg.probe_loss for s in during):
        return True
    # A queue building: the RTT (kept fresh by extra sender reports) rises well before
    # the queue overflows into loss.
    base = state.min_rtt_ms
    fresh = [s.rtt_ms for s in during if s.t > probe.started + PROBE_STEP]
    if base is not None and any(r is not None and r - base > cfg.probe_rtt_rise_ms for r in fresh):
        return True
    latest = during[-1].remb_bps if during else None
    peak = probe.remb_peak
    return latest is not None and peak is not None and latest < peak * cfg.probe_remb_drop


def _backoff(state: AbrState, now: float, cfg: AbrConfig) -> AbrState:
    failures = state.failures + 1
    wait = min(cfg.probe_backoff_max, cfg.probe_backoff * 2 ** (failures - 1))
    return replace(state, probe=None, failures=failures, backoff_until=now + wait, probe_ended=now)


def _advance(
    probe: Probe,
    ladder_bps: Sequence[int],
    aim: int,
    total: float,
    now: float,
    cfg: AbrConfig,
    remb: float | None,
) -> Probe:
    """Note rungs newly covered by the ramp and rungs covered long enough to be proven."""
    covered = dict(probe.covered)
    proven = probe.proven
    for rung in range(aim - 1, -1, -1):
        if rung not in covered and _need(ladder_bps, rung, cfg) <= total + 1e-6:
            covered[rung] = now
        if rung in covered and now - covered[rung] >= cfg.probe_hold - 1e-9:
            proven = rung if proven is None else min(proven, rung)
    peak = probe.remb_peak
    if remb is not None and (peak is None or remb > peak):
        peak = remb
    return replace(probe, covered=tuple(sorted(covered.items())), proven=proven, remb_peak=peak)


def _step_probe(
    history: Sequence[Snapshot],
    ladder_bps: Sequence[int],
    aim: int,
    state: AbrState,
    now: float,
    cfg: AbrConfig,
) -> tuple[Decision, AbrState]:
    probe = state.probe
    assert probe is not None
    if _probe_failed(probe, history, state, cfg):
        if probe.proven is None:
            return Decision(aim, "probe-failed"), _backoff(state, now, cfg)
        # Part of the way proved: take that rung, but don't retry the rest at once.
        state = _backoff(state, now, cfg)
        return Decision(probe.proven, "probe"), _went_up(state, history, now)
    total = _ramp_total(ladder_bps, aim, probe, now, cfg)
    remb = history[-1].remb_bps if history else None
    probe = _advance(probe, ladder_bps, aim, total, now, cfg, remb)
    if probe.proven == 0:
        done = _went_up(replace(state, probe=None, failures=0), history, now)
        return Decision(0, "probe"), done
    extra = total - _need(ladder_bps, aim, cfg)
    return Decision(aim, "probing", extra), replace(state, probe=probe)


def _went_up(state: AbrState, history: Sequence[Snapshot], now: float) -> AbrState:
    remb = history[-1].remb_bps if history else None
    return replace(state, last_switch=now, remb_trusted=False, remb_peak=remb, probe_ended=now)


def _may_probe(
    history: Sequence[Snapshot], aim: int, state: AbrState, now: float, cfg: AbrConfig
) -> bool:
    if aim == 0 or not history:
        return False
    if now - state.joined < cfg.startup_grace or now < state.backoff_until:
        return False
    if now - state.last_down < cfg.up_after_down or now - state.last_switch < cfg.up_stable:
        return False
    # Random loss is no reason to stay low, but a probe over a lossy link proves nothing.
    loss = mean_loss(_window(history, now, PROBE_CLEAN_WINDOW) or history[-8:], min_reports=1)
    return loss is None or loss < cfg.loss_clean


def _observe(
    history: Sequence[Snapshot],
    ladder_bps: Sequence[int],
    aim: int,
    state: AbrState,
    cfg: AbrConfig,
) -> AbrState:
    """Fold the newest snapshot into the slow-moving state (lowest RTT, REMB peak)."""
    if not history:
        return state
    latest = history[-1]
    if latest.rtt_ms is not None and (state.min_rtt_ms is None or latest.rtt_ms < state.min_rtt_ms):
        state = replace(state, min_rtt_ms=latest.rtt_ms)
    remb = latest.remb_bps
    if remb is not None:
        if state.remb_peak is None or remb > state.remb_peak:
            state = replace(state, remb_peak=remb)
        if not state.remb_trusted and remb >= _need(ladder_bps, aim, cfg) * cfg.remb_headroom:
            state = replace(state, remb_trusted=True)
    return state


def decide(
    history: Sequence[Snapshot],
    ladder_bps: Sequence[int],
    aim: int,
    state: AbrState,
    now: float,
    cfg: AbrConfig,
) -> tuple[Decision, AbrState]:
    """``aim`` is the rung the viewer is on or already headed to."""
    state = _observe(history, ladder_bps, aim, state, cfg)
    down = _down(history, ladder_bps, aim, state, now, cfg)
    if down is not None:
        if state.probe is not None:
            state = _backoff(state, now, cfg)
        return down, replace(state, last_down=now, last_switch=now)
    if state.probe is not None:
        return _step_probe(history, ladder_bps, aim, state, now, cfg)
    if _may_probe(history, aim, state, now, cfg):
        probe = Probe(started=now, remb_peak=history[-1].remb_bps)
        extra = _ramp_total(ladder_bps, aim, probe, now, cfg) - _need(ladder_bps, aim, cfg)
        return Decision(aim, "probing", extra), replace(state, probe=probe)
    return Decision(aim, "hold"), state
