"""WHEP (draft-ietf-wish-whep): offer in, answer out, trickle, teardown, layer selection."""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.clock import current_ntp_time
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import candidate_from_sdp

from ..config import Config, IceServer
from . import rtc_internals
from .abr_controller import ViewerAbr
from .admission import Refusal
from .broadcast import Broadcast
from .errors import json_error
from .feedback import FeedbackCollector
from .ice import announce, ice_link_headers, ice_servers, rtc_configuration
from .offer_guard import check_offer, check_trickle
from .outbound import ViewerOutput
from .rtp_stream import RtpStream
from .session import ViewerSession
from .state import ADMISSION, AUTH, BROADCAST, CONFIG, VIEWERS
from .switcher import SwitcherTrack

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


def _codec_preferences(codec: str) -> list[RTCRtpCodecCapability]:
    """Our bitstream's codec (+ RTX): aiortc packetizes by the NEGOTIATED codec."""
    mime = {"vp8": "video/VP8", "h264": "video/H264"}[codec]
    out = []
    for c in RTCRtpSender.getCapabilities("video").codecs:
        if c.mimeType == mime:
            if codec == "h264" and c.parameters.get("packetization-mode") != "1":
                continue
            out.append(c)
        elif c.mimeType == "video/rtx":
            out.append(c)
    return out


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


def _session_or_404(request: web.Request) -> ViewerSession | web.Response:
    session = request.app[VIEWERS].get(request.match_info["session_id"])
    if session is None:
        return json_error(404, "no such session")
    return session


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
    broadcast = request.app[BROADCAST]
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
    if broadcast.error is not None:
        return json_error(503, f"broadcast unavailable: {broadcast.error}")

    servers = ice_servers(config, time.time())
    session = _new_session(config, broadcast, servers)
    try:
        answer = await _negotiate(session, offer_sdp, config)
    except _OfferError as exc:
        await session.close()
        return json_error(400, str(exc))
    except Exception as exc:  # aiortc raises many types on bad SDP; all are the client's fault
        await session.close()
        # The message may quote the offer's own lines: only the type above DEBUG.
        logger.info("rejected offer: %s", type(exc).__name__)
        logger.debug("rejected offer detail: %s", exc)
        return json_error(400, f"cannot use this offer ({type(exc).__name__}: {exc})")

    viewers = request.app[VIEWERS]
    viewers.add(session)
    session.start_watchdog(viewers)

    @session.pc.on("connectionstatechange")
    async def on_state() -> None:
        state = session.pc.connectionState
        logger.info("viewer %s: %s", session.public_id, state)
        if state in ("failed", "closed"):
            await viewers.close(session.id)

    location = f"/whep/{session.id}"
    links = ice_link_headers(servers) + [f'<{location}/layer>; rel="{LAYER_REL}"']
    headers: dict[str, Any] = {
        "Location": location,
        "Content-Type": SDP,
        "Accept-Patch": TRICKLE,
        "ETag": f'"{session.id}"',
    }
    response = web.Response(status=201, text=answer, headers=headers)
    response.headers.pop("Content-Type")
    response.content_type = SDP
    for link in links:
        response.headers.add("Link", link)
    logger.info("viewer %s joined (%d viewers)", session.public_id, len(viewers))
    return response


class _OfferError(ValueError):
    pass


def _new_session(
    config: Config, broadcast: Broadcast, servers: tuple[IceServer, ...]
) -> ViewerSession:
    pc = RTCPeerConnection(rtc_configuration(servers))
    switcher = SwitcherTrack(
        start_rung=0,
        request_keyframe=broadcast.request_keyframe,
        on_switch=broadcast.count_switch,
    )
    return ViewerSession(pc, switcher, broadcast)


def _attach_output(session: ViewerSession, sender: RTCRtpSender, config: Config) -> None:
    """The viewer's video goes out on the fast path once DTLS is up."""

    def ready(stream: RtpStream) -> None:
        session.rtp_origin = stream.rtp_origin
        # Whatever keyframe came while it connected is gone: it starts at the next one.
        session.switcher.restart()

    session.output = ViewerOutput(
        sender,
        config.video.codec,
        allow_retransmit=session.retransmit,
        on_ready=ready,
        on_dropped=session.switcher.restart,
    )
    session.broadcast.subscribe(session.switcher, session.output)


def _attach_abr(session: ViewerSession, sender: RTCRtpSender, config: Config) -> None:
    assert session.output is not None
    now = time.monotonic()
    feedback = FeedbackCollector(rtc_internals.sender_ssrc(sender), now)
    rtc_internals.hook_rtcp(sender, lambda packet: feedback.on_rtcp(packet, current_ntp_time()))
    ladder_bps = [r.bitrate_bps for r in config.ladder]
    session.abr = ViewerAbr(session.switcher, session.output, feedback, ladder_bps, config.abr, now)


