"""Convert a captured picture once, then scale it to every rung of the ladder."""

from __future__ import annotations

import av
import cv2
import numpy as np

from ..config import Rung


def fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Letterbox ``image`` into width x height (keeps aspect; black bars)."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scale = min(width / w, height / h)
    nw, nh = max(2, round(w * scale)) & ~1, max(2, round(h * scale)) & ~1
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    if (nw, nh) == (width, height):
        return resized
    out = np.zeros((height, width, 3), dtype=np.uint8)
    y, x = (height - nh) // 2, (width - nw) // 2
    out[y : y + nh, x : x + nw] = resized
    return out


class LadderScaler:
    """BGR picture -> one yuv420p VideoFrame per rung.

    The colour conversion happens once at the top rung's size (cv2 is ~6x cheaper than
    PyAV's own BGR conversion); lower rungs are scaled from that I420 picture.
    """

    def __init__(self, ladder: tuple[Rung, ...]) -> None:
        self.ladder = ladder
        self.top = ladder[0]

    def scale(self, image: np.ndarray, rungs: list[int] | None = None) -> list[av.VideoFrame]:
        """Frames for the rung indexes in ``rungs`` (all rungs by default), in that order."""
        wanted = list(range(len(self.ladder))) if rungs is None else rungs
        top = fit(image, self.top.width, self.top.height)
        i420 = np.asarray(cv2.cvtColor(top, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
        base = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        out = []
        for i in wanted:
            r = self.ladder[i]
            if (r.width, r.height) == (self.top.width, self.top.height):
                out.append(base)
            else:
                out.append(base.reformat(width=r.width, height=r.height, format="yuv420p"))
        return out
