"""The page's WebSocket at ``/ws``: control, clock and chat beside the WHEP media path.

One JSON object per text frame, always with a ``type``.

Page -> server:
  hello {session}        bind this socket to a WHEP session (the last segment of its Location)
  ping  {t0}             clock-offset probe; t0 is the page's clock in ms
  chat  {name, text}     a chat line for everyone

Server -> page:
  state   {stream, viewers, ladder, codec}   on connect and whenever the stream state changes
  viewers {count}                            when WHEP viewers join or leave
  hello   {viewer}                           the bound session's public id (ack)
  rung    {rung, target, mode}               the bound session's rung/mode (on change)
  clock   {epoch, rtp_origin}                capture time of a frame =
                                             epoch + ((rtp - rtp_origin) mod 2^32) / 90000
  pong    {t0, server_ms}                    reply to ping
  history {messages}                         recent chat, once on connect
  chat    {name, text, at, mine}             a chat line (mine: this socket sent it)
  error   {code, message}                    the socket stays open (except for 1009/1013)

Nothing a client sends can raise out of the handler: every input problem becomes an
``error`` message to that socket alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import unicodedata
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..bus.packet import CLOCK_RATE
from ..config import LimitsConfig
from .broadcast import Broadcast
from .errors import json_error
from .ratelimit import TokenBucket
from .state import AUTH, BROADCAST, CONFIG, VIEWERS, WS_HUB
from .viewers import SessionView, Viewers

logger = logging.getLogger(__name__)

# Largest text frame (limits.ws_max_message_bytes, default 8 KiB): aiohttp closes the socket
# with 1009 above it. A 500-character chat line of astral characters JSON-escaped
# (\ud83d\ude00) is ~6 KB, so 8 KiB fits any legal message and nothing much bigger.
MAX_NAME_CHARS = 32
MAX_TEXT_CHARS = 500
# Chat: a burst of 5 lines, then one every 2 s (5 per 10 s) per socket.
CHAT_BURST = 5
CHAT_WINDOW_S = 10.0
# Every message type together (limits.ws_messages_per_second / ws_message_burst, default
# 20/s, bursts of 40): far above what the page sends (a ping a second), low enough that a
# flood costs the server little. Over it, messages are dropped unread.
# A flood gets one rate_limited notice per this many seconds, not one per message, so the
# flooder cannot turn our replies into an amplifier.
FLOOD_NOTICE_S = 1.0
# How often rung/mode, clock, viewer count and stream state are looked at.
POLL_S = 0.25
# Pings from the server find dead peers (a phone that lost its network) within ~2x this.
HEARTBEAT_S = 20.0
# Closing handshake wait; shutdown must not hang on a peer that never answers.
CLOSE_TIMEOUT_S = 2.0
# Messages queued for one socket. A reader this far behind is not reading: we close it
# (1013) rather than buffer without bound or slow down everyone else's messages.
SEND_QUEUE = 256
CHAT_HISTORY = 50
# clock_epoch is recomputed from every frame (wall clock minus pts) and wobbles by rounding;
# only a real jump (capture restart, wall-clock step) is worth a new clock message.
CLOCK_RESEND_S = 0.001
# Characters that can make a line render as something else (bidi overrides, zero-width
# joiners are category Cf; control characters Cc) or that are not text at all (lone
# surrogates, Cs: JSON lets a client send them). Newlines in chat text are kept.
_STRIP_CATEGORIES = ("Cc", "Cf", "Cs")


def _now_ms() -> float:
    return time.time() * 1000.0


def stream_state(broadcast: Broadcast) -> str:
    if broadcast.ended or broadcast.error is not None:
        return "ended"
    return "live" if broadcast.healthy else "starting"


def _clean(value: str, *, keep_newlines: bool) -> str:
    kept = (
        ch
        for ch in value
        if (keep_newlines and ch == "\n") or unicodedata.category(ch) not in _STRIP_CATEGORIES
    )
    return "".join(kept).strip()


class WsClient:
    """One page's socket: its bound session, its limits and its outgoing queue."""

    def __init__(self, ws: web.WebSocketResponse, limits: LimitsConfig) -> None:
        self.ws = ws
        self.session_id: str | None = None
        self.chat_bucket = TokenBucket(CHAT_BURST, CHAT_BURST / CHAT_WINDOW_S)
        self.msg_bucket = TokenBucket(limits.ws_message_burst, limits.ws_messages_per_second)
        self.flood_noticed_at = -math.inf
        # What this page was last told, so the poller sends only changes.
        self.sent_rung: tuple[str | None, str | None, str] | None = None
        self.sent_clock: tuple[float, int] | None = None
        self._out: asyncio.Queue[str | None] = asyncio.Queue(SEND_QUEUE)
        self._writer = asyncio.ensure_future(self._write())
        self._closing = False

    def send(self, msg: dict[str, Any]) -> None:
        """Queue without waiting: one slow reader must not hold up the room."""
        if self._closing:
            return
        try:
            self._out.put_nowait(json.dumps(msg, separators=(",", ":")))
        except asyncio.QueueFull:
            logger.info("ws client not reading (%d queued); closing it", SEND_QUEUE)
            self._closing = True
            self._writer.cancel()
            asyncio.ensure_future(self._close(WSCloseCode.TRY_AGAIN_LATER, b"too slow"))

    def error(self, code: str, message: str, **extra: Any) -> None:
        self.send({"type": "error", "code": code, "message": message, **extra})

    async def _write(self) -> None:
        # The only task that sends data frames on this socket: keeps messages in order.
        try:
            while (text := await self._out.get()) is not None:
                if self.ws.closed:
                    return
                await self.ws.send_str(text)
        except (ConnectionError, RuntimeError) as exc:
            # Peer went away mid-send (aiohttp raises ConnectionResetError subclasses, or
            # RuntimeError on a closing transport): the reader side notices and cleans up.
            logger.debug("ws send stopped: %s", exc)

    async def _close(self, code: int, message: bytes) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code=code, message=message), CLOSE_TIMEOUT_S)

    async def close(self, code: int = WSCloseCode.GOING_AWAY, message: bytes = b"") -> None:
        """Flush what is queued (e.g. the final state message), then close."""
        if not self._closing:
            self._closing = True
            with contextlib.suppress(asyncio.QueueFull):
                self._out.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._writer), CLOSE_TIMEOUT_S)
        self._writer.cancel()
        await self._close(code, message)

    def stop(self) -> None:
        """The socket is gone: drop the writer."""
        self._closing = True
        self._writer.cancel()


