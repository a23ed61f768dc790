"""The aiortc/aioice hooks still work with the installed versions.

These fail loudly if an aiortc upgrade moves the private names we rely on.
"""

from __future__ import annotations

import aioice.ice
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.exceptions import InvalidStateError
from aiortc.rtp import RTCP_PSFB_APP, RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket, pack_remb_fci

from broadcaster.server import rtc_internals
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


async def test_retransmission_filter_sees_the_history_packet() -> None:
    from aiortc.rtp import RtpPacket

    pc, sender = await _sender()
    history = sender._RTCRtpSender__rtp_history  # type: ignore[attr-defined]
    history[7] = RtpPacket(sequence_number=7, timestamp=1000)
    seen: list[int] = []
    calls: list[int] = []

    async def original(seq: int) -> None:
        calls.append(seq)

    allowed = [False]

    def allow(packet: RtpPacket) -> bool:
        seen.append(packet.timestamp)
        return allowed[0]

    sender._retransmit = original  # type: ignore[method-assign]
    rtc_internals.filter_retransmissions(sender, allow)
    await sender._retransmit(7)
    assert seen == [1000] and calls == []  # refused: never reached aiortc
    allowed[0] = True
    await sender._retransmit(7)
    await sender._retransmit(99)  # unknown to the history: aiortc decides (ignores it)
    assert calls == [7, 99]
    await pc.close()


async def test_probe_sender_needs_rtx_and_history() -> None:
    pc, sender = await _sender()
    probe = rtc_internals.ProbeSender(sender)
    assert not probe.available  # nothing negotiated yet
    assert await probe.send(5000) == 0
    await pc.close()


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
