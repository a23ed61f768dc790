"""A token bucket: chat and message rates on the WebSocket, retransmission budgets."""

from __future__ import annotations

import time


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; ``take(cost)`` spends them.

    ``now`` (monotonic seconds) may be passed in, so tests need no clock.
    """

    def __init__(self, burst: float, rate: float, now: float | None = None) -> None:
        self.burst = burst
        self.rate = rate
        self.tokens = burst
        self._at = time.monotonic() if now is None else now

    def take(self, cost: float = 1.0, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def retry_after(self) -> float:
        return max(0.0, (1.0 - self.tokens) / self.rate) if self.rate > 0 else float("inf")
