"""The local packet bus: a duplex OS pipe between the capture process and the server.

Capture side: ``CaptureLink`` (publish frames/stats/errors, poll keyframe requests).
Server side: ``ServerLink`` (a reader thread hands messages to the event loop; keyframe
requests go the other way). Both speak the bytes of ``bus.packet``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

from .packet import (
    BusError,
    CaptureMessage,
    KeyframeRequest,
    ServerMessage,
    Stop,
    decode_capture_message,
    decode_server_message,
    encode_capture_message,
    encode_server_message,
)

logger = logging.getLogger(__name__)


class CaptureLink:
    """The capture process's end of the bus."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._closed = False
        # Video frames and audio packets come from different threads.
        self._send_lock = threading.Lock()

    def publish(self, msg: CaptureMessage) -> bool:
        """Send one message; False once the server has gone away. Thread-safe."""
        data = encode_capture_message(msg)
        try:
            with self._send_lock:
                self._conn.send_bytes(data)
            return True
        except (BrokenPipeError, ConnectionResetError, OSError):
            return False

    def poll(self) -> list[ServerMessage]:
        """Messages from the server that are waiting now (never blocks).

        An end of file (the server died or closed) reads as Stop.
        """
        out: list[ServerMessage] = []
        try:
            while self._conn.poll():
                out.append(decode_server_message(self._conn.recv_bytes()))
        except (EOFError, OSError):
            out.append(Stop())
        except BusError as exc:
            logger.warning("ignoring bad server message: %s", exc)
        return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()


class ServerLink:
    """The server's end of the bus; delivers capture messages on the event loop."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._thread: threading.Thread | None = None
        self._closed = False
        self._send_lock = threading.Lock()

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[CaptureMessage], None],
        on_eof: Callable[[], None],
        tap: Callable[[bytes], None] | None = None,
    ) -> None:
        """``tap`` (optional) sees every message's raw bytes first, on the reader thread:
        how fan-out workers get the capture's messages without re-encoding them."""

        def run() -> None:
            # A thread (not add_reader) because recv_bytes of a big keyframe may block
            # while the rest of it is still being written.
            while True:
                try:
                    buf = self._conn.recv_bytes()
                except (EOFError, OSError):
                    break
                if tap is not None:
                    tap(buf)
                try:
                    msg = decode_capture_message(buf)
                except BusError as exc:
                    logger.warning("dropping bad capture message: %s", exc)
                    continue
                try:
                    loop.call_soon_threadsafe(on_message, msg)
                except RuntimeError:  # loop closed under us
                    return
            # The reader owns closing: closing under a blocked recv is undefined.
            self._conn.close()
            try:
                loop.call_soon_threadsafe(on_eof)
            except RuntimeError:
                pass

        self._thread = threading.Thread(target=run, name="bus-reader", daemon=True)
        self._thread.start()

    def send(self, msg: ServerMessage) -> None:
        if self._closed:
            return
        try:
            with self._send_lock:
                self._conn.send_bytes(encode_server_message(msg))
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass

    def request_keyframe(self, rung: int) -> None:
        self.send(KeyframeRequest(rung))

    def close(self) -> None:
        if self._closed:
            return
        # The capture process answers Stop by exiting, which ends the reader with EOF.
        self.send(Stop())
        self._closed = True
        if self._thread is None:
            self._conn.close()
