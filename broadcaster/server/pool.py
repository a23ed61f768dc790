"""Fan-out worker processes seen from the server: spawn, feed, route, mirror, respawn.

The server process keeps HTTP, the WebSocket, auth and admission, and reads the capture.
Each capture message is forwarded as raw bytes to every worker (a thread per worker with
a bounded queue: a stuck worker loses frames, never stalls the others). WHEP requests go
to the worker that holds the session - a new viewer to the least loaded one - over a
control pipe; the sessions' state comes back four times a second and is what the
WebSocket and /api/viewers read. A worker that dies loses only its viewers (their pages
reconnect, to a live worker) and is started again.

``WorkerPool`` implements the same ``Viewers`` interface as ``LocalViewers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import queue
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from ..bus.packet import BusError, KeyframeRequest, decode_server_message
from ..config import Config, IceServer
from .abr_controller import ViewerAbr
from .broadcast import Broadcast
from .viewers import OfferRejected, Reply
from .worker import worker_main

logger = logging.getLogger(__name__)

# Capture messages queued for one worker (~2 s at 30 fps) before it is called stuck.
FEED_QUEUE = 60
REQUEST_TIMEOUT = 15.0
RESPAWN_AFTER = 1.0


@dataclass
class RemoteSession:
    """A worker's session as the server mirrors it (a SessionView)."""

    id: str
    public_id: str
    mode: str
    rtp_origin: int | None
    rung_index: int | None
    target_index: int
    worker: int
    closed: bool = False


@dataclass
class WorkerStats:
    index: int
    up: bool
    viewers: int
    cpu_s: float
    lag_p99: float
    lag_max: float
    restarts: int


@dataclass
class _Worker:
    index: int
    process: Any
    control: Connection
    data: Connection
    feed: queue.Queue[bytes | None] = field(default_factory=lambda: queue.Queue(FEED_QUEUE))
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    alive: bool = True


