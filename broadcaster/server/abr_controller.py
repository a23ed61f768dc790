"""The thin asyncio plumbing around the ABR policy.

One task ticks every viewer's policy (``ViewerAbr.tick``) every TICK seconds; a viewer's
probe traffic is paced by its own short-lived task only while a probe runs. The policy
sees only the rungs still available (``LiveLadder``): a rung whose encoder failed is not
in the ladder it chooses from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Protocol

from ..config import AbrConfig
from .abr import AbrState, Decision, decide
from .feedback import FeedbackCollector, Snapshot
from .live_rungs import LiveLadder
from .switcher import SwitcherTrack

logger = logging.getLogger(__name__)

TICK = 0.25  # seconds between policy decisions (Chrome sends ~4 receiver reports/s)
HISTORY = 40  # snapshots kept per viewer (10 s)
PROBE_PACE = 0.02  # seconds between probe bursts
# While probing, a sender report this often keeps the RTT fresh (the viewer answers each
# with its next receiver report): the earliest sign of a queue building.
PROBE_SR_INTERVAL = 0.2


class Prober(Protocol):
    """Sends probe padding for one viewer (outbound.ViewerOutput)."""

    @property
    def available(self) -> bool: ...

    @property
    def bytes_sent(self) -> int: ...

    async def send(self, budget: int) -> int: ...

    async def measure_rtt(self) -> bool: ...


class ViewerAbr:
    """One viewer's feedback, policy state and probe traffic."""

    def __init__(
        self,
        switcher: SwitcherTrack,
        prober: Prober,
        feedback: FeedbackCollector,
        ladder_bps: list[int],
        cfg: AbrConfig,
        now: float,
    ) -> None:
        self.switcher = switcher
        self.prober = prober
        self.feedback = feedback
        self.ladder_bps = ladder_bps
        self.cfg = cfg
        self.auto = True
        self.state = AbrState(joined=now)
        self.history: deque[Snapshot] = deque(maxlen=HISTORY)
        self.last: Decision | None = None
        self.probe_bps = 0.0
        self.rtx_bytes = 0  # retransmissions sent (NACK answers), counted by the session
        self._probe_task: asyncio.Task[None] | None = None
        self._auto_rung = switcher.target
        self._live = LiveLadder(tuple(range(len(ladder_bps))))
        self._closed = False
        feedback.on_loss = self._on_loss
        # Sound shares the viewer's link: its bytes count as sent, and its rate is added
        # to every rung's need (set by the session when the viewer listens).
        self.audio_bps = 0.0
        self.audio_bytes: Callable[[], int] = lambda: 0

    def _on_loss(self) -> None:
        # Probe traffic that overflows the bottleneck costs the viewer frames; stop it at
        # the first report of loss. The next tick's decision sees the loss: it fails the
        # phase, or (if the loss was slight) resumes the probe.
        self.probe_bps = 0.0

    def pin(self, rung: int) -> None:
        if self.auto:
            self._auto_rung = self.switcher.target
        self.auto = False
        self._set_probe(0.0)
        self.switcher.select(rung, "pinned")

    def unpin(self, now: float) -> None:
        if self.auto:
            return
        self.auto = True
        # Back to the rung the policy had, with a fresh state so it may go up soon.
        self.state = replace(AbrState(joined=self.state.joined), last_switch=now)
        self.switcher.select(self._auto_rung, "auto")

    def tick(self, now: float) -> None:
        snap = self.feedback.snapshot(
            now,
            self.switcher.bytes_out + self.audio_bytes(),
            self.prober.bytes_sent,
            self.rtx_bytes,
        )
        self.history.append(snap)
        if not self.auto or self.switcher.current is None:
            return
        live = self._live_ladder()
        if not live.rungs:
            return
        decision, self.state = decide(
            self.history,
            [bps + round(self.audio_bps) for bps in live.bitrates(self.ladder_bps)],
            live.position(self.switcher.target),
            self.state,
            now,
            self.cfg,
        )
        decision = replace(decision, target=live.rung(decision.target))
        self.last = decision
        if decision.target != self.switcher.target:
            logger.info(
                "abr: rung %d -> %d (%s)", self.switcher.target, decision.target, decision.reason
            )
            down = decision.target > self.switcher.target  # a higher index is a lower rung
            self.switcher.select(decision.target, decision.reason, drain=down)
        self._set_probe(decision.probe_bps)

    def _live_ladder(self) -> LiveLadder:
        live = self.switcher.live
        current = LiveLadder.of(live) if live is not None else self._live
        if current != self._live:
            # A rung dropped out: a running probe's progress is kept as positions in the
            # old ladder, which now mean other rungs. Start over from the new one.
            self._live = current
            self.state = replace(self.state, probe=None)
            self._set_probe(0.0)
        return current

    def _set_probe(self, bps: float) -> None:
        self.probe_bps = bps if self.prober.available else 0.0
        if self.probe_bps > 0 and self._probe_task is None and not self._closed:
            self._probe_task = asyncio.ensure_future(self._pace_probe())

    async def _pace_probe(self) -> None:
        loop = asyncio.get_running_loop()
        next_sr = loop.time()
        try:
            while self.probe_bps > 0 and not self._closed:
                await self.prober.send(int(self.probe_bps * PROBE_PACE / 8))
                if loop.time() >= next_sr:
                    next_sr = loop.time() + PROBE_SR_INTERVAL
                    await self.prober.measure_rtt()
                await asyncio.sleep(PROBE_PACE)
        except Exception:  # probing is an optimisation: never let it hurt the session
            logger.exception("probe failed")
        finally:
            self._probe_task = None

    def close(self) -> None:
        self._closed = True
        self.probe_bps = 0.0
        if self._probe_task is not None:
            self._probe_task.cancel()


async def run_controller(viewers: Callable[[], Iterable[ViewerAbr]]) -> None:
    """Tick every viewer's policy until cancelled."""
    while True:
        await asyncio.sleep(TICK)
        _tick(viewers(), time.monotonic())


def _tick(abrs: Iterable[ViewerAbr], now: float) -> None:
    # A function of its own: a loop variable in run_controller's frame would keep the
    # last viewer's session (peer connection and all) alive after it left, until the
    # next viewer came.
    for abr in abrs:
        try:
            abr.tick(now)
        except Exception:  # one viewer's bug must not stop adaptation for all
            logger.exception("abr tick failed")
