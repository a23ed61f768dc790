"""The one presentation clock every rung shares."""

from __future__ import annotations

from ..bus.packet import CLOCK_RATE


class PtsClock:
    """Maps capture instants (monotonic seconds) to 90 kHz pts, strictly increasing.

    Every rung of one capture instant gets the same pts, which is what lets a viewer be
    moved between rungs at a keyframe without a jump in RTP timestamps.
    """

    def __init__(self, origin: float) -> None:
        self._origin = origin
        self._last = -1

    def pts(self, now: float) -> int:
        pts = round((now - self._origin) * CLOCK_RATE)
        # A clock read twice in one tick, or a source that delivers in a burst, must
        # still give distinct, increasing timestamps.
        if pts <= self._last:
            pts = self._last + 1
        self._last = pts
        return pts
