"""The "signal lost" slate sent in place of the picture while the source is being reopened.

Viewers keep a live, playing stream (their decoders and the server's switchers never see a
gap) and a person sees why the picture froze: the last good frame, darkened, with a
message and a seconds counter that shows the stream itself is still alive.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..encode.ladder import fit
from .sources import Frame

# How much of the last picture shows through behind the text.
DIM = 0.3
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_GREY = (190, 190, 190)


def slate_background(last: Frame | None, width: int, height: int) -> Frame:
    """The last good picture at width x height, darkened; plain dark grey without one."""
    if last is None:
        return np.full((height, width, 3), 24, dtype=np.uint8)
    fitted = fit(last, width, height)
    dimmed = cv2.convertScaleAbs(fitted, alpha=DIM)
    return np.ascontiguousarray(dimmed, dtype=np.uint8)


def render_slate(background: Frame, lost_for_s: int) -> Frame:
    """``background`` with the message drawn on a copy (the background is reused)."""
    image = background.copy()
    height, width = image.shape[:2]
    scale = max(height / 360, 0.3)
    _centered(image, "SIGNAL LOST", height // 2 - int(12 * scale), 1.4 * scale, _WHITE)
    detail = f"reconnecting... ({lost_for_s} s)"
    _centered(image, detail, height // 2 + int(30 * scale), 0.7 * scale, _GREY)
    return image


def _centered(
    image: Frame, text: str, baseline: int, scale: float, colour: tuple[int, ...]
) -> None:
    thickness = max(1, round(2 * scale))
    (text_w, _), _ = cv2.getTextSize(text, _FONT, scale, thickness)
    x = max(0, (image.shape[1] - text_w) // 2)
    cv2.putText(image, text, (x, baseline), _FONT, scale, colour, thickness, cv2.LINE_AA)
