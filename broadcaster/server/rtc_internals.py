"""The ONLY module that touches aiortc/aioice private names.

aiortc hides what a broadcaster needs: keyframe requests (PLI/FIR only set a flag that
the pre-encoded path never reads), the raw RTCP a viewer sends (REMB is not exposed),
which addresses ICE gathers on, and a way to send already-packetized RTP without one
coroutine per viewer and packet (the fan-out fast path: DirectTransport, record_sent,
replace_retransmit, on_sender_started). Each hook here is small, checked by ``check_compatible()``
at startup and by tests/unit/test_rtc_internals.py, so an aiortc upgrade that moves these
names fails loudly instead of silently losing keyframe requests.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aioice.ice
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver
from aiortc.clock import current_ntp_time
from aiortc.codecs.h264 import H264Encoder
from aiortc.exceptions import InvalidStateError
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket
from pylibsrtp import ERRORS as SRTP_ERRORS
from pylibsrtp import SRTP_MAX_TRAILER_LEN, Session
from pylibsrtp import Error as SrtpError
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

logger = logging.getLogger(__name__)

_original_get_host_addresses = aioice.ice.get_host_addresses
_original_component_candidates = aioice.ice.Connection.get_component_candidates


def check_compatible() -> None:
    """Raise RuntimeError if the aiortc/aioice internals we hook have moved."""
    missing = [
        f"RTCRtpSender.{name}"
        for name in ("_send_keyframe", "_handle_rtcp_packet", "_retransmit")
        if not callable(getattr(RTCRtpSender, name, None))
    ]
    for name in ("get_host_addresses", "server_reflexive_candidate", "StunProtocol"):
        if not callable(getattr(aioice.ice, name, None)):
            missing.append(f"aioice.ice.{name}")
    if not callable(getattr(aioice.ice.Connection, "get_component_candidates", None)):
        missing.append("aioice.ice.Connection.get_component_candidates")
    for name in (_CONNECT, _CREATE_TRANSCEIVER):
        if not callable(getattr(RTCPeerConnection, name, None)):
            missing.append(f"RTCPeerConnection.{name}")
    for name in ("_split_bitstream", "_packetize"):
        if not callable(getattr(H264Encoder, name, None)):
            missing.append(f"H264Encoder.{name}")
    if not hasattr(DtlsState, "CONNECTED"):
        missing.append("rtcdtlstransport.State.CONNECTED")
    if missing:
        raise RuntimeError(f"aiortc internals changed; missing: {', '.join(missing)}")


# The private coroutine that starts ICE and DTLS for each transceiver (name-mangled).
_CONNECT = "_RTCPeerConnection__connect"


def quiet_connect_after_close(pc: RTCPeerConnection) -> None:
    """Let ``pc``'s connect task end quietly when the connection is closed under it.

    setRemoteDescription and setLocalDescription each start aiortc's ``__connect`` as a
    task nobody awaits. It starts ICE transceiver by transceiver; when the connection is
    closed while it waits on one (a DELETE or a shutdown during ICE), it goes on to the
    next, whose transport - its own when the offer was not BUNDLEd - is already closed,
    and dies with InvalidStateError: "Task exception was never retrieved" and a traceback
    in the log. Found by tests/integration/test_offer_corpus.py.
    """
    original: Callable[[], Awaitable[None]] = getattr(pc, _CONNECT)

    async def connect() -> None:
        try:
            await original()
        except InvalidStateError:
            if pc.signalingState != "closed":  # close() sets this first, synchronously
                raise

    # Instance attribute: only our server's connections change, not aiortc's class.
    setattr(pc, _CONNECT, connect)


_CREATE_TRANSCEIVER = "_RTCPeerConnection__createTransceiver"
_ESTIMATOR = "_RTCRtpReceiver__remote_bitrate_estimator"


def skip_receive_estimation(pc: RTCPeerConnection) -> None:
    """Drop the receive-side bandwidth estimator from every transceiver ``pc`` creates.

    aiortc gives each video receiver a RemoteBitrateEstimator whose 1 s window is 1000
    RateBucket objects. The server never receives video, yet each viewer session carried
    those 1000 GC-tracked objects: full collections walked them for every live viewer,
    and a closed session (a reference cycle, like all of aiortc) left them for a gen-2
    pass to free all at once. With offers arriving that made 100-250 ms event-loop
    stalls (tests/integration/test_offer_corpus.py). With no estimator aiortc just sends
    no REMB for incoming video, as it does for audio.
    """
    original: Callable[..., RTCRtpTransceiver] = getattr(pc, _CREATE_TRANSCEIVER)

    def create(*args: Any, **kwargs: Any) -> RTCRtpTransceiver:
        transceiver = original(*args, **kwargs)
        if getattr(transceiver.receiver, _ESTIMATOR, None) is not None:
            setattr(transceiver.receiver, _ESTIMATOR, None)
        return transceiver

    setattr(pc, _CREATE_TRANSCEIVER, create)


def hook_keyframe_requests(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` on every PLI/FIR the viewer sends for this sender."""
    # RTCRtpSender._handle_rtcp_packet calls self._send_keyframe() for PLI and FIR.
    sender._send_keyframe = callback  # type: ignore[method-assign]


