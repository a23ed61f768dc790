"""The aiohttp application: viewer page, WHEP, health, metrics, ladder."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from ..config import Config
from . import api, looplag, metrics, rtc_internals, whep, ws
from .abr_controller import run_controller
from .admission import Admission
from .auth import Authorizer, Scope
from .broadcast import Broadcast
from .ice import host_addresses
from .pool import WorkerPool
from .state import ADMISSION, AUTH, BROADCAST, CONFIG, LOOP_LAG, VIEWERS, WS_HUB
from .viewers import LocalViewers, Viewers

logger = logging.getLogger(__name__)


def find_viewer_dir() -> Path:
    """viewer/ beside the package (source checkout / editable install) or in the cwd."""
    for candidate in (Path(__file__).resolve().parents[2] / "viewer", Path.cwd() / "viewer"):
        if (candidate / "index.html").is_file():
            return candidate
    raise FileNotFoundError("viewer/index.html not found (run from the project checkout)")


async def healthz(request: web.Request) -> web.Response:
    broadcast = request.app[BROADCAST]
    body = {
        "status": "ok" if broadcast.healthy else ("error" if broadcast.error else "starting"),
        "viewers": len(request.app[VIEWERS]),
        "frames": broadcast.framesets,
        **broadcast.health_fields(),
    }
    if broadcast.error:
        body["error"] = broadcast.error
    return web.json_response(body, status=200 if broadcast.healthy else 503)


async def get_metrics(request: web.Request) -> web.Response:
    viewers = request.app[VIEWERS]
    workers = viewers.stats() if isinstance(viewers, WorkerPool) else None
    text = metrics.render(request.app[BROADCAST], len(viewers), request.app.get(LOOP_LAG), workers)
    return web.Response(
        text=text,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Prometheus-Format": "0.0.4"},
    )


async def get_ladder(request: web.Request) -> web.Response:
    ladder = request.app[CONFIG].ladder
    broadcast = request.app[BROADCAST]
    return web.json_response(
        {
            "codec": request.app[CONFIG].video.codec,
            "rungs": [
                {
                    "name": r.name,
                    "width": r.width,
                    "height": r.height,
                    "fps": r.fps,
                    "bitrate": r.bitrate,
                    "available": broadcast.rung_available(i),
                }
                for i, r in enumerate(ladder)
            ],
        }
    )


def protected(scope: Scope, handler: Handler) -> Handler:
    """``handler`` behind a bearer token of ``scope`` (when auth for it is configured)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        denied = request.app[AUTH].refuse(request, scope, time.time())
        return denied if denied is not None else await handler(request)

    return guarded


def create_app(
    config: Config,
    broadcast: Broadcast,
    viewer_dir: Path | None = None,
    viewers: Viewers | None = None,
) -> web.Application:
    """The application; ``viewers`` holds the sessions elsewhere (a worker pool), else
    they live in this process."""
    rtc_internals.check_compatible()
    rtc_internals.use_host_addresses(host_addresses(config))
    rtc_internals.use_port_range(config.ice.port_min, config.ice.port_max)
    app = web.Application(client_max_size=1024 * 1024, middlewares=[whep.cors])
    app[CONFIG] = config
    app[BROADCAST] = broadcast
    app[VIEWERS] = viewers if viewers is not None else LocalViewers(config, broadcast)
    app[AUTH] = Authorizer(config.auth)
    app[ADMISSION] = Admission(config.limits)

    async def close_viewers(app: web.Application) -> None:
        # Shutdown order: refuse new viewers, tell every page the stream ended (so it
        # shows "ended" rather than reconnecting when its peer connection closes), close
        # the sessions; ws.py then closes the sockets.
        app[ADMISSION].draining = True
        app[WS_HUB].announce_ended()
        await app[VIEWERS].close_all()

    app.on_shutdown.append(close_viewers)

    async def abr_controller(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.ensure_future(run_controller(app[VIEWERS].abrs))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(abr_controller)
    app.cleanup_ctx.append(looplag.loop_lag_ctx)
    whep.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", protected("control", get_metrics))
    app.router.add_get("/api/ladder", get_ladder)
    app.router.add_get("/api/viewers", protected("control", api.get_viewers))
    ws.setup(app)  # /ws: its route, poller, and closing every socket on shutdown
    static = viewer_dir or find_viewer_dir()

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(static / "index.html")

    app.router.add_get("/", index)
    app.router.add_static("/viewer/", static)
    return app
