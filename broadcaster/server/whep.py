"""WHEP (draft-ietf-wish-whep): offer in, answer out, trickle, teardown, layer selection."""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .admission import Refusal
from .errors import json_error
from .ice import ice_link_headers, ice_servers
from .offer_guard import check_offer
from .state import ADMISSION, AUTH, BROADCAST, CONFIG, VIEWERS
from .viewers import OfferRejected, Reply

logger = logging.getLogger(__name__)

SDP = "application/sdp"
TRICKLE = "application/trickle-ice-sdpfrag"
LAYER_REL = "urn:ietf:params:whep:ext:core:layer"
MAX_OFFER_BYTES = 64 * 1024
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "OPTIONS, POST, PATCH, DELETE",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, If-Match",
    "Access-Control-Expose-Headers": "Location, Link, ETag, Accept-Patch",
}


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """WHEP players run on other origins: every WHEP answer, errors included, is readable."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    if request.path.startswith("/whep"):
        response.headers.update(CORS)
    if isinstance(response, web.HTTPException):
        raise response
    return response


async def options_whep(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"Accept-Post": SDP})


def _refused(refusal: Refusal) -> web.Response:
    return json_error(
        refusal.status, refusal.reason, headers={"Retry-After": str(refusal.retry_after)}
    )


def _gate(request: web.Request) -> web.Response | None:
    """Rate, then token, then capacity: every refusal before a peer connection exists."""
    admission = request.app[ADMISSION]
    refusal = admission.check_rate(request.remote or "", time.monotonic())
    if refusal is not None:
        return _refused(refusal)
    denied = request.app[AUTH].refuse(request, "view", time.time())
    if denied is not None:
        return denied
    refusal = admission.check_capacity(len(request.app[VIEWERS]))
    if refusal is not None:
        return _refused(refusal)
    return None


async def post_whep(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    refused = _gate(request)
    if refused is not None:
        return refused
    if request.content_type != SDP:
        return json_error(415, f"Content-Type must be {SDP}")
    if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
        return json_error(413, f"offer larger than {MAX_OFFER_BYTES} bytes")
    body = await request.content.read(MAX_OFFER_BYTES + 1)
    if len(body) > MAX_OFFER_BYTES:
        return json_error(413, f"offer larger than {MAX_OFFER_BYTES} bytes")
    try:
        offer_sdp = body.decode("utf-8")
    except UnicodeDecodeError:
        return json_error(400, "offer is not UTF-8 text")
    problem = check_offer(offer_sdp)
    if problem is not None:
        return json_error(400, problem)
    servers = ice_servers(config, time.time())
    viewers = request.app[VIEWERS]
    try:
        session_id, answer = await viewers.open(offer_sdp, servers)
    except OfferRejected as exc:
        return json_error(exc.status, exc.reason)

    location = f"/whep/{session_id}"
    links = ice_link_headers(servers) + [f'<{location}/layer>; rel="{LAYER_REL}"']
    headers: dict[str, Any] = {
        "Location": location,
        "Content-Type": SDP,
        "Accept-Patch": TRICKLE,
        "ETag": f'"{session_id}"',
    }
    response = web.Response(status=201, text=answer, headers=headers)
    response.headers.pop("Content-Type")
    response.content_type = SDP
    for link in links:
        response.headers.add("Link", link)
    return response


def _reply(reply: Reply) -> web.Response:
    if reply.status == 204:
        return web.Response(status=204)
    return web.json_response(reply.body, status=reply.status)


async def patch_whep(request: web.Request) -> web.Response:
    if request.app[VIEWERS].get(request.match_info["session_id"]) is None:
        return json_error(404, "no such session")
    if request.content_type != TRICKLE:
        return json_error(415, f"Content-Type must be {TRICKLE}")
    text = (await request.content.read(MAX_OFFER_BYTES + 1)).decode("utf-8", "replace")
    if len(text) > MAX_OFFER_BYTES:
        return json_error(413, "fragment too large")
    return _reply(await request.app[VIEWERS].trickle(request.match_info["session_id"], text))


async def delete_whep(request: web.Request) -> web.Response:
    viewers = request.app[VIEWERS]
    if not await viewers.close(request.match_info["session_id"]):
        return json_error(404, "no such session")
    return web.Response(status=200)


async def post_layer(request: web.Request) -> web.Response:
    viewers = request.app[VIEWERS]
    session_id = request.match_info["session_id"]
    if viewers.get(session_id) is None:
        return json_error(404, "no such session")
    try:
        body = await request.json()
    except ValueError:
        names = [r.name for r in request.app[BROADCAST].ladder]
        return json_error(400, "body must be JSON", valid=["auto", *names])
    return _reply(await viewers.layer(session_id, body))


def add_routes(app: web.Application) -> None:
    app.router.add_route("OPTIONS", "/whep", options_whep)
    app.router.add_post("/whep", post_whep)
    app.router.add_route("PATCH", "/whep/{session_id}", patch_whep)
    app.router.add_delete("/whep/{session_id}", delete_whep)
    app.router.add_route("OPTIONS", "/whep/{session_id}", options_whep)
    app.router.add_post("/whep/{session_id}/layer", post_layer)
    app.router.add_route("OPTIONS", "/whep/{session_id}/layer", options_whep)
