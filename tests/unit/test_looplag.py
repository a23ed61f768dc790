"""The event-loop lag sampler behind /metrics' broadcaster_loop_lag_seconds."""

from __future__ import annotations

import asyncio
import math
import time

from aiohttp import web

from broadcaster.config import parse_config
from broadcaster.server import metrics
from broadcaster.server.broadcast import Broadcast
from broadcaster.server.looplag import LoopLag, loop_lag_ctx
from broadcaster.server.state import LOOP_LAG


async def test_blocking_call_shows_as_a_stall() -> None:
    lag = LoopLag(interval=0.01, window=10.0)
    lag.start()
    try:
        await asyncio.sleep(0.1)  # some normal samples first
        time.sleep(0.1)  # deliberately block the loop
        await asyncio.sleep(0.05)  # let the sampler wake up late and record it
        s = lag.summary()
    finally:
        await lag.close()
    assert s.max >= 0.09, s
    assert s.samples >= 5


async def test_idle_loop_has_low_lag() -> None:
    lag = LoopLag(interval=0.01, window=10.0)
    lag.start()
    try:
        await asyncio.sleep(1.0)
        s = lag.summary()
    finally:
        await lag.close()
    # ~100 samples, so the p99 tolerates one wake-up that a busy CI box delayed.
    assert s.samples >= 50, s
    assert s.p50 < 0.005, s
    assert s.p99 < 0.05, s
    assert lag.count == s.samples and lag.total >= 0


def test_quantiles_cover_only_the_window() -> None:
    lag = LoopLag(interval=0.01, window=10.0)
    lag.record(0.5, now=0.0)  # an old stall, out of the window at t=20
    for i in range(100):
        lag.record(0.001 * (i + 1), now=15.0 + i * 0.01)
    s = lag.summary(now=20.0)
    assert s.samples == 100
    assert s.p50 == 0.05 and s.p99 == 0.099 and s.max == 0.1
    assert lag.count == 101  # cumulative counters keep everything
    empty = lag.summary(now=100.0)
    assert empty.samples == 0 and math.isnan(empty.p99)


def test_memory_is_bounded() -> None:
    lag = LoopLag(interval=0.01, window=1.0)
    for i in range(10_000):
        lag.record(0.0, now=i * 0.01)
    assert len(lag._samples) == 100


async def test_close_is_idempotent_and_stops_sampling() -> None:
    lag = LoopLag(interval=0.005)
    lag.start()
    await asyncio.sleep(0.05)
    await lag.close()
    await lag.close()
    count = lag.count
    await asyncio.sleep(0.05)
    assert lag.count == count


async def test_cleanup_ctx_runs_it_for_the_app_lifetime() -> None:
    app = web.Application()
    app.cleanup_ctx.append(loop_lag_ctx)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await asyncio.sleep(0.05)
        assert app[LOOP_LAG].count > 0
    finally:
        await runner.cleanup()
    count = app[LOOP_LAG].count
    await asyncio.sleep(0.05)
    assert app[LOOP_LAG].count == count


def test_metrics_render_the_lag() -> None:
    broadcast = Broadcast(parse_config({}).ladder, lambda _rung: None)
    assert "loop_lag" not in metrics.render(broadcast, 0)
    lag = LoopLag()
    assert 'broadcaster_loop_lag_seconds{quantile="0.99"} NaN' in metrics.render(broadcast, 0, lag)
    lag.record(0.002, now=time.monotonic())
    text = metrics.render(broadcast, 0, lag)
    assert 'broadcaster_loop_lag_seconds{quantile="0.99"} 0.002\n' in text
    assert "broadcaster_loop_lag_seconds_count 1\n" in text
    assert "broadcaster_loop_lag_max_seconds 0.002\n" in text
    assert "# TYPE broadcaster_loop_lag_seconds summary" in text
