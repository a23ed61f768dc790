"""Per-viewer choice of which rung's frame goes out at each capture instant.

"Which rung should this viewer get" is decided elsewhere (pin via WHEP layer, the ABR
policy); this object only carries it out: it keeps the viewer on its current rung and
moves it to the target rung at the target's next keyframe, choosing exactly one frame
per capture instant. The broadcast sends what it chooses on the fast path.

It is also the MediaStreamTrack aiortc negotiates the viewer's video with; aiortc's own
send loop never gets a frame from it (recv() waits until the track stops), because the
fast path sends instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..bus.packet import EncodedFrame
from .live_rungs import nearest_live
from .outbound import ParkedTrack

logger = logging.getLogger(__name__)

MAX_SWITCH_HISTORY = 20


@dataclass(frozen=True, slots=True)
class Switch:
    at: float  # wall clock
    pts: int  # of the keyframe the viewer switched at
    from_rung: int | None
    to_rung: int
    reason: str


class SwitcherTrack(ParkedTrack):
    kind = "video"

    def __init__(
        self,
        start_rung: int,
        request_keyframe: Callable[[int], None],
        on_switch: Callable[[Switch], None] | None = None,
    ) -> None:
        super().__init__()
        self._on_switch = on_switch
        self.current: int | None = None
        self.target = start_rung
        self._reason = "start"
        self._request_keyframe = request_keyframe
        self.switches: list[Switch] = []
        self.frames_out = 0
        self.bytes_out = 0
        self.dropped = 0
        self._drain = False
        # Which rungs still produce frames (the broadcast's list, shared and kept up to
        # date); None until bound: every rung.
        self.live: Sequence[bool] | None = None
        request_keyframe(start_rung)

    # -------------------------------------------------------------- control

    def bind_ladder(self, live: Sequence[bool]) -> None:
        """Follow ``live`` (which rungs still produce frames) from now on."""
        self.live = live
        usable = nearest_live(self.target, live)
        if usable is not None and usable != self.target:
            self.select(usable, self._reason)

    def select(self, rung: int, reason: str, drain: bool = False) -> None:
        """Aim for ``rung``; the move happens at its next keyframe.

        ``drain``: stop sending the current rung until then. For a move down because the
        link is congested: the old rung's frames only deepen the queue the target's
        keyframe must get through, and most of them would be lost anyway.

        A dead rung (its encoder failed) is replaced by the nearest live one: aimed at a
        rung that never sends a keyframe, the viewer would wait forever.
        """
        if self.live is not None:
            usable = nearest_live(rung, self.live)
            if usable is None:
                return  # no rung left; the capture side ends the broadcast
            rung = usable
        self._drain = drain and rung != self.current
        if rung == self.target:
            return
        self.target = rung
        self._reason = reason
        if rung != self.current:
            self._request_keyframe(rung)

    def on_rung_failed(self, rung: int) -> None:
        """``rung`` produces no more frames: move off it, or stop heading for it."""
        usable = nearest_live(rung, self.live) if self.live is not None else None
        if rung == self.target and usable is not None:
            self.select(usable, "rung-failed")
        elif rung == self.current:
            # Already headed elsewhere: nothing arrives until the target's keyframe, so
            # make sure it comes soon.
            self._request_keyframe(self.target)

    def on_keyframe_request(self) -> None:
        """The viewer lost the picture (PLI/FIR): ask the rung it decodes for a keyframe."""
        self._request_keyframe(self.current if self.current is not None else self.target)

    # -------------------------------------------------------------- data

    def offer(self, frames: dict[int, EncodedFrame]) -> EncodedFrame | None:
        """One capture instant: the frame of it this viewer gets, if any."""
        if self.readyState != "live":
            return None
        chosen = self._choose(frames)
        if chosen is None:
            return None
        self.frames_out += 1
        self.bytes_out += len(chosen.data)
        return chosen

    def _choose(self, frames: dict[int, EncodedFrame]) -> EncodedFrame | None:
        target = frames.get(self.target)
        if self.target != self.current and target is not None and target.keyframe:
            self._switched(target.pts)
            return target
        if self.current is None or self._drain:
            return None
        return frames.get(self.current)

    def _switched(self, pts: int) -> None:
        switch = Switch(time.time(), pts, self.current, self.target, self._reason)
        self.switches.append(switch)
        del self.switches[:-MAX_SWITCH_HISTORY]
        if self._on_switch is not None:
            self._on_switch(switch)
        logger.debug("viewer switched %s -> %s (%s)", self.current, self.target, self._reason)
        self.current = self.target
        self._drain = False

    def restart(self, dropped: int = 0) -> None:
        """Frames of the current rung were lost on our side (a send backlog dropped, or
        the viewer just became able to receive): restart at the target's next keyframe."""
        self.dropped += dropped
        self.current = None
        self._reason = "restart"
        self._request_keyframe(self.target)
