"""Camera source: a thin wrapper around cv2.VideoCapture."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cv2
import numpy as np

from broadcaster.capture.sources import Frame, SourceError

log = logging.getLogger(__name__)


class CameraSource:
    """Frames from camera ``index``; ``read()`` blocks until the camera delivers one.

    ``width``/``height``/``fps`` are only requests: the driver picks the closest mode it
    has and frames come at whatever size it chose.
    """

    def __init__(
        self,
        index: int,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
    ) -> None:
        self._index = index
        self._lock = threading.Lock()
        with _quiet_opencv():
            cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {index}: cannot open {_describe_device(index)}")
        self._cap: cv2.VideoCapture | None = cap
        _request_mode(cap, width, height, fps)
        log.info(
            "camera %d opened: %dx%d @ %.3g fps",
            index,
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            cap.get(cv2.CAP_PROP_FPS),
        )

    def read(self) -> Frame:
        # The lock makes close() wait for an in-flight read instead of releasing the
        # device under it.
        with self._lock:
            if self._cap is None:
                raise SourceError(f"camera {self._index}: read after close")
            ok, image = self._cap.read()
        if not ok or image is None or image.size == 0:
            raise SourceError(f"camera {self._index}: read failed")
        return _to_bgr(self._index, image)

    def close(self) -> None:
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
            log.info("camera %d closed", self._index)


def _request_mode(
    cap: cv2.VideoCapture, width: int | None, height: int | None, fps: float | None
) -> None:
    # Drivers silently ignore modes they lack, so these are best effort.
    if width:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    if height:
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    if fps:
        cap.set(cv2.CAP_PROP_FPS, fps)


def _to_bgr(index: int, image: np.ndarray[Any, Any]) -> Frame:
    if image.dtype != np.uint8:
        raise SourceError(f"camera {index}: unsupported pixel type {image.dtype}")
    # Some backends hand back grey or BGRA frames; the contract is 3-channel BGR.
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image, dtype=np.uint8)


def _describe_device(index: int) -> str:
    if not sys.platform.startswith("linux"):
        return "the device (missing, busy or access denied)"
    path = f"/dev/video{index}"
    if not os.path.exists(path):
        return f"{path} (no such device)"
    if not os.access(path, os.R_OK | os.W_OK):
        return f"{path} (permission denied; is the user in the 'video' group?)"
    return f"{path} (busy, or not a video capture device)"


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own WARN lines while probing: our SourceError says it better."""
    logging_mod = getattr(cv2, "utils", None)
    logging_mod = getattr(logging_mod, "logging", None)
    if logging_mod is None:
        yield
        return
    previous = logging_mod.getLogLevel()
    logging_mod.setLogLevel(logging_mod.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging_mod.setLogLevel(previous)
