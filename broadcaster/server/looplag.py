"""Event-loop lag: how late this process's event loop runs what is already due.

One sampler task sleeps ``interval`` and records how much later than asked it woke up.
Everything on the loop (HTTP, ICE/DTLS, every viewer's RTP sender) waits behind the same
ready queue, so the overshoot is the delay every callback suffers at that moment: the
fan-out's own health signal. At 30 fps a frame's packets for every viewer must be out
well within ~33 ms; a p99 near that means bursty, late video for everyone.

Quantiles are over the samples of the last ``window`` seconds (at most one sample per
``interval``, so memory is bounded); ``count`` and ``total`` are cumulative, the
``_count``/``_sum`` of a Prometheus summary. /metrics shows them (metrics.py).

A stall shows up as ONE late sample (no samples are taken while the loop is blocked), so
a single 100 ms stall moves ``max`` but hardly the p99 of ~1000 samples: read both.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from .state import LOOP_LAG

INTERVAL = 0.01  # seconds; 100 wake-ups a second cost ~0.2 % of a core
WINDOW = 10.0  # seconds the quantiles cover


@dataclass(frozen=True, slots=True)
class LagSummary:
    """Lag over the recent window, seconds; NaN with no sample in it."""

    p50: float
    p99: float
    max: float
    samples: int


def _quantile(ordered: list[float], q: float) -> float:
    # Nearest rank: a value that was actually observed, never an interpolation.
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class LoopLag:
    def __init__(self, interval: float = INTERVAL, window: float = WINDOW) -> None:
        self.interval = interval
        self.window = window
        # (monotonic time, lag): a sample takes at least ``interval``, so this holds the
        # whole window; older entries still inside it are filtered out by time.
        self._samples: deque[tuple[float, float]] = deque(maxlen=math.ceil(window / interval))
        self.count = 0
        self.total = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            woke = loop.time()
            # Never negative: the loop may fire a timer up to its clock resolution early.
            self.record(max(0.0, woke - due), time.monotonic())

    def record(self, lag: float, now: float) -> None:
        """One observation (seconds) taken at ``now`` (monotonic seconds)."""
        self._samples.append((now, lag))
        self.count += 1
        self.total += lag

    def summary(self, now: float | None = None) -> LagSummary:
        now = time.monotonic() if now is None else now
        recent = sorted(lag for at, lag in self._samples if at >= now - self.window)
        if not recent:
            return LagSummary(math.nan, math.nan, math.nan, 0)
        return LagSummary(_quantile(recent, 0.5), _quantile(recent, 0.99), recent[-1], len(recent))


async def loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: sample while the app runs, as ``app[LOOP_LAG]``."""
    lag = LoopLag()
    app[LOOP_LAG] = lag
    lag.start()
    yield
    await lag.close()