class WsHub:
    """Every open /ws socket of the app, the chat room and the change poller."""

    def __init__(
        self,
        broadcast: Broadcast,
        viewers: Viewers,
        codec: str,
        limits: LimitsConfig | None = None,
    ) -> None:
        self.broadcast = broadcast
        self.viewers = viewers
        self.codec = codec
        self.limits = limits or LimitsConfig()
        self.clients: set[WsClient] = set()
        self.history: deque[dict[str, Any]] = deque(maxlen=CHAT_HISTORY)
        self._stream = stream_state(broadcast)
        self._viewer_count = len(viewers)
        self._closed = False
        self._ended_announced = False

    def __len__(self) -> int:
        return len(self.clients)

    @property
    def closed(self) -> bool:
        """Shutting down: no new sockets (once `ended` was announced, too)."""
        return self._closed or self._ended_announced

    @property
    def full(self) -> bool:
        cap = self.limits.ws_max_connections
        return bool(cap) and len(self.clients) >= cap

    # -------------------------------------------------------------- membership

    def state_message(self, stream: str | None = None) -> dict[str, Any]:
        return {
            "type": "state",
            "stream": stream or stream_state(self.broadcast),
            "viewers": len(self.viewers),
            "codec": self.codec,
            "ladder": [
                {
                    "name": r.name,
                    "width": r.width,
                    "height": r.height,
                    "fps": r.fps,
                    "bitrate": r.bitrate,
                }
                for r in self.broadcast.ladder
            ],
        }

    def join(self, ws: web.WebSocketResponse) -> WsClient:
        client = WsClient(ws, self.limits)
        self.clients.add(client)
        client.send(self.state_message())
        client.send({"type": "history", "messages": list(self.history)})
        return client

    def leave(self, client: WsClient) -> None:
        self.clients.discard(client)
        client.stop()

    def broadcast_all(self, msg: dict[str, Any]) -> None:
        for client in list(self.clients):
            client.send(msg)

    def announce_ended(self) -> None:
        """Tell every page the stream ended (once: shutdown says it before closing the
        viewers' sessions, and close_all makes sure it was said)."""
        if self._ended_announced:
            return
        self._ended_announced = True
        self.broadcast_all({"type": "state", "stream": "ended", "viewers": 0})

    async def close_all(self) -> None:
        """App shutdown: tell every page the stream ended, then close with 1001."""
        self._closed = True
        self.announce_ended()
        clients = list(self.clients)
        await asyncio.gather(
            *(c.close(WSCloseCode.GOING_AWAY, b"server shutdown") for c in clients)
        )
        self.clients.clear()

    # -------------------------------------------------------------- incoming

    def handle_text(self, client: WsClient, data: str) -> None:
        if not client.msg_bucket.take():
            now = time.monotonic()
            if now - client.flood_noticed_at >= FLOOD_NOTICE_S:
                client.flood_noticed_at = now
                client.error(
                    "rate_limited",
                    "too many messages; some were dropped",
                    retry_after=round(client.msg_bucket.retry_after(), 2),
                )
            return
        try:
            msg = json.loads(data, parse_constant=_reject_constant)
        except (ValueError, RecursionError):  # RecursionError: absurdly nested arrays
            client.error("bad_json", "message is not valid JSON")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            client.error("bad_message", 'message must be a JSON object with a string "type"')
            return
        kind = msg["type"]
        if kind == "ping":
            self._on_ping(client, msg)
        elif kind == "hello":
            self._on_hello(client, msg)
        elif kind == "chat":
            self._on_chat(client, msg)
        else:
            client.error(
                "unknown_type",
                f"unknown message type {kind[:40]!r}",
                valid=["hello", "ping", "chat"],
            )

    def _on_ping(self, client: WsClient, msg: dict[str, Any]) -> None:
        t0 = msg.get("t0")
        # 1e999 parses as inf, which json.dumps would write back as the non-JSON Infinity.
        if isinstance(t0, bool) or not isinstance(t0, int | float) or not math.isfinite(t0):
            client.error("bad_field", "ping needs a numeric t0 (your clock, ms)", field="t0")
            return
        client.send({"type": "pong", "t0": t0, "server_ms": _now_ms()})

    def _on_hello(self, client: WsClient, msg: dict[str, Any]) -> None:
        sid = msg.get("session")
        session = self.viewers.get(sid) if isinstance(sid, str) else None
        if session is None:
            # Typically a page whose server restarted: it should start a new WHEP session.
            client.error("unknown_session", "no such viewer session")
            return
        client.session_id = session.id
        client.sent_rung = None
        client.sent_clock = None
        client.send({"type": "hello", "viewer": session.public_id})
        self._update_session(client, session)

    def _on_chat(self, client: WsClient, msg: dict[str, Any]) -> None:
        name, text = msg.get("name"), msg.get("text")
        if not isinstance(name, str) or not isinstance(text, str):
            client.error("bad_field", "chat needs string name and text")
            return
        name = _clean(name, keep_newlines=False)
        text = _clean(text, keep_newlines=True)
        if not name or not text:
            client.error("empty", "name and text must not be empty")
            return
        if len(name) > MAX_NAME_CHARS or len(text) > MAX_TEXT_CHARS:
            client.error(
                "too_long",
                f"name is limited to {MAX_NAME_CHARS} and text to {MAX_TEXT_CHARS} characters",
                max_name=MAX_NAME_CHARS,
                max_text=MAX_TEXT_CHARS,
            )
            return
        if not client.chat_bucket.take():
            client.error(
                "rate_limited",
                f"at most {CHAT_BURST} chat messages per {CHAT_WINDOW_S:g} s",
                retry_after=round(client.chat_bucket.retry_after(), 2),
            )
            return
        line = {"type": "chat", "name": name, "text": text, "at": _now_ms()}
        self.history.append(line)
        for other in list(self.clients):
            other.send({**line, "mine": other is client})

    # -------------------------------------------------------------- changes

    def _update_session(self, client: WsClient, session: SessionView) -> None:
        ladder = self.broadcast.ladder
        current = session.rung_index
        rung = (
            None if current is None else ladder[current].name,
            ladder[session.target_index].name,
            session.mode,
        )
        if rung != client.sent_rung:
            client.sent_rung = rung
            client.send({"type": "rung", "rung": rung[0], "target": rung[1], "mode": rung[2]})
        epoch, origin = self.broadcast.clock_epoch, session.rtp_origin
        if epoch is None or origin is None:
            return
        sent = client.sent_clock
        if sent is None or sent[1] != origin or abs(sent[0] - epoch) > CLOCK_RESEND_S:
            client.sent_clock = (epoch, origin)
            client.send({"type": "clock", "epoch": epoch, "rtp_origin": origin, "rate": CLOCK_RATE})

    def poll(self) -> None:
        """Push whatever changed since the last poll."""
        if self._closed:
            return
        stream = stream_state(self.broadcast)
        if stream != self._stream:
            self._stream = stream
            self.broadcast_all(self.state_message(stream))
        count = len(self.viewers)
        if count != self._viewer_count:
            self._viewer_count = count
            self.broadcast_all({"type": "viewers", "count": count})
        for client in list(self.clients):
            if client.session_id is None:
                continue
            session = self.viewers.get(client.session_id)
            if session is not None and not session.closed:
                self._update_session(client, session)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                self.poll()
            except Exception:  # one bad poll must not end updates for every page
                logger.exception("ws poll failed")


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are not JSON; json.loads accepts them unless told otherwise.
    raise ValueError(f"{name} is not allowed")


