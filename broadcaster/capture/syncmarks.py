"""A flash and a beep once a second, starting at the same capture instant: A/V sync you can
see, hear and measure.

The first video frame of every capture-clock second starts a mark: that frame and the
ones within ``MARK_S`` after it carry a white square (the test pattern draws it), and the
test tone beeps from that frame's exact pts for ``MARK_S``. Both sides are decided from
the one pts clock, so any offset a viewer measures between the flash and the beep was
added after capture (encoding, the network, the browser's playout).
"""

from __future__ import annotations

import threading
from collections import deque

import cv2
import numpy as np
import numpy.typing as npt

from ..bus.packet import AUDIO_CLOCK_RATE, CLOCK_RATE
from .sources import Frame

MARK_S = 0.1
MARK_PTS = round(MARK_S * CLOCK_RATE)
MARK_SAMPLES = round(MARK_S * AUDIO_CLOCK_RATE)
# The square: this share of the frame's height, in the bottom-right corner, where the
# viewer page (and the A/V sync test) looks for it. Big enough to survive the 180p rung.
SQUARE_SHARE = 0.2


def sample_of(pts: int) -> int:
    """The 48 kHz sample index of a 90 kHz pts (both count from the clock's origin)."""
    return pts * AUDIO_CLOCK_RATE // CLOCK_RATE


class SyncMarks:
    """``period_pts``: the frame period; with it the tone can tell, before that frame
    exists, which frame will start the next mark (the test pattern's frames are taken
    on a fixed schedule), so the beep need not wait for the picture."""

    def __init__(self, period_pts: int) -> None:
        self._period = max(1, period_pts)
        self._last: int | None = None  # pts of the latest frame
        self._second: int | None = None
        # Starts (pts) of recent marks: the tone asks about samples a frame or two late,
        # from the audio thread.
        self._starts: deque[int] = deque(maxlen=4)
        self._lock = threading.Lock()

    def on_frame(self, pts: int) -> bool:
        """Called for every captured frame in order; True if it carries the flash."""
        second = pts // CLOCK_RATE
        with self._lock:
            self._last = pts
            if second != self._second:
                # The first frame only sets the count going: a mark starts on a second.
                if self._second is not None:
                    self._starts.append(pts)
                self._second = second
            return bool(self._starts) and pts - self._starts[-1] < MARK_PTS

    def _next_start(self) -> int | None:
        """The pts of the frame expected to start the next mark (first frame of the next
        second, if frames keep coming every period)."""
        if self._last is None:
            return None
        boundary = (self._last // CLOCK_RATE + 1) * CLOCK_RATE
        frames = -(-(boundary - self._last) // self._period)
        return self._last + frames * self._period

    def beeping(self, first: int, count: int) -> npt.NDArray[np.bool_]:
        """Which of the samples ``first .. first+count-1`` fall inside a mark."""
        index = np.arange(first, first + count, dtype=np.int64)
        out = np.zeros(count, np.bool_)
        with self._lock:
            starts = (*self._starts, self._next_start())
        for start in starts:
            if start is None:
                continue
            begin = sample_of(start)
            out |= (index >= begin) & (index < begin + MARK_SAMPLES)
        return out


def draw_flash(image: Frame, on: bool) -> None:
    """The square, white during a mark and black otherwise (so its edge is always there)."""
    h, w = image.shape[:2]
    side = max(4, int(h * SQUARE_SHARE))
    colour = (255, 255, 255) if on else (0, 0, 0)
    cv2.rectangle(image, (w - side, h - side), (w - 1, h - 1), colour, -1)
