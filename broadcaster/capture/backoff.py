"""Exponential back-off: how long to wait before the next attempt to reopen a source."""

from __future__ import annotations


class Backoff:
    """``first``, then twice as long after each failure, never more than ``maximum``.

    Pure (no clock): the caller asks for the next delay after each failed attempt and
    resets once an attempt succeeds.
    """

    def __init__(self, first: float, maximum: float, factor: float = 2.0) -> None:
        if first <= 0 or maximum < first or factor < 1:
            raise ValueError("need 0 < first <= maximum and factor >= 1")
        self.first = first
        self.maximum = maximum
        self.factor = factor
        self._next = first

    def next_delay(self) -> float:
        """The wait before the next attempt; each call doubles the one after."""
        delay = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.first