async def handle_ws(request: web.Request) -> web.StreamResponse:
    hub = request.app[WS_HUB]
    # Refused before the upgrade, as plain HTTP: the page learns it from the failed handshake.
    denied = request.app[AUTH].refuse(request, "view", time.time())
    if denied is not None:
        return denied
    if hub.full:
        return json_error(
            503,
            f"too many open sockets ({hub.limits.ws_max_connections})",
            headers={"Retry-After": str(request.app[CONFIG].limits.retry_after)},
        )
    ws = web.WebSocketResponse(
        max_msg_size=hub.limits.ws_max_message_bytes,
        heartbeat=HEARTBEAT_S,
        timeout=CLOSE_TIMEOUT_S,
    )
    await ws.prepare(request)
    if hub.closed:
        # A handshake that raced the shutdown: say so instead of leaving a socket behind.
        await ws.send_json({"type": "state", "stream": "ended", "viewers": 0})
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
        return ws
    client = hub.join(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    hub.handle_text(client, msg.data)
                except Exception:  # a bug in a handler costs one message, not the socket
                    logger.exception("ws message handling failed")
                    client.error("internal", "the server could not handle that message")
            elif msg.type == WSMsgType.BINARY:
                client.error("bad_message", "binary frames are not supported; send JSON text")
            # WSMsgType.ERROR: aiohttp already closed the socket with the matching code
            # (1009 for an oversize message); the loop ends on the next receive.
    finally:
        hub.leave(client)
    return ws


def setup(app: web.Application) -> None:
    """Route, hub, poller and shutdown for /ws (CONFIG, BROADCAST, VIEWERS must be set)."""
    config = app[CONFIG]
    app[WS_HUB] = WsHub(app[BROADCAST], app[VIEWERS], config.video.codec, config.limits)

    async def poller(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.ensure_future(app[WS_HUB].run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close_sockets(app: web.Application) -> None:
        # on_shutdown, not on_cleanup: open sockets are long-running handlers the server
        # would otherwise wait for before cleanup runs.
        await app[WS_HUB].close_all()

    app.cleanup_ctx.append(poller)
    app.on_shutdown.append(close_sockets)
    app.router.add_get("/ws", handle_ws)
