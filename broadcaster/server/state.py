"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from aiohttp import web

from ..config import Config
from .broadcast import Broadcast
from .session import ViewerRegistry

CONFIG = web.AppKey("config", Config)
BROADCAST = web.AppKey("broadcast", Broadcast)
VIEWERS = web.AppKey("viewers", ViewerRegistry)
