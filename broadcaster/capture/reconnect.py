"""A source that survives its device: reopened with back-off, a slate while it is away.

A camera unplugged, a file removed (the file source fails when it loops and reopens), a
display gone: ``read()`` then returns the "signal lost" slate at the caller's pace, so the
encoders, the pts clock and every viewer keep running, while the source is reopened in a
background thread (opening a camera can block for seconds) with exponential back-off.
Each change of state is reported as a ``SourceStatus``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import av

from ..bus.packet import SourceStatus
from .backoff import Backoff
from .pcm import PcmSource
from .slate import render_slate, slate_background
from .sources import Frame, Source, SourceError

logger = logging.getLogger(__name__)

# Wait before the first reopen attempt, doubled after each failed one up to the maximum.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0
# What a source's read() raises when its device/file/display goes away.
READ_ERRORS: tuple[type[BaseException], ...] = (SourceError, OSError, av.FFmpegError)


class ReconnectingSource:
    """Wraps an open source; ``read(now)`` always returns a frame (picture or slate)."""

    def __init__(
        self,
        source: Source,
        reopen: Callable[[], Source],
        size: tuple[int, int],
        on_status: Callable[[SourceStatus], object],
        backoff: Backoff | None = None,
    ) -> None:
        self._source: Source | None = source
        self._reopen = reopen
        self._width, self._height = size
        self._on_status = on_status
        self._backoff = backoff or Backoff(RETRY_FIRST_S, RETRY_MAX_S)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="reopen")
        self._attempt: Future[Source] | None = None
        self._retry_at = math.inf
        self._lost_at = 0.0
        self._last_good: Frame | None = None
        self._background: Frame | None = None
        self._slate: tuple[int, Frame] | None = None  # (seconds lost, picture)
        self.losses = 0

    @property
    def live(self) -> bool:
        return self._source is not None

    @property
    def audio(self) -> PcmSource | None:
        """The live source's own audio (a file's track), if it has one."""
        return getattr(self._source, "audio", None)

    def read(self, now: float) -> Frame:
        """The next picture, or the slate while the source is away. Never raises a
        source fault (anything else, e.g. a bug, still propagates)."""
        if self._source is None:
            self._poll_reopen(now)
        if self._source is not None:
            try:
                image = self._source.read()
            except READ_ERRORS as exc:
                self._lost(now, exc)
            else:
                self._last_good = image
                return image
        return self._slate_frame(now)

    def close(self) -> None:
        if self._attempt is not None:
            self._attempt.cancel()
        self._pool.shutdown(wait=True)
        if self._attempt is not None and self._attempt.done() and not self._attempt.cancelled():
            # An attempt that succeeded after we stopped caring still holds the device.
            if self._attempt.exception() is None:
                self._attempt.result().close()
        self._close_source()

    # -------------------------------------------------------------- losing

    def _lost(self, now: float, exc: BaseException) -> None:
        message = _one_line(exc)
        logger.warning("source lost: %s; reconnecting", message)
        self.losses += 1
        self._close_source()
        self._lost_at = now
        self._background = slate_background(self._last_good, self._width, self._height)
        self._slate = None
        self._schedule_retry(now, message)

    def _close_source(self) -> None:
        source, self._source = self._source, None
        if source is None:
            return
        try:
            source.close()
        except Exception:  # a device that vanished may fail to close too; it is gone anyway
            logger.debug("closing the lost source raised", exc_info=True)

    def _schedule_retry(self, now: float, message: str) -> None:
        delay = self._backoff.next_delay()
        self._retry_at = now + delay
        self._on_status(SourceStatus("lost", message, delay))

    # -------------------------------------------------------------- reopening

    def _poll_reopen(self, now: float) -> None:
        if self._attempt is None:
            if now >= self._retry_at:
                self._attempt = self._pool.submit(self._reopen)
            return
        if not self._attempt.done():
            return
        attempt, self._attempt = self._attempt, None
        exc = attempt.exception()
        if exc is not None:
            # Any failure to open means "not back yet": keep the slate up and try later.
            logger.info("source still unavailable: %s", _one_line(exc))
            self._schedule_retry(now, _one_line(exc))
            return
        self._source = attempt.result()
        self._backoff.reset()
        self._retry_at = math.inf
        logger.warning("source back after %.1f s", now - self._lost_at)
        self._on_status(SourceStatus("live"))

    def _slate_frame(self, now: float) -> Frame:
        if self._background is None:
            self._background = slate_background(None, self._width, self._height)
        seconds = int(now - self._lost_at)
        # Redrawn once a second (the counter), not every frame.
        if self._slate is None or self._slate[0] != seconds:
            self._slate = (seconds, render_slate(self._background, seconds))
        return self._slate[1]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
