"""Synthetic test pattern: moving content, a wall clock, a frame counter and film grain.

The grain matters: flat synthetic frames compress so well that a VP8 encoder badly
undershoots its target bitrate, which would make ladder/ABR tests meaningless. Grain is
precomputed once and a randomly placed window of it is used per frame, which keeps the
per-frame cost to a couple of array passes (fresh random numbers per frame would cost
tens of milliseconds at 720p).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

import cv2
import numpy as np

from broadcaster.capture.sources import Frame, SourceError

log = logging.getLogger(__name__)

_MIN_SIZE = 16
# Grain spans [0, 2 * _GRAIN_AMPLITUDE]; the background is squeezed below 255 - that span so
# a plain saturating add never clips and no signed arithmetic is needed per frame.
_GRAIN_AMPLITUDE = 18
# Extra grain rows/columns so each frame can start its window at a random offset: a jump
# the encoder's realtime motion search cannot follow, so the grain looks fresh every frame.
_GRAIN_MARGIN = 64
# Coarse grain survives the caller's downscale to the lower rungs (fine grain averages out).
_COARSE_BLOCK = 4
_BG_SCROLL_SECONDS = 8.0
_BAR_SWEEP_SECONDS = 4.0
_BOX_PERIOD_SECONDS = (5.0, 3.0)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


class TestPattern:
    """Renders frames of exactly ``width`` x ``height``; ``read()`` never sleeps."""

    # Not a pytest test class despite the name.
    __test__ = False

    def __init__(self, width: int, height: int, fps: float) -> None:
        if width < _MIN_SIZE or height < _MIN_SIZE:
            raise SourceError(
                f"test pattern: size {width}x{height} too small (min {_MIN_SIZE}x{_MIN_SIZE})"
            )
        if not fps > 0:
            raise SourceError(f"test pattern: fps must be positive, got {fps}")
        self._width = width
        self._height = height
        self._fps = float(fps)
        self._index = 0
        self._closed = False
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(0x5EED)
        self._background = _make_background(width, height, 255 - 2 * _GRAIN_AMPLITUDE)
        self._grain = _make_grain(width, height, self._rng)
        self._bar_width = max(2, width // 40)
        self._box_size = max(4, min(width, height) // 5)
        self._text_scale = height / 240
        self._text_thickness = max(1, round(self._text_scale * 2))
        log.debug("test pattern %dx%d @ %.3g fps ready", width, height, fps)

    def read(self) -> Frame:
        with self._lock:
            if self._closed:
                raise SourceError("test pattern: read after close")
            index = self._index
            self._index += 1
        frame = self._render_base(index)
        self._draw_moving_shapes(frame, index)
        self._draw_text(frame, index)
        return frame

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def _render_base(self, index: int) -> Frame:
        w, h = self._width, self._height
        scroll = int(index * w / (_BG_SCROLL_SECONDS * self._fps)) % w
        gy, gx = self._rng.integers(0, _GRAIN_MARGIN, size=2)
        background = self._background[:, scroll : scroll + w]
        grain = self._grain[gy : gy + h, gx : gx + w]
        return np.asarray(cv2.add(background, grain), dtype=np.uint8)

    def _draw_moving_shapes(self, frame: Frame, index: int) -> None:
        w, h = self._width, self._height
        t = index / self._fps
        bar_x = int((t / _BAR_SWEEP_SECONDS % 1.0) * (w - self._bar_width))
        cv2.rectangle(frame, (bar_x, 0), (bar_x + self._bar_width - 1, h - 1), (255, 255, 255), -1)
        size = self._box_size
        box_x = int(_triangle(t / _BOX_PERIOD_SECONDS[0]) * (w - size))
        box_y = int(_triangle(t / _BOX_PERIOD_SECONDS[1]) * (h - size))
        hue = int(t * 30) % 180
        colour = cv2.cvtColor(np.array([[[hue, 255, 255]]], np.uint8), cv2.COLOR_HSV2BGR)[0, 0]
        cv2.rectangle(
            frame,
            (box_x, box_y),
            (box_x + size - 1, box_y + size - 1),
            (int(colour[0]), int(colour[1]), int(colour[2])),
            -1,
        )

    def _draw_text(self, frame: Frame, index: int) -> None:
        clock = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        counter = f"frame {index:07d}  {self._width}x{self._height}@{self._fps:g}"
        scale, thick = self._text_scale, self._text_thickness
        small = scale * 0.45
        small_thick = max(1, thick // 2)
        (clock_w, clock_h), clock_base = cv2.getTextSize(clock, _FONT, scale, thick)
        (count_w, count_h), count_base = cv2.getTextSize(counter, _FONT, small, small_thick)
        pad = max(2, int(8 * scale))
        panel_w = max(clock_w, count_w) + 2 * pad
        panel_h = clock_h + clock_base + count_h + count_base + 3 * pad
        # A flat panel keeps the text legible at the low rungs, where grain would smear it.
        cv2.rectangle(frame, (0, 0), (panel_w, panel_h), (0, 0, 0), -1)
        clock_y = pad + clock_h
        cv2.putText(frame, clock, (pad, clock_y), _FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)
        count_y = clock_y + clock_base + pad + count_h
        cv2.putText(
            frame, counter, (pad, count_y), _FONT, small, (0, 255, 255), small_thick, cv2.LINE_AA
        )


def _triangle(phase: float) -> float:
    """0 -> 1 -> 0 over each unit of ``phase``: a bounce."""
    frac = phase % 1.0
    return 2 * frac if frac < 0.5 else 2 * (1 - frac)


def _make_background(width: int, height: int, peak: int) -> Frame:
    """Hue rainbow along x, brightness ramp along y, two periods wide so any W-wide window
    of it is seamless: scrolling is then just a slice."""
    x = np.arange(2 * width, dtype=np.float32)
    hue = ((x % width) / width * 180).astype(np.uint8)
    hsv = np.empty((height, 2 * width, 3), np.uint8)
    hsv[:, :, 0] = hue[np.newaxis, :]
    hsv[:, :, 1] = 200
    value = np.linspace(peak * 0.35, peak, height, dtype=np.float32)
    hsv[:, :, 2] = value.astype(np.uint8)[:, np.newaxis]
    return np.asarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR), dtype=np.uint8)


def _make_grain(width: int, height: int, rng: np.random.Generator) -> Frame:
    """Fine + coarse noise in [0, 2 * _GRAIN_AMPLITUDE], with a margin for random offsets."""
    h, w = height + _GRAIN_MARGIN, width + _GRAIN_MARGIN
    fine = rng.integers(0, _GRAIN_AMPLITUDE + 1, size=(h, w, 3), dtype=np.uint8)
    ch = -(-h // _COARSE_BLOCK)
    cw = -(-w // _COARSE_BLOCK)
    coarse_small = rng.integers(0, _GRAIN_AMPLITUDE + 1, size=(ch, cw, 3), dtype=np.uint8)
    coarse = np.repeat(np.repeat(coarse_small, _COARSE_BLOCK, 0), _COARSE_BLOCK, 1)[:h, :w]
    grain: Frame = np.ascontiguousarray(fine + coarse)
    return grain
