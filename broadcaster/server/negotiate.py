"""The aiortc side of a WHEP offer: a viewer session with its fast-path output and ABR.

The same in the server process and in a fan-out worker (broadcaster/server/worker.py).
"""

from __future__ import annotations

import logging
import time

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.clock import current_ntp_time
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import candidate_from_sdp

from ..config import Config, IceServer
from . import rtc_internals
from .abr_controller import ViewerAbr
from .audio import (
    AudioTrack,
    audio_output,
    offers_audio,
    opus_preferences,
    wire_bps,
    wire_bytes,
)
from .broadcast import Broadcast
from .feedback import FeedbackCollector
from .ice import announce, rtc_configuration
from .outbound import ViewerOutput
from .rtp_stream import RtpStream
from .session import ViewerSession
from .switcher import SwitcherTrack

logger = logging.getLogger(__name__)


def codec_preferences(codec: str) -> list[RTCRtpCodecCapability]:
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


class OfferError(ValueError):
    pass


def new_session(
    config: Config, broadcast: Broadcast, servers: tuple[IceServer, ...]
) -> ViewerSession:
    pc = RTCPeerConnection(rtc_configuration(servers))
    switcher = SwitcherTrack(
        start_rung=0,
        request_keyframe=broadcast.request_keyframe,
        on_switch=broadcast.count_switch,
    )
    return ViewerSession(pc, switcher, broadcast)


def attach_output(session: ViewerSession, sender: RTCRtpSender, config: Config) -> None:
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
        gso=config.server.gso,
    )
    session.broadcast.subscribe(session.switcher, session.output)


def attach_abr(session: ViewerSession, sender: RTCRtpSender, config: Config) -> None:
    assert session.output is not None
    now = time.monotonic()
    feedback = FeedbackCollector(rtc_internals.sender_ssrc(sender), now)
    rtc_internals.hook_rtcp(sender, lambda packet: feedback.on_rtcp(packet, current_ntp_time()))
    ladder_bps = [r.bitrate_bps for r in config.ladder]
    session.abr = ViewerAbr(session.switcher, session.output, feedback, ladder_bps, config.abr, now)
    audio = session.audio_output
    if audio is not None:
        session.abr.audio_bps = wire_bps(config.audio.bitrate)
        session.abr.audio_bytes = lambda: wire_bytes(audio)


def add_audio(session: ViewerSession, config: Config) -> RTCRtpSender:
    """An audio sender on the fast path; its transceiver must exist before the offer is
    applied, or aiortc would make a receive-only one for the offer's audio m-line."""
    track = AudioTrack()
    sender = session.pc.addTrack(track)
    transceiver = next(t for t in session.pc.getTransceivers() if t.sender is sender)
    transceiver.setCodecPreferences(opus_preferences())
    session.audio_track = track
    session.audio_output = audio_output(sender, config.server.gso)
    session.broadcast.listen(session.audio_output)
    return sender


async def negotiate(session: ViewerSession, offer_sdp: str, config: Config) -> str:
    pc = session.pc
    audio_sender = (
        add_audio(session, config) if session.broadcast.audio and offers_audio(offer_sdp) else None
    )
    sender = pc.addTrack(session.switcher)
    rtc_internals.hook_keyframe_requests(sender, session.switcher.on_keyframe_request)
    attach_output(session, sender, config)
    attach_abr(session, sender, config)
    video = next(t for t in pc.getTransceivers() if t.sender is sender)
    # Must precede setRemoteDescription: aiortc ignores preferences set later.
    video.setCodecPreferences(codec_preferences(config.video.codec))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
    if video.mid is None:
        raise OfferError("offer's video m-line could not be matched")
    # A sendrecv offer would otherwise be answered sendrecv: the viewer's own video would
    # be decoded and queued on the server for a track nobody reads, without bound.
    video.direction = "sendonly"
    for t in pc.getTransceivers():
        if t is video:
            continue
        if audio_sender is not None and t.sender is audio_sender and t.mid is not None:
            t.direction = "sendonly"
        else:
            # A second audio or video m-line (or audio from a silent broadcast) gets
            # nothing: inactive.
            t.direction = "inactive"
    answer = await pc.createAnswer()
    await pc.setLocalDescription(answer)
    wanted = f"video/{config.video.codec}"
    if not any(m.lower() == wanted for m in rtc_internals.negotiated_mime_types(video)):
        raise OfferError(f"offer does not accept {config.video.codec.upper()} video")
    return announce(str(pc.localDescription.sdp), config.ice.announce)


async def apply_trickle(pc: RTCPeerConnection, frag: str) -> None:
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
