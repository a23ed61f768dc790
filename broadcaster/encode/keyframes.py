"""When each rung should emit a keyframe: periodic, plus throttled requests."""

from __future__ import annotations


class KeyframeScheduler:
    """Per-rung keyframe decisions; pure (the caller passes ``now`` in seconds).

    Requests (new viewer, PLI, switch) inside the throttle window are not dropped but
    deferred to the window's end, so a viewer that asked is never left waiting for the
    periodic keyframe.
    """

    def __init__(self, interval: float, min_gap: float) -> None:
        self.interval = interval
        self.min_gap = min_gap
        self._last: float | None = None
        self._pending = False

    def request(self) -> None:
        self._pending = True

    def due(self, now: float) -> bool:
        """Should the frame captured at ``now`` be a keyframe? Records it if so."""
        if self._last is None:
            fire = True
        elif now - self._last >= self.interval:
            fire = True
        else:
            fire = self._pending and now - self._last >= self.min_gap
        if fire:
            self._last = now
            self._pending = False
        return fire
