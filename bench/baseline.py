"""What the two comparison servers (stock_server.py, naive_server.py) share: their WHEP
teardown, the loop-lag endpoint the bench reads, VP8 codec preferences, app lifecycle.

Only how each one SENDS differs, which is what the bench compares.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCRtpSender

from broadcaster.server.looplag import LoopLag

PCS = web.AppKey("pcs", dict[str, RTCPeerConnection])
LAG = web.AppKey("lag", LoopLag)


def vp8_codecs() -> list[Any]:
    # The bitstream is VP8 (as the broadcaster's ladder), plus RTX; aiortc picks the
    # packetizer from the NEGOTIATED codec, so set it before setRemoteDescription.
    caps = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in caps if c.mimeType in ("video/VP8", "video/rtx")]


async def delete_whep(request: web.Request) -> web.Response:
    pc = request.app[PCS].pop(request.match_info["session_id"], None)
    if pc is None:
        return web.json_response({"error": "no such session"}, status=404)
    await pc.close()
    return web.Response(status=200)


async def bench_lag(request: web.Request) -> web.Response:
    lag = request.app[LAG]
    s = lag.summary()
    return web.json_response(
        {"p50": s.p50, "p99": s.p99, "max": s.max, "samples": s.samples, "window": lag.window}
    )


def base_app() -> web.Application:
    """Peer connections, loop lag, DELETE and /bench/lag; callers add the rest."""
    app = web.Application()
    app[PCS] = {}
    app[LAG] = LoopLag()

    async def start(app: web.Application) -> None:
        app[LAG].start()

    async def close_all(app: web.Application) -> None:
        await app[LAG].close()
        pcs = list(app[PCS].values())
        app[PCS].clear()
        await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)

    app.on_startup.append(start)
    app.on_shutdown.append(close_all)
    app.router.add_delete("/whep/{session_id}", delete_whep)
    app.router.add_get("/bench/lag", bench_lag)
    return app


async def wait_for_signal() -> None:
    """Until SIGINT or SIGTERM: the bench stops its servers by pid with SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
