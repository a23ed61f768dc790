"""Capture sources: the shared types and the ``open_source`` factory.

A source hands out raw BGR frames; pacing and resizing are the caller's job, so every
source can stay a thin adapter around one capture API.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8]

SPEC_FORMS = "test | camera | camera:INDEX | screen | screen:INDEX | file:PATH"


class SourceError(Exception):
    """A source cannot be opened or read; str() is one clear line for a human (no traceback)."""


class Source(Protocol):
    def read(self) -> Frame:
        """Next frame: HxWx3 uint8 BGR, C-contiguous, any size.

        May block (a camera waits for its next frame); never returns None; raises
        SourceError on a fatal fault.
        """
        ...

    def close(self) -> None:
        """Release the device/file/display; safe to call more than once."""
        ...


def open_source(
    spec: str, *, width: int, height: int, fps: float, audio_channels: int | None = None
) -> Source:
    """Open the source described by ``spec``.

    ``width``/``height``/``fps`` describe the top ladder rung: the test pattern renders at
    exactly that size, a camera is asked for it as a hint, other sources keep their
    native size. ``audio_channels``: a file source also decodes its audio track, as
    ``source.audio`` (1 or 2 channels; None: no audio).
    """
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.lower()
    # Sources are imported lazily so that e.g. a missing X11 library only matters to
    # someone who actually asks for the screen.
    if kind == "test" and not sep:
        from broadcaster.capture.testpattern import TestPattern

        return TestPattern(width, height, fps)
    if kind == "camera":
        from broadcaster.capture.camera import CameraSource

        return CameraSource(
            _parse_index(spec, arg, default=0) if sep else 0,
            width=width,
            height=height,
            fps=fps,
        )
    if kind == "screen":
        from broadcaster.capture.screen import ScreenSource

        return ScreenSource(_parse_index(spec, arg, default=1) if sep else 1)
    if kind == "file" and sep:
        if not arg:
            raise SourceError(f"source {spec!r}: file: needs a path (file:PATH)")
        from broadcaster.capture.filesource import FileSource

        return FileSource(arg, audio_channels=audio_channels)
    raise SourceError(f"unknown source {spec!r}; valid forms: {SPEC_FORMS}")


def one_line(exc: BaseException) -> str:
    """An FFmpeg/OS error as one short line (its strerror when it has one: FFmpegError's
    str() also carries the errno and path, which the caller already shows)."""
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _parse_index(spec: str, arg: str, *, default: int) -> int:
    if not arg:
        return default
    try:
        index = int(arg)
    except ValueError:
        index = -1
    if index < 0:
        raise SourceError(
            f"source {spec!r}: INDEX must be a non-negative integer; valid forms: {SPEC_FORMS}"
        )
    return index
