"""Sends each capture instant's frames to every viewer in short slices of the event loop.

A frame for 200 viewers is a few milliseconds of sendto(); a keyframe is tens. Done in
one go it would stall the loop (RTCP, WHEP, the WebSocket all wait) and fire a burst
into the socket buffers. The pacer works through a FIFO of (viewer, frame) jobs for at
most ``SLICE_S`` at a time, then yields, so the loop stays responsive and one viewer's
packets still leave in order. If sending falls far behind (a starved CPU), the backlog
is dropped and those viewers restart at a keyframe rather than receive stale video.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from aiortc.clock import current_ntp_time

from .rtp_stream import SharedFrame

logger = logging.getLogger(__name__)

# Longest stretch of sending before the loop gets control back.
SLICE_S = 0.002
# Jobs waiting beyond this many capture instants means sending cannot keep up.
MAX_BACKLOG_INSTANTS = 15


class FrameSink(Protocol):
    """Where one viewer's frames go (outbound.ViewerOutput)."""

    def send_frame(self, frame: SharedFrame, ntp: int) -> int: ...

    def dropped(self, frames: int) -> None: ...


Job = tuple[FrameSink, SharedFrame]


class Pacer:
    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._instants: deque[deque[Job]] = deque()
        self._task: asyncio.Task[None] | None = None
        self.bytes_sent = 0
        self.slices = 0
        self.backlog_drops = 0
        self._closed = False

    def submit(self, jobs: list[Job]) -> None:
        """Queue one capture instant's sends (already in the order they should go)."""
        if not jobs or self._closed:
            return
        if len(self._instants) >= MAX_BACKLOG_INSTANTS:
            self._drop_backlog()
        self._instants.append(deque(jobs))
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    @property
    def pending(self) -> int:
        return sum(len(jobs) for jobs in self._instants)

    def run_slice(self) -> bool:
        """Send for up to SLICE_S; True while work remains."""
        deadline = self._clock() + SLICE_S
        ntp = current_ntp_time()
        self.slices += 1
        while self._instants:
            jobs = self._instants[0]
            while jobs:
                sink, frame = jobs.popleft()
                try:
                    self.bytes_sent += sink.send_frame(frame, ntp)
                except Exception:  # one viewer's failure must not stop the others'
                    logger.exception("sending to a viewer failed")
                if self._clock() >= deadline:
                    if not jobs:
                        self._instants.popleft()
                    return bool(self._instants)
            self._instants.popleft()
        return False

    async def _run(self) -> None:
        # Lives only while there is work: an idle broadcast holds no task.
        try:
            while self.run_slice() and not self._closed:
                await asyncio.sleep(0)
        finally:
            self._task = None

    def _drop_backlog(self) -> None:
        counts: dict[int, tuple[FrameSink, int]] = {}
        for jobs in self._instants:
            for sink, _frame in jobs:
                _, n = counts.get(id(sink), (sink, 0))
                counts[id(sink)] = (sink, n + 1)
        self._instants.clear()
        self.backlog_drops += 1
        logger.warning("sending fell %d instants behind; viewers restart", MAX_BACKLOG_INSTANTS)
        for sink, n in counts.values():
            sink.dropped(n)

    async def close(self) -> None:
        self._closed = True
        self._instants.clear()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
