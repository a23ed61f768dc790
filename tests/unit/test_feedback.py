"""RTCP -> snapshots: real aiortc RTCP packets, parsed from bytes as they arrive."""

from __future__ import annotations

import pytest
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    pack_remb_fci,
)

from broadcaster.server.feedback import FeedbackCollector, ntp_middle

SSRC = 0x1234


def wire(packet: object) -> object:
    """Through bytes and back: what the sender's RTCP hook really receives."""
    (parsed,) = RtcpPacket.parse(bytes(packet))  # type: ignore[call-overload]
    return parsed


def rr(
    highest: int,
    lost: int,
    *,
    ssrc: int = SSRC,
    lsr: int = 0,
    dlsr: int = 0,
    jitter: int = 900,
    fraction: int = 0,
) -> object:
    return wire(RtcpRrPacket(ssrc=1, reports=[RtcpReceiverInfo(
        ssrc=ssrc, fraction_lost=fraction, packets_lost=lost, highest_sequence=highest,
        jitter=jitter, lsr=lsr, dlsr=dlsr)]))  # fmt: skip


def test_loss_comes_from_cumulative_counters_not_fraction() -> None:
    fb = FeedbackCollector(SSRC, started=0.0)
    fb.on_rtcp(rr(1000, 10), ntp_now=0)
    first = fb.snapshot(0.25, 0, 0)
    assert first.loss is None and first.reports == 1  # a baseline, no interval yet
    # Three reports in the next interval, each claiming 50 % (reports sent with NACKs end
    # at a loss); the counters say 5 lost of 100 expected.
    for highest, lost in ((1030, 12), (1060, 14), (1100, 15)):
        fb.on_rtcp(rr(highest, lost, fraction=128), ntp_now=0)
    snap = fb.snapshot(0.5, 0, 0)
    assert snap.loss == pytest.approx(0.05) and snap.expected == 100 and snap.reports == 3
    assert fb.snapshot(0.75, 0, 0).loss is None  # no new report: no new loss figure


def test_sequence_wrap_and_duplicates() -> None:
    fb = FeedbackCollector(SSRC, started=0.0)
    fb.on_rtcp(rr(0xFFFFFFF0, 5), ntp_now=0)
    fb.snapshot(0.25, 0, 0)
    fb.on_rtcp(rr(0x10, 3), ntp_now=0)  # wrapped; duplicates lowered the lost count
    snap = fb.snapshot(0.5, 0, 0)
    assert snap.expected == 0x20 and snap.loss == 0.0


def test_reports_about_other_ssrcs_are_ignored() -> None:
    fb = FeedbackCollector(SSRC, started=0.0)
    fb.on_rtcp(rr(1000, 0, ssrc=999), ntp_now=0)
    assert fb.snapshot(0.25, 0, 0).reports == 0


def test_rtt_from_lsr_dlsr() -> None:
    fb = FeedbackCollector(SSRC, started=0.0)
    ntp_sr = (3_900_000_000 << 32) | (1 << 31)  # an SR sent at some NTP time
    lsr = ntp_middle(ntp_sr)
    # The viewer held it 0.5 s; the report arrives 0.62 s after the SR: RTT 120 ms.
    arrival = ntp_sr + int(0.62 * (1 << 32))
    fb.on_rtcp(rr(10, 0, lsr=lsr, dlsr=int(0.5 * 65536)), ntp_now=arrival)
    assert fb.snapshot(0.25, 0, 0).rtt_ms == pytest.approx(120, abs=0.1)


def test_remb_nack_pli_and_rates() -> None:
    fb = FeedbackCollector(SSRC, started=0.0)
    fci = pack_remb_fci(1_234_000, [SSRC])
    fb.on_rtcp(wire(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=fci)), 0)
    fb.on_rtcp(wire(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=SSRC,
                                    lost=[5, 6, 9])), 0)  # fmt: skip
    fb.on_rtcp(wire(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=SSRC)), 0)
    snap = fb.snapshot(0.5, sent_bytes=50_000, probe_bytes=10_000)
    assert snap.remb_bps == pytest.approx(1_234_000, rel=0.01)  # REMB mantissa rounding
    assert snap.nack_per_s == pytest.approx(6.0)  # 3 packets in 0.5 s
    assert snap.pli == 1
    assert snap.sent_bps == pytest.approx(800_000) and snap.probe_bps == pytest.approx(160_000)
    later = fb.snapshot(1.0, sent_bytes=50_000, probe_bytes=10_000)
    assert later.pli == 0 and later.nack_per_s == 0 and later.sent_bps == 0
    # A REMB for someone else's stream does not count.
    other = pack_remb_fci(5_000, [SSRC + 1])
    fb.on_rtcp(wire(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=other)), 0)
    assert fb.snapshot(1.5, 0, 0).remb_bps == pytest.approx(1_234_000, rel=0.01)


def test_new_loss_is_signalled_at_once() -> None:
    fb = FeedbackCollector(SSRC, started=0.0)
    calls: list[int] = []
    fb.on_loss = lambda: calls.append(1)
    fb.on_rtcp(rr(100, 0), ntp_now=0)
    fb.on_rtcp(rr(150, 0), ntp_now=0)
    assert calls == []
    fb.on_rtcp(rr(200, 2), ntp_now=0)
    assert calls == [1]
