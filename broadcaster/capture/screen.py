"""Screen source: grabs one monitor with mss.

mss numbers monitors from 1; monitor 0 is the bounding box of all of them, so
``screen:0`` captures every monitor at once.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

import cv2
import mss
import numpy as np

from broadcaster.capture.sources import Frame, SourceError

log = logging.getLogger(__name__)


class ScreenSource:
    """Frames of monitor ``index`` at its native size.

    ``display`` overrides $DISPLAY (X11 only). With mss >= 10.2 (XCB backend) ``read()``
    may be called from any thread; older mss must be read on the opening thread.
    """

    def __init__(self, index: int = 1, *, display: str | None = None) -> None:
        self._name = f"screen {index}"
        self._lock = threading.Lock()
        display = display if display is not None else os.environ.get("DISPLAY")
        if sys.platform.startswith("linux") and not display:
            raise SourceError(
                f"{self._name}: no X display ($DISPLAY is not set; on a headless machine "
                "start Xvfb and export DISPLAY=:N)"
            )
        where = f"display {display}" if display else "the desktop"
        sct = _connect(self._name, where, display)
        try:
            monitors = sct.monitors
            if index >= len(monitors):
                count = len(monitors) - 1
                raise SourceError(
                    f"{self._name}: no such monitor ({where} has {count} monitor(s); "
                    f"use screen:1..{count}, or screen:0 for all of them)"
                )
        except mss.ScreenShotError as exc:
            sct.close()
            raise SourceError(f"{self._name}: cannot list monitors on {where} ({exc})") from exc
        except SourceError:
            sct.close()
            raise
        self._sct: Any = sct
        self._monitor = dict(monitors[index])
        log.info(
            "%s opened on %s: %dx%d at (%d,%d)",
            self._name,
            where,
            self._monitor["width"],
            self._monitor["height"],
            self._monitor["left"],
            self._monitor["top"],
        )

    def read(self) -> Frame:
        # Held across the grab so close() cannot tear the connection down mid-grab.
        with self._lock:
            if self._sct is None:
                raise SourceError(f"{self._name}: read after close")
            try:
                shot = self._sct.grab(self._monitor)
            except mss.ScreenShotError as exc:
                raise SourceError(f"{self._name}: grab failed ({exc})") from exc
            bgra = np.asarray(shot, dtype=np.uint8)
            # cvtColor allocates a fresh contiguous array, so nothing aliases mss's buffer.
            bgr = np.asarray(cv2.cvtColor(bgra, cv2.COLOR_BGRA2BGR), dtype=np.uint8)
        return bgr

    def close(self) -> None:
        with self._lock:
            sct, self._sct = self._sct, None
        if sct is not None:
            sct.close()
            log.info("%s closed", self._name)


def _connect(name: str, where: str, display: str | None) -> Any:
    # mss.MSS arrived in 10.x (where mss.mss() is deprecated); fall back for mss 9.
    factory = getattr(mss, "MSS", None) or mss.mss
    kwargs: dict[str, Any] = {"display": display} if sys.platform.startswith("linux") else {}
    try:
        return factory(**kwargs)
    except mss.ScreenShotError as exc:
        raise SourceError(f"{name}: cannot connect to {where} ({exc})") from exc
