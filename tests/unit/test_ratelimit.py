"""The token bucket behind chat limits and retransmission budgets."""

from __future__ import annotations

from broadcaster.server.ratelimit import TokenBucket


def test_burst_then_refill_at_rate() -> None:
    bucket = TokenBucket(burst=3, rate=2, now=0.0)
    assert [bucket.take(now=0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after() == 0.5
    assert bucket.take(now=0.5) and not bucket.take(now=0.5)
    # Idle time refills up to the burst, never beyond.
    assert [bucket.take(now=100.0) for _ in range(4)] == [True, True, True, False]


def test_cost_in_bytes() -> None:
    bucket = TokenBucket(burst=1500, rate=10_000, now=0.0)  # 10 kB/s budget
    assert bucket.take(1200, now=0.0)
    assert not bucket.take(1200, now=0.0)
    assert bucket.take(1200, now=0.1)  # 300 left + 1000 refilled
