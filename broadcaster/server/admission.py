"""Who gets a new viewer session: the capacity, per-IP offer rate and shutdown gate.

Pure decisions over explicit ``now`` (monotonic seconds); whep.py turns a refusal into
its HTTP answer (429/503 with Retry-After) before anything costly happens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import LimitsConfig
from .ratelimit import TokenBucket

# Remember at most this many client IPs; beyond it, idle (full) buckets are forgotten
# first, so a spray of addresses cannot grow the table without bound.
MAX_TRACKED_IPS = 10_000


@dataclass(frozen=True)
class Refusal:
    status: int  # 429 or 503
    reason: str
    retry_after: int  # seconds


class OfferRate:
    """Offers per client IP per minute, with bursts up to the same number."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, ip: str, now: float) -> float | None:
        """None if ``ip`` may offer now, else seconds until it may."""
        if self.per_minute <= 0:
            return None
        bucket = self._buckets.get(ip)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_IPS:
                self._forget_idle(now)
            bucket = self._buckets[ip] = TokenBucket(
                self.per_minute, self.per_minute / 60.0, now=now
            )
        if bucket.take(now=now):
            return None
        return bucket.retry_after()

    def _forget_idle(self, now: float) -> None:
        for ip, bucket in list(self._buckets.items()):
            bucket.take(0, now=now)  # refill to now
            if bucket.tokens >= bucket.burst:
                del self._buckets[ip]
        if len(self._buckets) >= MAX_TRACKED_IPS:
            # Every tracked IP is busy: drop the oldest half rather than grow.
            for ip in list(self._buckets)[: MAX_TRACKED_IPS // 2]:
                del self._buckets[ip]


class Admission:
    def __init__(self, limits: LimitsConfig) -> None:
        self.limits = limits
        self.offers = OfferRate(limits.offers_per_minute)
        self.draining = False  # set once shutdown starts: no new viewers
        self.refused: dict[int, int] = {429: 0, 503: 0}

    def check_rate(self, ip: str, now: float) -> Refusal | None:
        """First, before authentication: guessing tokens costs offers too."""
        wait = self.offers.take(ip, now)
        if wait is None:
            return None
        return self._count(
            Refusal(
                429,
                f"too many offers from this address (limit {self.limits.offers_per_minute}"
                " per minute)",
                max(1, math.ceil(wait)),
            )
        )

    def check_capacity(self, viewers: int) -> Refusal | None:
        if self.draining:
            return self._count(Refusal(503, "server is shutting down", self.limits.retry_after))
        if self.limits.max_viewers and viewers >= self.limits.max_viewers:
            return self._count(
                Refusal(
                    503,
                    f"viewer limit reached ({self.limits.max_viewers})",
                    self.limits.retry_after,
                )
            )
        return None

    def _count(self, refusal: Refusal) -> Refusal:
        self.refused[refusal.status] += 1
        return refusal
