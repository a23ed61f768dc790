"""The aiortc/aioice hooks still work with the installed versions.

These fail loudly if an aiortc upgrade moves the private names we rely on.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction

import aioice.ice
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.clock import current_ntp_time
from aiortc.exceptions import InvalidStateError
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    pack_remb_fci,
)

from broadcaster.server import rtc_internals
from broadcaster.server.outbound import stream_params
from broadcaster.server.rtp_stream import RtpStream, SharedFrame
from broadcaster.server.switcher import SwitcherTrack


def test_check_compatible_passes() -> None:
    rtc_internals.check_compatible()


async def _sender() -> tuple[RTCPeerConnection, RTCRtpSender]:
    pc = RTCPeerConnection()
    sender = pc.addTrack(SwitcherTrack(0, lambda _rung: None))
    return pc, sender


async def test_pli_and_fir_reach_the_keyframe_hook() -> None:
    pc, sender = await _sender()
    calls: list[str] = []
    rtc_internals.hook_keyframe_requests(sender, lambda: calls.append("kf"))
    ssrc = rtc_internals.sender_ssrc(sender)
    for fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
        await sender._handle_rtcp_packet(RtcpPsfbPacket(fmt=fmt, ssrc=1, media_ssrc=ssrc))
    assert calls == ["kf", "kf"]
    await pc.close()


async def test_rtcp_observer_sees_remb_and_survives_its_own_errors() -> None:
    pc, sender = await _sender()
    seen: list[object] = []
    rtc_internals.hook_rtcp(sender, seen.append)
    ssrc = rtc_internals.sender_ssrc(sender)
    remb = RtcpPsfbPacket(
        fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(750_000, [ssrc])
    )
    await sender._handle_rtcp_packet(remb)
    assert seen == [remb]

    def broken(_packet: object) -> None:
        raise RuntimeError("observer bug")

    rtc_internals.hook_rtcp(sender, broken)
    await sender._handle_rtcp_packet(remb)  # must not raise
    await pc.close()


async def test_host_addresses_override_includes_loopback() -> None:
    try:
        rtc_internals.use_host_addresses(["127.0.0.1"])
        conn = aioice.ice.Connection(ice_controlling=False)
        await conn.gather_candidates()
        hosts = {c.host for c in conn.local_candidates}
        assert hosts == {"127.0.0.1"}
        await conn.close()
    finally:
        rtc_internals.use_host_addresses(None)
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, False)


async def test_port_range_binds_host_candidates_inside_it() -> None:
    try:
        rtc_internals.use_host_addresses(["127.0.0.1"])
        rtc_internals.use_port_range(41000, 41003)
        conns = [aioice.ice.Connection(ice_controlling=False) for _ in range(5)]
        for conn in conns:
            await conn.gather_candidates()
        ports = [c.port for conn in conns for c in conn.local_candidates]
        # Four ports for five connections: the fifth finds none free and has no candidate.
        assert sorted(ports) == [41000, 41001, 41002, 41003]
        for conn in conns:
            await conn.close()
    finally:
        rtc_internals.use_port_range(0, 0)
        rtc_internals.use_host_addresses(None)


async def _connected_pair() -> tuple[RTCPeerConnection, RTCRtpSender, RTCPeerConnection]:
    """A server-like sender and a recvonly viewer, connected over loopback (real ICE/DTLS)."""
    rtc_internals.use_host_addresses(["127.0.0.1"])
    server, sender = await _sender()
    viewer = RTCPeerConnection()
    viewer.addTransceiver("video", direction="recvonly")
    await viewer.setLocalDescription(await viewer.createOffer())
    await server.setRemoteDescription(viewer.localDescription)
    await server.setLocalDescription(await server.createAnswer())
    await viewer.setRemoteDescription(server.localDescription)
    return server, sender, viewer


async def test_fast_path_hooks_on_a_real_connection() -> None:
    """The fast path end to end on aiortc's own transports: negotiated parameters reach
    us when the sender starts, packets we encrypt and send arrive and count at the
    viewer, sender reports carry our counters, NACKs reach our retransmit callback."""
    started: list[RTCRtpSendParameters] = []
    nacked: list[int] = []
    try:
        server, sender, viewer = await _connected_pair()
        rtc_internals.on_sender_started(sender, started.append)
        rtc_internals.replace_retransmit(sender, nacked.append)
        transport = rtc_internals.DirectTransport(sender)
        with pytest.raises(ConnectionError):
            transport.send([b"\x80" * 20])  # DTLS not up yet
        deadline = asyncio.get_running_loop().time() + 10
        while not started:
            assert asyncio.get_running_loop().time() < deadline, "sender never started"
            await asyncio.sleep(0.05)
        params = stream_params(
            started[0],
            rtc_internals.sender_ssrc(sender),
            rtc_internals.sender_rtx_ssrc(sender),
            "vp8",
        )
        assert params.payload_type and params.rtx_payload_type and params.abs_send_time_ext
        assert params.mid == "0" and params.mid_ext
        stream = RtpStream(params, transport.send)
        for i in range(5):
            bodies = (b"\x00" * 1000, b"\x01" * 500)
            stream.send_frame(SharedFrame(0, i * 3000, i == 0, bodies, 1500), current_ntp_time())
        rtc_internals.record_sent(
            sender, current_ntp_time(), stream.last_timestamp or 0, stream.packets, stream.octets
        )
        received = 0
        while received < 10:
            assert asyncio.get_running_loop().time() < deadline, received
            await asyncio.sleep(0.05)
            stats = await viewer.getTransceivers()[0].receiver.getStats()
            received = sum(
                getattr(v, "packetsReceived", 0) for v in stats.values() if v.type == "inbound-rtp"
            )
        sent = await sender.getStats()
        outbound = [v for v in sent.values() if v.type == "outbound-rtp"]
        assert outbound[0].packetsSent == 10 and outbound[0].bytesSent == stream.octets
        ssrc = rtc_internals.sender_ssrc(sender)
        nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=ssrc)
        nack.lost = [stream.seq - 2, stream.seq - 1]
        await sender._handle_rtcp_packet(nack)
        assert nacked == [(stream.seq - 2) & 0xFFFF, (stream.seq - 1) & 0xFFFF]
    finally:
        rtc_internals.use_host_addresses(None)
        await viewer.close()
        await server.close()


def test_h264_payloads_match_aiortc_pack() -> None:
    import av
    from aiortc.codecs.h264 import H264Encoder

    nal_sps = b"\x00\x00\x00\x01\x67" + bytes(20)
    nal_pps = b"\x00\x00\x00\x01\x68" + bytes(4)
    nal_idr = b"\x00\x00\x00\x01\x65" + bytes(range(256)) * 20  # FU-A territory
    frame = nal_sps + nal_pps + nal_idr
    packet = av.Packet(frame)
    packet.pts, packet.time_base = 0, Fraction(1, 90000)
    theirs, _ = H264Encoder().pack(packet)
    assert rtc_internals.h264_payloads(frame) == theirs
    assert len(theirs) > 3


async def test_sender_report_on_demand() -> None:
    from aiortc.clock import current_ntp_time
    from aiortc.rtp import RtcpSrPacket

    pc, sender = await _sender()
    assert not await rtc_internals.send_sender_report(sender)  # nothing sent yet
    sent: list[object] = []

    async def capture(packets: list[object]) -> None:
        sent.extend(packets)

    sender._send_rtcp = capture  # type: ignore[method-assign]
    sender._RTCRtpSender__ntp_timestamp = current_ntp_time() - (1 << 31)  # type: ignore[attr-defined]
    sender._RTCRtpSender__rtp_timestamp = 1000  # type: ignore[attr-defined]
    sender._RTCRtpSender__packet_count = 5  # type: ignore[attr-defined]
    assert await rtc_internals.send_sender_report(sender)
    (sr,) = sent
    assert isinstance(sr, RtcpSrPacket) and sr.ssrc == rtc_internals.sender_ssrc(sender)
    # Half a second after the last packet: its RTP time advanced by 45000 ticks at 90 kHz.
    assert abs(sr.sender_info.rtp_timestamp - 46000) < 900
    assert sr.sender_info.packet_count == 5
    await pc.close()


async def test_connect_task_ends_quietly_only_once_closed() -> None:
    """aiortc's unawaited connect task can meet an already closed transport while the
    connection closes (seen about once per thousand offers in test_offer_corpus.py, too
    rarely to stage here): the InvalidStateError it raises is swallowed then, and only
    then. aiortc's own coroutine is stood in for by one that raises the same way."""
    pc = RTCPeerConnection()
    calls: list[str] = []

    async def connect_into_closed_transport() -> None:
        calls.append("connect")
        raise InvalidStateError("RTCIceTransport is closed")

    setattr(pc, "_RTCPeerConnection__connect", connect_into_closed_transport)  # noqa: B010
    rtc_internals.quiet_connect_after_close(pc)
    hooked = getattr(pc, "_RTCPeerConnection__connect")  # noqa: B009
    with pytest.raises(InvalidStateError):
        await hooked()  # an open connection: a real error, not ours to hide
    await pc.close()
    await hooked()
    assert calls == ["connect", "connect"]