RtcpCallback = Callable[[Any], None]


def hook_rtcp(sender: RTCRtpSender, callback: RtcpCallback) -> None:
    """Let ``callback`` see every RTCP packet routed to this sender (RR, REMB, NACK, PLI).

    The callback must not raise; if it does, the error is logged and RTCP handling goes on.
    """
    original: Callable[[Any], Awaitable[None]] = sender._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        try:
            callback(packet)
        except Exception:
            logger.exception("RTCP observer failed")
        await original(packet)

    sender._handle_rtcp_packet = handle  # type: ignore[method-assign]


def negotiated_mime_types(transceiver: RTCRtpTransceiver) -> list[str]:
    """Codecs the last negotiation settled on for this transceiver (empty before)."""
    return [c.mimeType for c in getattr(transceiver, "_codecs", None) or []]


def sender_ssrc(sender: RTCRtpSender) -> int:
    return int(sender._ssrc)


def use_host_addresses(addresses: list[str] | None) -> None:
    """Gather ICE host candidates on exactly ``addresses`` (None: aioice's default).

    aioice leaves 127.0.0.1 out by default, so a server on loopback would offer no
    candidate a local browser can reach directly.
    """
    if addresses is None:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    fixed = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


async def _bind_in_range(
    connection: aioice.ice.Connection, address: str, ports: range
) -> aioice.ice.StunProtocol | None:
    loop = asyncio.get_running_loop()
    # Start at a random port so concurrent viewers don't all race for the lowest one.
    start = random.randrange(len(ports))
    for i in range(len(ports)):
        port = ports[(start + i) % len(ports)]
        try:
            _, protocol = await loop.create_datagram_endpoint(
                lambda: aioice.ice.StunProtocol(connection), local_addr=(address, port)
            )
        except OSError:
            continue
        return protocol
    logger.warning("no free UDP port in %d-%d on %s", ports[0], ports[-1], address)
    return None


def use_port_range(port_min: int, port_max: int) -> None:
    """Bind ICE host candidates inside [port_min, port_max] (0, 0: any port).

    A container or firewall publishes a fixed UDP range; aioice always binds port 0.
    Host candidates are made here; server-reflexive and relayed ones still come from
    aioice (STUN is asked from our bound sockets, TURN allocates its own).
    """
    if not port_min:
        aioice.ice.Connection.get_component_candidates = _original_component_candidates  # type: ignore[method-assign]
        return
    ports = range(port_min, port_max + 1)

    async def get_component_candidates(
        self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5
    ) -> list[Candidate]:
        candidates: list[Candidate] = []
        for address in addresses:
            protocol = await _bind_in_range(self, address, ports)
            if protocol is None:
                continue
            host, port = protocol.transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            candidates.append(protocol.local_candidate)
            self._protocols.append(protocol)
        if self.stun_server:
            hosts = [p for p in self._protocols if p.local_candidate in candidates]
            found = await asyncio.gather(
                *(aioice.ice.server_reflexive_candidate(p, self.stun_server) for p in hosts),
                return_exceptions=True,
            )
            candidates += [r[0] for r in found if isinstance(r, tuple)]
        # TURN relays (if configured) are aioice's business: no host addresses -> relay only.
        return candidates + await _original_component_candidates(self, component, [], timeout)

    aioice.ice.Connection.get_component_candidates = get_component_candidates  # type: ignore[method-assign]


