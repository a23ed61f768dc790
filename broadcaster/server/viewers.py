"""Viewer sessions as the HTTP side sees them: open, trickle, pick a layer, close, describe.

Two implementations behind one interface (``Viewers``): ``LocalViewers`` keeps the
sessions in this process; ``pool.WorkerPool`` keeps them in fan-out worker processes and
mirrors what the WebSocket and the API need. whep.py, ws.py and api.py use only the
interface, so they work the same whichever process holds a viewer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config import Config, IceServer
from .abr_controller import ViewerAbr
from .broadcast import Broadcast
from .describe import viewer_json
from .negotiate import OfferError, apply_trickle, negotiate, new_session
from .offer_guard import check_trickle
from .session import ViewerRegistry, ViewerSession

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """An answer for the HTTP side: a status and, for anything but 2xx-without-body, JSON."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)


class OfferRejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class SessionView(Protocol):
    """What the page's WebSocket needs of a session, wherever it lives."""

    @property
    def id(self) -> str: ...
    @property
    def public_id(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def rtp_origin(self) -> int | None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def rung_index(self) -> int | None: ...
    @property
    def target_index(self) -> int: ...


class Viewers(Protocol):
    def __len__(self) -> int: ...
    def get(self, session_id: str) -> SessionView | None: ...
    async def open(self, offer_sdp: str, servers: tuple[IceServer, ...]) -> tuple[str, str]: ...
    async def trickle(self, session_id: str, frag: str) -> Reply: ...
    async def layer(self, session_id: str, body: object) -> Reply: ...
    async def close(self, session_id: str) -> bool: ...
    async def close_all(self) -> None: ...
    async def describe(self, history: bool) -> list[dict[str, Any]]: ...
    def abrs(self) -> list[ViewerAbr]: ...


NO_SESSION = Reply(404, {"error": "no such session"})


def choose_layer(session: ViewerSession, broadcast: Broadcast, body: object) -> Reply:
    """POST /whep/{id}/layer's body -> pin a rung or hand the choice back to the policy."""
    names = [r.name for r in broadcast.ladder]
    encoding = body.get("encodingId") if isinstance(body, dict) else None
    if encoding == "auto":
        session.unpin()
        return Reply(200, {"encodingId": encoding, "mode": session.mode})
    index = broadcast.rung_index(encoding) if isinstance(encoding, str) else None
    if index is None:
        return Reply(400, {"error": f"unknown encodingId {encoding!r}", "valid": ["auto", *names]})
    if not broadcast.rung_available(index):
        return Reply(
            409,
            {
                "error": f"rung {encoding!r} is unavailable: its encoder failed",
                "valid": ["auto", *broadcast.available_rung_names()],
            },
        )
    session.pin(index)
    return Reply(200, {"encodingId": encoding, "mode": session.mode})


class LocalViewers(ViewerRegistry):
    """Sessions in this process, fed by this process's broadcast."""

    def __init__(self, config: Config, broadcast: Broadcast) -> None:
        super().__init__()
        self.config = config
        self.broadcast = broadcast

    async def open(self, offer_sdp: str, servers: tuple[IceServer, ...]) -> tuple[str, str]:
        if self.broadcast.error is not None:
            raise OfferRejected(503, f"broadcast unavailable: {self.broadcast.error}")
        session = new_session(self.config, self.broadcast, servers)
        try:
            answer = await negotiate(session, offer_sdp, self.config)
        except OfferError as exc:
            await session.close()
            raise OfferRejected(400, str(exc)) from None
        except Exception as exc:  # aiortc raises many types on bad SDP: the client's fault
            await session.close()
            # The message may quote the offer's own lines: only the type above DEBUG.
            logger.info("rejected offer: %s", type(exc).__name__)
            logger.debug("rejected offer detail: %s", exc)
            raise OfferRejected(
                400, f"cannot use this offer ({type(exc).__name__}: {exc})"
            ) from None
        self.add(session)
        session.start_watchdog(self)

        @session.pc.on("connectionstatechange")
        async def on_state() -> None:
            state = session.pc.connectionState
            logger.info("viewer %s: %s", session.public_id, state)
            if state in ("failed", "closed"):
                await self.close(session.id)

        logger.info("viewer %s joined (%d viewers)", session.public_id, len(self))
        return session.id, answer

    async def trickle(self, session_id: str, frag: str) -> Reply:
        session = self.get(session_id)
        if session is None:
            return NO_SESSION
        problem = check_trickle(frag, session.remote_candidates)
        if problem is not None:
            return Reply(400, {"error": problem})
        try:
            await apply_trickle(session.pc, frag)
        except (AssertionError, ValueError, IndexError) as exc:
            return Reply(400, {"error": f"bad candidate: {exc}"})
        return Reply(204)

    async def layer(self, session_id: str, body: object) -> Reply:
        session = self.get(session_id)
        if session is None:
            return NO_SESSION
        return choose_layer(session, self.broadcast, body)

    async def describe(self, history: bool) -> list[dict[str, Any]]:
        return [viewer_json(s, history) for s in self]