@pytest.mark.parametrize(
    ("sizes", "groups"),
    [
        ([1310, 1310, 700], [(0, 3)]),  # a frame: full packets, a shorter last one
        ([700], [(0, 1)]),
        ([1310, 700, 1310, 1310], [(0, 2), (2, 4)]),  # a shorter one ends a run
        ([500, 1310, 1310], [(0, 1), (1, 3)]),  # a longer one starts a new run
        ([1000] * 70, [(0, 60), (60, 70)]),  # at most 60 kB per send
        ([100] * 70, [(0, 64), (64, 70)]),  # at most 64 segments
        ([], []),
    ],
)
def test_gso_groups(sizes: list[int], groups: list[tuple[int, int]]) -> None:
    assert rtc_internals.gso_groups(sizes) == groups


def test_gso_send_arrives_as_separate_datagrams() -> None:
    """What DirectTransport relies on: one sendmsg with UDP_SEGMENT, several datagrams."""
    import socket
    import struct

    if not rtc_internals.GSO:
        pytest.skip("kernel without UDP GSO: DirectTransport falls back to one sendto each")
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(2)
        parts = [b"a" * 1200, b"b" * 1200, b"c" * 300]
        segment = struct.pack("=H", 1200)
        tx.sendmsg(parts, [(rtc_internals.SOL_UDP, rtc_internals.UDP_SEGMENT, segment)], 0,
                   rx.getsockname())  # fmt: skip
        assert [rx.recv(2000) for _ in parts] == parts


