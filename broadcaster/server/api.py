"""Read-only JSON views of the broadcast for people and dashboards."""

from __future__ import annotations

from aiohttp import web

from .state import BROADCAST, VIEWERS


async def get_viewers(request: web.Request) -> web.Response:
    viewers = request.app[VIEWERS]
    # ?history=1: each viewer's last ~10 s of feedback snapshots (for diagnosis).
    described = await viewers.describe(request.query.get("history") == "1")
    return web.json_response(
        {"viewers": described, "switches": dict(request.app[BROADCAST].switches)}
    )