class WorkerPool:
    def __init__(self, config: Config, broadcast: Broadcast, count: int) -> None:
        self.config = config
        self.broadcast = broadcast
        self.count = count
        self._workers: list[_Worker | None] = [None] * count
        self._sessions: dict[str, RemoteSession] = {}
        self._ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.restarts = [0] * count
        self._ctx = multiprocessing.get_context("spawn")

    # ------------------------------------------------------------ lifecycle

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for i in range(self.count):
            self._spawn(i)

    def _spawn(self, index: int) -> None:
        data_here, data_there = self._ctx.Pipe(duplex=True)
        control_here, control_there = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=worker_main,
            args=(index, self.config, data_there, control_there),
            name=f"fanout-{index}",
            daemon=True,
        )
        process.start()
        data_there.close()
        control_there.close()
        w = _Worker(index, process, control_here, data_here)
        self._workers[index] = w
        for target, name in (
            (self._feed, "feed"),
            (self._read_data, "keyframes"),
            (self._read_control, "control"),
        ):
            threading.Thread(target=target, args=(w,), name=f"{name}-{index}", daemon=True).start()

    def tap(self, message: bytes) -> None:
        """A capture message for every worker (called on the bus reader thread)."""
        for w in self._workers:
            if w is None or not w.alive:
                continue
            try:
                w.feed.put_nowait(message)
            except queue.Full:
                pass  # a stuck worker: its viewers restart at the next keyframe they get

    def _feed(self, w: _Worker) -> None:
        while (message := w.feed.get()) is not None:
            try:
                w.data.send_bytes(message)
            except (BrokenPipeError, ConnectionResetError, OSError):
                return

    def _read_data(self, w: _Worker) -> None:
        # Workers ask the capture for keyframes through us (the capture has one link).
        loop = self._loop
        assert loop is not None
        while True:
            try:
                msg = decode_server_message(w.data.recv_bytes())
            except (EOFError, OSError):
                return
            except BusError:
                continue
            if isinstance(msg, KeyframeRequest):
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self.broadcast.request_keyframe, msg.rung)

    def _read_control(self, w: _Worker) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            try:
                msg = w.control.recv()
            except (EOFError, OSError):
                break
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._on_message, w, msg)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._died, w)

    def _on_message(self, w: _Worker, msg: dict[str, Any]) -> None:
        if msg.get("op") == "reply":
            future = w.pending.pop(msg.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(msg)
        elif msg.get("op") == "state":
            w.state = msg
            self._mirror(w, msg)

    def _mirror(self, w: _Worker, msg: dict[str, Any]) -> None:
        seen = set()
        for sid, public_id, mode, origin, rung, target in msg["sessions"]:
            seen.add(sid)
            self._sessions[sid] = RemoteSession(sid, public_id, mode, origin, rung, target, w.index)
        for sid in [s for s, r in self._sessions.items() if r.worker == w.index and s not in seen]:
            # Closed in the worker (DELETE, watchdog, failed connection).
            self._sessions.pop(sid).closed = True
        self._aggregate()

    def _aggregate(self) -> None:
        """The server's /metrics counters: the sum over workers."""
        b = self.broadcast
        states = [w.state for w in self._workers if w is not None and w.state]
        for i in range(len(b.ladder)):
            b.frames_out[i] = sum(s["frames_out"][i] for s in states)
            b.bytes_out[i] = sum(s["bytes_out"][i] for s in states)
        b.packets_out = sum(s["packets_out"] for s in states)
        b.audio_packets_out = sum(s.get("audio_packets_out", 0) for s in states)
        b.switches.clear()
        for s in states:
            b.switches.update(s["switches"])

    def _died(self, w: _Worker) -> None:
        if not w.alive:
            return
        w.alive = False
        w.feed.put(None)
        for future in w.pending.values():
            if not future.done():
                future.set_exception(OfferRejected(503, "fan-out worker went away; retry"))
        w.pending.clear()
        lost = [sid for sid, r in self._sessions.items() if r.worker == w.index]
        for sid in lost:
            self._sessions.pop(sid).closed = True
        with contextlib.suppress(OSError):
            w.control.close()
        if self._closing:
            return
        logger.error("fan-out worker %d died; %d viewers lost; restarting", w.index, len(lost))
        self.restarts[w.index] += 1
        assert self._loop is not None
        self._loop.call_later(RESPAWN_AFTER, self._respawn, w.index)

    def _respawn(self, index: int) -> None:
        if not self._closing:
            self._spawn(index)

    async def shutdown(self) -> None:
        """Stop every worker (their sessions close with them); idempotent."""
        if self._closing:
            return
        self._closing = True
        workers = [w for w in self._workers if w is not None]
        for w in workers:
            w.feed.put(None)
            if w.alive:
                # The worker closes its sessions and exits; our reader then sees EOF.
                with contextlib.suppress(OSError):
                    w.control.send({"op": "stop", "id": -1})
        loop = asyncio.get_running_loop()
        for w in workers:
            await loop.run_in_executor(None, w.process.join, 5.0)
            if w.process.is_alive():
                w.process.kill()
                await loop.run_in_executor(None, w.process.join, 2.0)
            with contextlib.suppress(OSError):
                w.data.close()
        self._sessions.clear()

    # ------------------------------------------------------------ requests

    async def _request(self, w: _Worker, op: str, **fields: Any) -> dict[str, Any]:
        if not w.alive:
            raise OfferRejected(503, "fan-out worker unavailable; retry")
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        w.pending[rid] = future
        try:
            w.control.send({"op": op, "id": rid, **fields})
        except (BrokenPipeError, ConnectionResetError, OSError):
            w.pending.pop(rid, None)
            raise OfferRejected(503, "fan-out worker unavailable; retry") from None
        try:
            return await asyncio.wait_for(future, REQUEST_TIMEOUT)
        finally:
            w.pending.pop(rid, None)

    def _owner(self, session_id: str) -> _Worker | None:
        r = self._sessions.get(session_id)
        w = self._workers[r.worker] if r is not None else None
        return w if w is not None and w.alive else None

    def _least_loaded(self) -> _Worker:
        alive = [w for w in self._workers if w is not None and w.alive]
        if not alive:
            raise OfferRejected(503, "no fan-out worker is running; retry")
        load = {w.index: 0 for w in alive}
        for r in self._sessions.values():
            if r.worker in load:
                load[r.worker] += 1
        return min(alive, key=lambda w: load[w.index])

    async def open(self, offer_sdp: str, servers: tuple[IceServer, ...]) -> tuple[str, str]:
        if self.broadcast.error is not None:
            raise OfferRejected(503, f"broadcast unavailable: {self.broadcast.error}")
        w = self._least_loaded()
        reply = await self._request(w, "open", sdp=offer_sdp, servers=servers)
        if reply["status"] != 201:
            raise OfferRejected(reply["status"], reply["body"]["error"])
        sid = reply["session"]
        # Known at once (the next state push fills in the rest), so the page's PATCH,
        # layer and hello find it.
        self._sessions[sid] = RemoteSession(sid, "", "auto", None, None, 0, w.index)
        return sid, reply["answer"]

    async def trickle(self, session_id: str, frag: str) -> Reply:
        w = self._owner(session_id)
        if w is None:
            return Reply(404, {"error": "no such session"})
        reply = await self._request(w, "trickle", session=session_id, frag=frag)
        return Reply(reply["status"], reply.get("body") or {})

    async def layer(self, session_id: str, body: object) -> Reply:
        w = self._owner(session_id)
        if w is None:
            return Reply(404, {"error": "no such session"})
        reply = await self._request(w, "layer", session=session_id, body=body)
        return Reply(reply["status"], reply.get("body") or {})

    async def close(self, session_id: str) -> bool:
        w = self._owner(session_id)
        if w is None:
            return False
        try:
            reply = await self._request(w, "close", session=session_id)
        except OfferRejected:
            return False
        session = self._sessions.pop(session_id, None)
        if session is not None:
            session.closed = True
        return bool(reply.get("closed"))

    async def close_all(self) -> None:
        alive = [w for w in self._workers if w is not None and w.alive]
        await asyncio.gather(
            *(self._request(w, "close_all") for w in alive), return_exceptions=True
        )
        self._sessions.clear()

    async def describe(self, history: bool) -> list[dict[str, Any]]:
        alive = [w for w in self._workers if w is not None and w.alive]
        replies = await asyncio.gather(
            *(self._request(w, "describe", history=history) for w in alive),
            return_exceptions=True,
        )
        out: list[dict[str, Any]] = []
        for w, reply in zip(alive, replies, strict=True):
            if isinstance(reply, dict):
                out += [{**v, "worker": w.index} for v in reply["viewers"]]
        return out

    # ------------------------------------------------------------ views

    def get(self, session_id: str) -> RemoteSession | None:
        return self._sessions.get(session_id)

    def __len__(self) -> int:
        return len(self._sessions)

    def abrs(self) -> list[ViewerAbr]:
        return []  # each worker runs its own viewers' ABR

    def stats(self) -> list[WorkerStats]:
        out = []
        for i, w in enumerate(self._workers):
            s = w.state if w is not None else {}
            out.append(
                WorkerStats(
                    index=i,
                    up=w is not None and w.alive,
                    viewers=sum(1 for r in self._sessions.values() if r.worker == i),
                    cpu_s=float(s.get("cpu_s", 0.0)),
                    lag_p99=float(s.get("lag_p99", float("nan"))),
                    lag_max=float(s.get("lag_max", float("nan"))),
                    restarts=self.restarts[i],
                )
            )
        return out

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w is not None and w.alive]
