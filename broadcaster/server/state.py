"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..config import Config
from .broadcast import Broadcast
from .session import ViewerRegistry

if TYPE_CHECKING:
    # ws.py imports this module; the hub's type is only needed by the type checker.
    from .ws import WsHub

CONFIG = web.AppKey("config", Config)
BROADCAST = web.AppKey("broadcast", Broadcast)
VIEWERS = web.AppKey("viewers", ViewerRegistry)
# Open /ws sockets, chat room and poller (broadcaster/server/ws.py).
WS_HUB: web.AppKey[WsHub] = web.AppKey("ws_hub")