async def send_sender_report(sender: RTCRtpSender, clock_rate: int = 90_000) -> bool:
    """Send an RTCP sender report now (aiortc sends one every 0.5-1.5 s on its own).

    The viewer answers with its next receiver report, whose LSR/DLSR give a fresh RTT:
    during a probe that is how a queue building at the bottleneck shows up before it
    overflows. The NTP/RTP pair is extrapolated from the last packet sent, so it stays
    consistent with aiortc's own reports.
    """
    s = sender
    last_ntp = int(getattr(s, "_RTCRtpSender__ntp_timestamp", 0))
    if not last_ntp:
        return False
    now_ntp = current_ntp_time()
    elapsed = max(0, now_ntp - last_ntp) / (1 << 32)
    rtp = (int(s._RTCRtpSender__rtp_timestamp) + int(elapsed * clock_rate)) & 0xFFFFFFFF  # type: ignore[attr-defined]
    report = RtcpSrPacket(
        ssrc=s._ssrc,
        sender_info=RtcpSenderInfo(
            ntp_timestamp=now_ntp,
            rtp_timestamp=rtp,
            packet_count=int(s._RTCRtpSender__packet_count) & 0xFFFFFFFF,  # type: ignore[attr-defined]
            octet_count=int(s._RTCRtpSender__octet_count) & 0xFFFFFFFF,  # type: ignore[attr-defined]
        ),
    )
    await s._send_rtcp([report])
    return True


# ---------------------------------------------------------------- fan-out fast path


def on_sender_started(
    sender: RTCRtpSender, callback: Callable[[RTCRtpSendParameters], None]
) -> None:
    """Call ``callback`` with the negotiated send parameters once ``sender`` starts (aiortc
    starts it when DTLS is up). They name the payload types, header extension ids and
    MID the fast path must write."""
    original: Callable[[RTCRtpSendParameters], Awaitable[None]] = sender.send

    async def send(parameters: RTCRtpSendParameters) -> None:
        await original(parameters)
        callback(parameters)

    sender.send = send  # type: ignore[method-assign]


def sender_rtx_ssrc(sender: RTCRtpSender) -> int:
    return int(sender._rtx_ssrc)


def replace_retransmit(sender: RTCRtpSender, retransmit: Callable[[int], None]) -> None:
    """NACKs go to ``retransmit(sequence_number)``: the fast path keeps its own history
    (aiortc's is empty, its send loop never runs)."""

    async def answer(sequence_number: int) -> None:
        retransmit(sequence_number)

    sender._retransmit = answer  # type: ignore[method-assign]


def record_sent(
    sender: RTCRtpSender, ntp: int, rtp_timestamp: int, packets: int, octets: int
) -> None:
    """What the fast path sent, where aiortc's sender reports (RTCP SR) and RTT estimate
    (LSR) look for it."""
    sender._RTCRtpSender__ntp_timestamp = ntp  # type: ignore[attr-defined]
    sender._RTCRtpSender__rtp_timestamp = rtp_timestamp  # type: ignore[attr-defined]
    sender._RTCRtpSender__packet_count = packets  # type: ignore[attr-defined]
    sender._RTCRtpSender__octet_count = octets  # type: ignore[attr-defined]


# UDP generic segmentation offload (Linux >= 4.18): one sendmsg() carries several
# datagrams to one address, all of one size but the last. A frame's packets to one
# viewer are exactly that, so each viewer costs one syscall per frame instead of one
# per packet (the syscall was most of the send cost).
SOL_UDP = 17
UDP_SEGMENT = 103
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 60_000


def _gso_supported() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.setsockopt(SOL_UDP, UDP_SEGMENT, 1200)
        return True
    except OSError:
        return False


GSO = _gso_supported()


def gso_groups(sizes: list[int]) -> list[tuple[int, int]]:
    """[start, end) runs that one GSO send can carry: equal sizes, the last maybe shorter.
    (DirectTransport.send spots the usual one-run frame itself, without this list.)"""
    n = len(sizes)
    groups = []
    i = 0
    while i < n:
        size, j, total = sizes[i], i + 1, sizes[i]
        while j < n and j - i < GSO_MAX_SEGMENTS and total + sizes[j] <= GSO_MAX_BYTES:
            if sizes[j] == size:
                total += sizes[j]
                j += 1
            else:
                if sizes[j] < size:  # a shorter segment may end the run
                    j += 1
                break
        groups.append((i, j))
        i = j
    return groups


