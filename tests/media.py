"""Media the tests make for themselves (nothing is downloaded or committed)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_clip(path: Path, seconds: float = 2.0, size: tuple[int, int] = (320, 240)) -> Path:
    """A short MPEG-4 clip whose frames change (a moving bright bar on noise)."""
    width, height = size
    rng = np.random.default_rng(7)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 30)
        for i in range(int(seconds * 30)):
            img = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
            x = (i * 8) % width
            img[:, x : x + 16] = 255
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
