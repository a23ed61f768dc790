"""Rungs whose encoder still works, and the pure choices that follow when one fails.

``live[i]`` is False once rung i's encoder has failed (it produces no more frames).
A viewer on or headed for a dead rung moves to the nearest live one, preferring lower
quality (it fits any link the dead rung fitted); the ABR policy sees only the live rungs,
as a smaller ladder of their own, so it can never choose a dead one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def nearest_live(rung: int, live: Sequence[bool]) -> int | None:
    """``rung`` if live, else the next lower live rung, else the next higher; None if none.

    Rungs are best first: a lower rung has a higher index.
    """
    if 0 <= rung < len(live) and live[rung]:
        return rung
    for lower in range(max(rung + 1, 0), len(live)):
        if live[lower]:
            return lower
    for higher in range(min(rung, len(live)) - 1, -1, -1):
        if live[higher]:
            return higher
    return None


@dataclass(frozen=True, slots=True)
class LiveLadder:
    """The live rungs (indexes into the full ladder, best first) as a ladder of their own.

    ``position`` is an index into this smaller ladder, ``rung`` into the full one.
    """

    rungs: tuple[int, ...]

    @classmethod
    def of(cls, live: Sequence[bool]) -> LiveLadder:
        return cls(tuple(i for i, ok in enumerate(live) if ok))

    def bitrates(self, ladder_bps: Sequence[int]) -> list[int]:
        return [ladder_bps[r] for r in self.rungs]

    def position(self, rung: int) -> int:
        """Where ``rung`` (or, if dead, the nearest live rung) sits in this ladder."""
        if not self.rungs:
            raise ValueError("no live rungs")
        live = [False] * (max(max(self.rungs), rung) + 1)
        for r in self.rungs:
            live[r] = True
        nearest = nearest_live(rung, live)
        assert nearest is not None
        return self.rungs.index(nearest)

    def rung(self, position: int) -> int:
        return self.rungs[position]