def srtp_protector(session: Session) -> Callable[[bytes], bytes]:
    """``session.protect`` without pylibsrtp's per-call allocations: the same libsrtp
    call on the session's own buffer, with one length cell made here instead of one per
    packet. SRTP is per packet and per viewer, so this is on the hottest path."""
    srtp = session._srtp[0]
    cdata = session._cdata
    buffer = session._buffer
    limit = len(buffer) - SRTP_MAX_TRAILER_LEN
    length = srtp_ffi.new("int *")
    call = srtp_lib.srtp_protect

    def protect(packet: bytes) -> bytes:
        n = len(packet)
        if n > limit:
            raise ValueError("packet is too long")
        buffer[0:n] = packet
        length[0] = n
        rc = call(srtp, cdata, length)
        if rc:
            raise SrtpError(SRTP_ERRORS[rc] if rc < len(SRTP_ERRORS) else f"libsrtp error {rc}")
        protected: bytes = buffer[0 : length[0]]
        return protected

    protect.session = session  # type: ignore[attr-defined]  # keeps the C state alive
    return protect


# Socket options carrying a GSO segment size, by size: the same few sizes recur.
_SEGMENT_OPTIONS: dict[int, list[tuple[int, int, bytes]]] = {}


def _segment_option(size: int) -> list[tuple[int, int, bytes]]:
    option = _SEGMENT_OPTIONS.get(size)
    if option is None:
        option = _SEGMENT_OPTIONS[size] = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
    return option


class DirectTransport:
    """Encrypts and sends RTP on a sender's DTLS transport synchronously: what aiortc's
    ``RTCDtlsTransport._send_rtp`` does, minus its two awaits per packet (nothing in it
    ever waits: asyncio's UDP ``sendto`` buffers instead), and a frame's packets in one
    GSO syscall where the kernel allows."""

    def __init__(self, sender: RTCRtpSender, gso: bool = True) -> None:
        self._dtls = sender.transport
        self.gso = GSO and gso
        self.syscalls = 0
        # Resolved on first use and again only if aiortc replaces them: the SRTP session
        # (made when DTLS connects) and the nominated ICE pair's socket and address.
        self._session: Session | None = None
        self._protect: Callable[[bytes], bytes] = _not_connected
        self._pair: Any = None
        self._route: tuple[Any, Any, Any] = (None, None, None)

    def _resolve(self) -> tuple[Any, Any, Any]:
        dtls = self._dtls
        if dtls._state != DtlsState.CONNECTED:
            raise ConnectionError("DTLS not connected")
        if dtls._tx_srtp is not self._session:
            self._session = dtls._tx_srtp
            self._protect = srtp_protector(dtls._tx_srtp)
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            raise ConnectionError("ICE not connected")
        if pair is not self._pair:
            self._pair = pair
            transport = pair.protocol.transport
            self._route = (transport, transport._sock, pair.remote_addr)  # type: ignore[attr-defined]
        return self._route

    def send(self, packets: list[bytes]) -> None:
        transport, sock, addr = self._resolve()
        protect = self._protect
        datagrams = [protect(p) for p in packets]
        n = len(datagrams)
        if not self.gso or n == 1 or transport._buffer:
            # Queued writes first, in order: asyncio's own path.
            for d in datagrams:
                transport.sendto(d, addr)
            self.syscalls += n
            return
        size = len(datagrams[0])
        groups: Sequence[tuple[int, int]]
        if (
            n <= GSO_MAX_SEGMENTS
            and size * n <= GSO_MAX_BYTES
            and len(datagrams[-1]) <= size
            and all(len(d) == size for d in datagrams[1:-1])
        ):
            groups = ((0, n),)  # the usual frame: one run
        else:
            groups = gso_groups([len(d) for d in datagrams])
        for start, end in groups:
            self.syscalls += 1
            try:
                if end - start == 1:
                    sock.sendto(datagrams[start], addr)
                else:
                    group = datagrams[start:end]
                    sock.sendmsg(group, _segment_option(len(group[0])), 0, addr)
            except (BlockingIOError, InterruptedError):
                for d in datagrams[start:]:  # the socket is full: asyncio buffers the rest
                    transport.sendto(d, addr)
                return
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EINVAL):  # no GSO on this route after all
                    self.gso = False
                    for d in datagrams[start:]:
                        transport.sendto(d, addr)
                    return
                raise ConnectionError(str(exc)) from exc


def _not_connected(packet: bytes) -> bytes:
    raise ConnectionError("DTLS not connected")


def h264_payloads(frame: bytes) -> list[bytes]:
    """RTP payloads (single NAL, STAP-A, FU-A) of an Annex-B H.264 frame, as aiortc's
    H264Encoder.pack makes them (stateless, so one rung's frame is packetized once)."""
    return H264Encoder._packetize(H264Encoder._split_bitstream(frame))
