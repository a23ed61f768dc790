"""One viewer's video output on the fan-out fast path.

Ties the pure RtpStream (numbering, history, RTX, probes) to the viewer's aiortc sender:
the sender negotiates, receives RTCP and sends reports; this object sends the media,
answers NACKs from its own history and sends probe padding. It becomes ``ready`` when
aiortc starts the sender (DTLS is up), which is when the negotiated payload types,
header extension ids and MID are known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpSender
from aiortc.clock import current_ntp_time
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpSendParameters

from . import rtc_internals
from .rtp_stream import RtpStream, SharedFrame, StreamParams

logger = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90_000
# NTP time (RFC 5905: seconds since 1900, 32.32 fixed point) to Unix seconds.
NTP_SECOND = 1 / (1 << 32)
NTP_UNIX_OFFSET = 2_208_988_800

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"

# (RTP timestamp, payload bytes) of a NACKed packet -> resend it?
RetransmitFilter = Callable[[int, int], bool]


def stream_params(
    parameters: RTCRtpSendParameters, ssrc: int, rtx_ssrc: int, codec: str
) -> StreamParams:
    """What a negotiation settled, in the form the fast path writes it."""
    primary = parameters.codecs[0]
    if primary.payloadType is None:
        raise ValueError("negotiated codec has no payload type")
    rtx_pt = next(
        (
            c.payloadType
            for c in parameters.codecs
            if c.mimeType.lower() == "video/rtx"
            and str(c.parameters.get("apt")) == str(primary.payloadType)
        ),
        None,
    )
    ids = {e.uri: e.id for e in parameters.headerExtensions}
    return StreamParams(
        ssrc=ssrc,
        payload_type=primary.payloadType,
        codec=codec,
        mid=parameters.muxId or None,
        mid_ext=ids.get(MID_URI),
        abs_send_time_ext=ids.get(ABS_SEND_TIME_URI),
        rtx_ssrc=rtx_ssrc if rtx_pt is not None else None,
        rtx_payload_type=rtx_pt,
    )


def rtp_time_at(ntp: int, timestamp: int, wall: float, clock_rate: int) -> int:
    """The RTP time of the instant ``ntp`` (NTP format), for a stream whose packet stamped
    ``timestamp`` was captured at ``wall`` (Unix seconds; 0: unknown, stays as is).

    Sender reports pair a send time with the RTP time of that same instant, not with the
    capture time of the last frame: audio and video then map onto one timeline whatever
    their pipeline delays, which is what the browser lines them up by."""
    if not wall:
        return timestamp
    ahead = round((ntp * NTP_SECOND - NTP_UNIX_OFFSET - wall) * clock_rate)
    return (timestamp + ahead) & 0xFFFFFFFF


class ParkedTrack(MediaStreamTrack):
    """The track aiortc's sender is given on the fast path: it never yields a frame, so
    aiortc's own send loop waits in ``recv`` until the track stops (the media goes out
    through ViewerOutput instead)."""

    def __init__(self) -> None:
        super().__init__()
        self._stopped = asyncio.Event()

    async def recv(self) -> Any:
        await self._stopped.wait()
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        self._stopped.set()


class ViewerOutput:
    def __init__(
        self,
        sender: RTCRtpSender,
        codec: str,
        allow_retransmit: RetransmitFilter,
        on_ready: Callable[[RtpStream], None],
        on_dropped: Callable[[int], None],
        gso: bool = True,
        clock_rate: int = VIDEO_CLOCK_RATE,
    ) -> None:
        self._sender = sender
        self._codec = codec
        self._allow = allow_retransmit
        self._on_ready = on_ready
        self._on_dropped = on_dropped
        self._gso = gso
        self._clock_rate = clock_rate
        self.stream: RtpStream | None = None
        self._transport: rtc_internals.DirectTransport | None = None
        self.closed = False
        self.send_errors = 0
        rtc_internals.on_sender_started(sender, self._start)
        rtc_internals.replace_retransmit(sender, self._on_nack)

    def _start(self, parameters: RTCRtpSendParameters) -> None:
        if self.closed or self.stream is not None:
            return
        params = stream_params(
            parameters,
            rtc_internals.sender_ssrc(self._sender),
            rtc_internals.sender_rtx_ssrc(self._sender),
            self._codec,
        )
        self._transport = rtc_internals.DirectTransport(self._sender, self._gso)
        self.stream = RtpStream(params, self._transport.send)
        self._on_ready(self.stream)

    @property
    def ready(self) -> bool:
        return self.stream is not None and not self.closed

    def send_frame(self, frame: SharedFrame, ntp: int) -> int:
        stream = self.stream
        if stream is None or self.closed:
            return 0
        try:
            sent = stream.send_frame(frame, ntp)
        except ConnectionError:
            # The connection is closing under us; its session is about to be released.
            self.send_errors += 1
            return 0
        assert stream.last_timestamp is not None
        timestamp = rtp_time_at(ntp, stream.last_timestamp, frame.wall, self._clock_rate)
        rtc_internals.record_sent(self._sender, ntp, timestamp, stream.packets, stream.octets)
        return sent

    def dropped(self, frames: int) -> None:
        self._on_dropped(frames)

    def _on_nack(self, seq: int) -> None:
        stream = self.stream
        if stream is None or self.closed:
            return
        found = stream.lookup(seq)
        if found is None or not self._allow(*found):
            return
        try:
            stream.retransmit(seq, current_ntp_time())
        except ConnectionError:
            self.send_errors += 1

    # ------------------------------------------------------------ the ABR's prober

    @property
    def available(self) -> bool:
        """Probing needs negotiated RTX (padding the receiver drops as duplicates)."""
        return self.stream is not None and self.stream.params.rtx_payload_type is not None

    @property
    def bytes_sent(self) -> int:
        return self.stream.probe_bytes if self.stream is not None else 0

    async def send(self, budget: int) -> int:
        if self.stream is None or self.closed:
            return 0
        try:
            return self.stream.probe(budget, current_ntp_time())
        except ConnectionError:
            return 0

    async def measure_rtt(self) -> bool:
        return await rtc_internals.send_sender_report(self._sender)

    def close(self) -> None:
        self.closed = True