async def _negotiate(session: ViewerSession, offer_sdp: str, config: Config) -> str:
    pc = session.pc
    sender = pc.addTrack(session.switcher)
    rtc_internals.hook_keyframe_requests(sender, session.switcher.on_keyframe_request)
    _attach_output(session, sender, config)
    _attach_abr(session, sender, config)
    video = next(t for t in pc.getTransceivers() if t.sender is sender)
    # Must precede setRemoteDescription: aiortc ignores preferences set later.
    video.setCodecPreferences(_codec_preferences(config.video.codec))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
    if video.mid is None:
        raise _OfferError("offer's video m-line could not be matched")
    # A sendrecv offer would otherwise be answered sendrecv: the viewer's own video would
    # be decoded and queued on the server for a track nobody reads, without bound.
    video.direction = "sendonly"
    for t in pc.getTransceivers():
        if t is not video:
            # Audio (and anything else) is answered inactive until we can serve it.
            t.direction = "inactive"
    answer = await pc.createAnswer()
    await pc.setLocalDescription(answer)
    wanted = f"video/{config.video.codec}"
    if not any(m.lower() == wanted for m in rtc_internals.negotiated_mime_types(video)):
        raise _OfferError(f"offer does not accept {config.video.codec.upper()} video")
    return announce(str(pc.localDescription.sdp), config.ice.announce)


async def patch_whep(request: web.Request) -> web.Response:
    found = _session_or_404(request)
    if isinstance(found, web.Response):
        return found
    if request.content_type != TRICKLE:
        return json_error(415, f"Content-Type must be {TRICKLE}")
    text = (await request.content.read(MAX_OFFER_BYTES + 1)).decode("utf-8", "replace")
    if len(text) > MAX_OFFER_BYTES:
        return json_error(413, "fragment too large")
    problem = check_trickle(text, found.remote_candidates)
    if problem is not None:
        return json_error(400, problem)
    try:
        await _apply_trickle(found.pc, text)
    except (AssertionError, ValueError, IndexError) as exc:
        return json_error(400, f"bad candidate: {exc}")
    return web.Response(status=204)


async def _apply_trickle(pc: RTCPeerConnection, frag: str) -> None:
    mid: str | None = None
    for raw in frag.splitlines():
        line = raw.strip()
        if line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        elif line.startswith("a=candidate:"):
            candidate = candidate_from_sdp(line[len("a=candidate:") :])
            candidate.sdpMid = mid
            if mid is None:
                candidate.sdpMLineIndex = 0
            await pc.addIceCandidate(candidate)
        elif line == "a=end-of-candidates":
            await pc.addIceCandidate(None)


async def delete_whep(request: web.Request) -> web.Response:
    viewers = request.app[VIEWERS]
    if not await viewers.close(request.match_info["session_id"]):
        return json_error(404, "no such session")
    return web.Response(status=200)


async def post_layer(request: web.Request) -> web.Response:
    found = _session_or_404(request)
    if isinstance(found, web.Response):
        return found
    broadcast = request.app[BROADCAST]
    names = [r.name for r in broadcast.ladder]
    try:
        body = await request.json()
    except ValueError:
        return json_error(400, "body must be JSON", valid=["auto", *names])
    encoding = body.get("encodingId") if isinstance(body, dict) else None
    if encoding == "auto":
        found.unpin()
    else:
        index = broadcast.rung_index(encoding) if isinstance(encoding, str) else None
        if index is None:
            return json_error(400, f"unknown encodingId {encoding!r}", valid=["auto", *names])
        if not broadcast.rung_available(index):
            valid = ["auto", *broadcast.available_rung_names()]
            return json_error(
                409, f"rung {encoding!r} is unavailable: its encoder failed", valid=valid
            )
        found.pin(index)
    return web.json_response({"encodingId": encoding, "mode": found.mode})


def add_routes(app: web.Application) -> None:
    app.router.add_route("OPTIONS", "/whep", options_whep)
    app.router.add_post("/whep", post_whep)
    app.router.add_route("PATCH", "/whep/{session_id}", patch_whep)
    app.router.add_delete("/whep/{session_id}", delete_whep)
    app.router.add_route("OPTIONS", "/whep/{session_id}", options_whep)
    app.router.add_post("/whep/{session_id}/layer", post_layer)
    app.router.add_route("OPTIONS", "/whep/{session_id}/layer", options_whep)
