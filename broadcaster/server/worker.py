"""A fan-out worker process: a share of the viewers, fed by the capture through the bus.

The server process (pool.py) keeps HTTP, the WebSocket, admission and auth; a worker
owns peer connections. It receives the capture's messages on a data pipe exactly as the
server would from the capture process (a ``ServerLink``: frames in, keyframe requests
out) and requests on a control pipe: open/trickle/layer/close/describe for its sessions.
Four times a second it tells the server what the WebSocket, the API and /metrics need.
A worker that dies loses only its own viewers; their pages reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from ..bus.local import ServerLink
from ..config import Config
from . import rtc_internals
from .abr_controller import run_controller
from .broadcast import Broadcast
from .ice import host_addresses
from .looplag import LoopLag
from .viewers import LocalViewers, OfferRejected

logger = logging.getLogger(__name__)

STATE_INTERVAL = 0.25


def worker_main(index: int, config: Config, data: Connection, control: Connection) -> None:
    """Entry point of worker ``index``."""
    # Ctrl-C goes to the whole process group; the server decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.WARNING, format=f"worker {index}: %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(Worker(index, config, data, control).run())


class Worker:
    def __init__(self, index: int, config: Config, data: Connection, control: Connection) -> None:
        self.index = index
        self.config = config
        self.data = data
        self.control = control
        self.done = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        rtc_internals.check_compatible()
        rtc_internals.use_host_addresses(host_addresses(config))
        rtc_internals.use_port_range(config.ice.port_min, config.ice.port_max)
        link = ServerLink(self.data)
        self.broadcast = Broadcast(
            config.ladder,
            link.request_keyframe,
            config.video.codec,
            audio=config.audio.source != "none",
        )
        self.viewers = LocalViewers(config, self.broadcast)
        link.start(loop, self.broadcast.on_message, self.done.set)
        self.lag = LoopLag()
        self.lag.start()
        abr = asyncio.ensure_future(run_controller(self.viewers.abrs))
        state = asyncio.ensure_future(self._push_state())
        threading.Thread(target=self._read_control, args=(loop,), daemon=True).start()
        gc.freeze()  # the worker's startup heap lives as long as it does
        await self.done.wait()
        for task in (abr, state):
            task.cancel()
        await self.viewers.close_all()
        await self.broadcast.close()
        await self.lag.close()
        link.close()

    def _read_control(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                msg = self.control.recv()
            except (EOFError, OSError):
                break  # the server is gone: so are we
            try:
                loop.call_soon_threadsafe(self._dispatch, msg)
            except RuntimeError:
                return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self.done.set)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        asyncio.ensure_future(self._handle(msg))

    def _send(self, msg: dict[str, Any]) -> None:
        try:
            self.control.send(msg)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.done.set()

    async def _handle(self, msg: dict[str, Any]) -> None:
        op, rid = msg.get("op"), msg.get("id")
        try:
            reply = await self._answer(op, msg)
        except Exception:  # a bug here must cost one request, not the worker
            logger.exception("request %s failed", op)
            reply = {"status": 500, "body": {"error": "worker error"}}
        self._send({"op": "reply", "id": rid, **reply})

    async def _answer(self, op: object, msg: dict[str, Any]) -> dict[str, Any]:
        v = self.viewers
        if op == "open":
            try:
                session_id, answer = await v.open(msg["sdp"], msg["servers"])
            except OfferRejected as exc:
                return {"status": exc.status, "body": {"error": exc.reason}}
            return {"status": 201, "session": session_id, "answer": answer}
        if op == "trickle":
            r = await v.trickle(msg["session"], msg["frag"])
            return {"status": r.status, "body": r.body}
        if op == "layer":
            r = await v.layer(msg["session"], msg["body"])
            return {"status": r.status, "body": r.body}
        if op == "close":
            return {"status": 200, "closed": await v.close(msg["session"])}
        if op == "close_all":
            await v.close_all()
            return {"status": 200}
        if op == "stop":
            self.done.set()
            return {"status": 200}
        if op == "describe":
            return {"status": 200, "viewers": await v.describe(bool(msg.get("history")))}
        return {"status": 400, "body": {"error": f"unknown op {op!r}"}}

    async def _push_state(self) -> None:
        while True:
            self._send(self.state())
            await asyncio.sleep(STATE_INTERVAL)

    def state(self) -> dict[str, Any]:
        b = self.broadcast
        lag = self.lag.summary()
        return {
            "op": "state",
            "sessions": [
                (s.id, s.public_id, s.mode, s.rtp_origin, s.rung_index, s.target_index)
                for s in self.viewers
            ],
            "cpu_s": time.process_time(),
            "lag_p99": lag.p99,
            "lag_max": lag.max,
            "frames_out": list(b.frames_out),
            "bytes_out": list(b.bytes_out),
            "packets_out": b.packets_out,
            "audio_packets_out": b.audio_packets_out,
            "switches": dict(b.switches),
        }
