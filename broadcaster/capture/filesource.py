"""File source: decodes the first video stream of a media file with PyAV, looping forever."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import av
import numpy as np

from broadcaster.capture.sources import Frame, SourceError

log = logging.getLogger(__name__)


class FileSource:
    """Frames of ``path`` as fast as they are asked for (the caller paces), from the
    start again after the last one."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.path.expanduser(os.fspath(path))
        self._name = f"file {self._path}"
        self._lock = threading.Lock()
        self._closed = False
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        if not os.path.exists(self._path):
            raise SourceError(f"{self._name}: no such file")
        if os.path.isdir(self._path):
            raise SourceError(f"{self._name}: is a directory, not a media file")
        stream = self._open()
        # Decode one frame now so a file whose codec cannot be decoded fails at open time,
        # with the other "cannot open" errors, rather than on the first read.
        try:
            self._pending: Any = self._decode_one()
        except SourceError:
            self._release()
            raise
        if self._pending is None:
            self._release()
            raise SourceError(f"{self._name}: video stream has no decodable frames")
        log.info(
            "%s opened: %s %dx%d, %s fps",
            self._name,
            stream.codec_context.name,
            stream.codec_context.width,
            stream.codec_context.height,
            stream.average_rate,
        )

    def read(self) -> Frame:
        # Held across the decode so close() cannot free the container mid-decode.
        with self._lock:
            if self._closed:
                raise SourceError(f"{self._name}: read after close")
            frame = self._next_frame()
        image = frame.to_ndarray(format="bgr24")
        # PyAV may return a view that skips row padding; the contract is C-contiguous.
        out: Frame = np.ascontiguousarray(image, dtype=np.uint8)
        return out

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pending = None
            self._release()
        log.info("%s closed", self._name)

    def _next_frame(self) -> Any:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        frame = self._decode_one()
        if frame is not None:
            return frame
        # End of file: start over. Reopening (rather than seeking) works for every
        # container, including ones that cannot seek.
        log.debug("%s: end of file, looping", self._name)
        self._release()
        self._open()
        frame = self._decode_one()
        if frame is None:
            raise SourceError(f"{self._name}: video stream has no decodable frames")
        return frame

    def _decode_one(self) -> Any:
        assert self._frames is not None
        try:
            return next(self._frames, None)
        except av.FFmpegError as exc:
            raise SourceError(f"{self._name}: decode failed ({_one_line(exc)})") from exc

    def _open(self) -> Any:
        """Open the file and start decoding its first video stream, which is returned."""
        try:
            container: Any = av.open(self._path, mode="r")
        except FileNotFoundError as exc:
            raise SourceError(f"{self._name}: no such file") from exc
        except PermissionError as exc:
            raise SourceError(f"{self._name}: permission denied") from exc
        except (av.FFmpegError, UnicodeDecodeError) as exc:
            raise SourceError(f"{self._name}: not a media file ({_one_line(exc)})") from exc
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self._name}: has no video stream")
        stream = container.streams.video[0]
        # Frame threading: decoding a 1080p file must not eat the capture loop's budget.
        stream.thread_type = "AUTO"
        self._container = container
        self._frames = container.decode(stream)
        return stream

    def _release(self) -> None:
        if self._frames is not None:
            close_gen = getattr(self._frames, "close", None)
            if close_gen is not None:
                close_gen()
            self._frames = None
        if self._container is not None:
            self._container.close()
            self._container = None


def _one_line(exc: BaseException) -> str:
    # FFmpegError's str() carries an errno and the path, which the caller already shows.
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
