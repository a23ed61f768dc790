"""A viewer's audio: one Opus stream, the same packets for everyone, on the fast path.

aiortc negotiates the audio m-line and sends its RTCP (sender reports, which carry the
capture clock that lets the browser line audio up with video); the packets themselves
go out through an ``outbound.ViewerOutput`` like video, without ABR: every viewer gets
the one encoding, and Opus at 64 kbit/s is a rounding error next to any video rung.
"""

from __future__ import annotations

import re

from aiortc import RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from ..bus.packet import AUDIO_CLOCK_RATE
from .outbound import ParkedTrack, ViewerOutput

# Bytes each audio packet adds on the wire besides its Opus payload: IPv4 20 + UDP 8 +
# RTP 12 + header extensions 8 + SRTP tag 10. At 50 packets a second that is ~23 kbit/s,
# a third of a 64 kbit/s stream, so the ABR counts it.
PACKET_OVERHEAD_BYTES = 58
PACKETS_PER_SECOND = 50

_AUDIO_LINE = re.compile(r"^m=audio ", re.MULTILINE)


def offers_audio(offer_sdp: str) -> bool:
    return _AUDIO_LINE.search(offer_sdp) is not None


def opus_preferences() -> list[RTCRtpCodecCapability]:
    return [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/opus"]


class AudioTrack(ParkedTrack):
    kind = "audio"


def audio_output(sender: RTCRtpSender, gso: bool) -> ViewerOutput:
    return ViewerOutput(
        sender,
        "opus",
        allow_retransmit=lambda _timestamp, _size: False,  # no NACK for Opus: FEC/PLC
        on_ready=lambda _stream: None,
        on_dropped=lambda _frames: None,
        gso=gso,
        clock_rate=AUDIO_CLOCK_RATE,
    )


def wire_bps(bitrate_kbps: int) -> float:
    """What one viewer's audio takes of its link."""
    return bitrate_kbps * 1000 + PACKET_OVERHEAD_BYTES * 8 * PACKETS_PER_SECOND


def wire_bytes(output: ViewerOutput) -> int:
    """Audio bytes sent to one viewer so far, headers included."""
    stream = output.stream
    return 0 if stream is None else stream.octets + stream.packets * PACKET_OVERHEAD_BYTES