@pytest.mark.parametrize(
    "profile",
    [
        "SRTP_PROFILE_AES128_CM_SHA1_80",
        "SRTP_PROFILE_AEAD_AES_128_GCM",
        "SRTP_PROFILE_AEAD_AES_256_GCM",
    ],
)
def test_srtp_protector_matches_pylibsrtp_and_the_peer_decrypts(profile: str) -> None:
    import os
    import struct

    from pylibsrtp import Error, Policy, Session

    key = os.urandom(60)
    srtp_profile = getattr(Policy, profile)
    length = {"SRTP_PROFILE_AEAD_AES_256_GCM": 44, "SRTP_PROFILE_AEAD_AES_128_GCM": 28}
    key = key[: length.get(profile, 30)]

    def session(direction: int) -> Session:
        return Session(Policy(key=key, ssrc_type=direction, srtp_profile=srtp_profile))

    ours = rtc_internals.srtp_protector(session(Policy.SSRC_ANY_OUTBOUND))
    theirs = session(Policy.SSRC_ANY_OUTBOUND)
    peer = session(Policy.SSRC_ANY_INBOUND)
    for seq in range(5):
        packet = struct.pack("!BBHII", 0x80, 96, seq, 3000 * seq, 0x1234) + os.urandom(900 + seq)
        protected = ours(packet)
        assert protected == theirs.protect(packet)
        assert peer.unprotect(protected) == packet
    with pytest.raises(ValueError):
        ours(b"\x80" * 1500)
    with pytest.raises(Error):
        ours(b"\x80\x60")  # shorter than an RTP header: libsrtp's own error, raised
