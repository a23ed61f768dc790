"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..config import Config
from .admission import Admission
from .auth import Authorizer
from .broadcast import Broadcast
from .viewers import Viewers

if TYPE_CHECKING:
    # ws.py imports this module; the hub's type is only needed by the type checker.
    from .looplag import LoopLag  # likewise: looplag.py imports this module
    from .ws import WsHub

CONFIG = web.AppKey("config", Config)
BROADCAST = web.AppKey("broadcast", Broadcast)
# Viewer sessions, in this process or in fan-out workers (viewers.py, pool.py).
VIEWERS: web.AppKey[Viewers] = web.AppKey("viewers")
# Tokens and signed links (auth.py); rate, capacity and shutdown gate for new viewers.
AUTH = web.AppKey("auth", Authorizer)
ADMISSION = web.AppKey("admission", Admission)
# Open /ws sockets, chat room and poller (broadcaster/server/ws.py).
WS_HUB: web.AppKey[WsHub] = web.AppKey("ws_hub")
# Event-loop lag sampler, started by looplag.loop_lag_ctx; read by /metrics.
LOOP_LAG: web.AppKey[LoopLag] = web.AppKey("loop_lag")
