"""Per-viewer RTCP feedback -> timestamped snapshots for the ABR policy.

Fed by the RTCP hook in rtc_internals (every packet the viewer sends about our video
SSRC). Never reads the clock itself: callers pass ``now`` (seconds, monotonic) and, for
RTT, the current NTP time, so tests can drive it with plain numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

VIDEO_CLOCK = 90_000


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What we know about one viewer's link over the interval ending at ``t``."""

    t: float  # monotonic seconds
    remb_bps: float | None  # latest receiver estimate (None before the first REMB)
    # Share of the packets expected in THIS interval that were lost (0..1), from the
    # reports' cumulative counters; None without a new report. Not the reports' own
    # "fraction lost": Chromium sends a report with each NACK, so short intervals that
    # end in a loss are over-represented and averaging them over-states loss ~2x.
    loss: float | None
    expected: int  # packets the viewer expected in this interval (the weight of `loss`)
    reports: int  # receiver reports in this interval
    jitter_ms: float | None
    rtt_ms: float | None
    nack_per_s: float  # packets the viewer asked to be resent, per second
    pli: int  # picture loss indications in this interval
    sent_bps: float  # media bitrate we handed to this viewer's sender
    probe_bps: float  # probe traffic sent on top of it
    rtx_bps: float = 0.0  # retransmissions (NACK answers) sent on top of it


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP time: the unit of RTCP's LSR/DLSR."""
    return (ntp >> 16) & 0xFFFFFFFF


class FeedbackCollector:
    def __init__(self, ssrc: int, started: float) -> None:
        self.ssrc = ssrc
        self.remb_bps: float | None = None
        # (extended highest sequence, cumulative lost) at the last snapshot / last report
        self._mark: tuple[int, int] | None = None
        self._latest: tuple[int, int] | None = None
        # Called at once when a report shows new loss (a probe stops on it, not a tick later).
        self.on_loss: Callable[[], None] | None = None
        self.jitter_ms: float | None = None
        self.rtt_ms: float | None = None
        self.nacks_total = 0
        self.pli_total = 0
        self._reports = 0
        self._last_t = started
        self._heard = 0
        self.last_heard = started  # when the last interval with any RTCP ended
        self._last_nacks = 0
        self._last_pli = 0
        self._last_sent = 0
        self._last_probe = 0
        self._last_rtx = 0

    def on_rtcp(self, packet: object, ntp_now: int) -> None:
        self._heard += 1
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == self.ssrc:
                    if (
                        self.on_loss is not None
                        and self._latest is not None
                        and report.packets_lost > self._latest[1]
                    ):
                        self.on_loss()
                    self._latest = (report.highest_sequence, report.packets_lost)
                    self._on_report(report.jitter, report.lsr, report.dlsr, ntp_now)
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self.nacks_total += len(packet.lost)
        elif isinstance(packet, RtcpPsfbPacket):
            if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                self.pli_total += 1
            elif packet.fmt == RTCP_PSFB_APP:
                self._on_app(packet.fci)

    def _on_app(self, fci: bytes) -> None:
        try:
            bitrate, ssrcs = unpack_remb_fci(fci)
        except ValueError:
            return  # not a REMB
        if self.ssrc in ssrcs:
            self.remb_bps = float(bitrate)

    def _on_report(self, jitter: int, lsr: int, dlsr: int, ntp_now: int) -> None:
        self._reports += 1
        self.jitter_ms = jitter * 1000 / VIDEO_CLOCK
        if lsr:
            # RFC 3550 6.4.1: RTT = arrival - LSR - DLSR, in 1/65536 s (mod 2^32).
            rtt = (ntp_middle(ntp_now) - lsr - dlsr) & 0xFFFFFFFF
            if rtt < 0x80000000:  # a negative result wraps: skip it
                self.rtt_ms = rtt * 1000 / 65536

    def _interval_loss(self) -> tuple[float | None, int]:
        latest, mark = self._latest, self._mark
        self._mark = latest
        if latest is None or mark is None or not self._reports:
            return None, 0
        expected = (latest[0] - mark[0]) & 0xFFFFFFFF
        if expected == 0 or expected > 0x7FFFFFFF:  # nothing new, or reordered reports
            return None, 0
        lost = latest[1] - mark[1]  # may go negative: duplicates count as "found"
        return min(max(lost / expected, 0.0), 1.0), expected

    def snapshot(
        self, now: float, sent_bytes: int, probe_bytes: int, rtx_bytes: int = 0
    ) -> Snapshot:
        """Close the interval since the previous snapshot. Byte counts are totals."""
        span = max(now - self._last_t, 1e-3)
        loss, expected = self._interval_loss()
        snap = Snapshot(
            t=now,
            remb_bps=self.remb_bps,
            loss=loss,
            expected=expected,
            reports=self._reports,
            jitter_ms=self.jitter_ms,
            rtt_ms=self.rtt_ms,
            nack_per_s=(self.nacks_total - self._last_nacks) / span,
            pli=self.pli_total - self._last_pli,
            sent_bps=(sent_bytes - self._last_sent) * 8 / span,
            probe_bps=(probe_bytes - self._last_probe) * 8 / span,
            rtx_bps=(rtx_bytes - self._last_rtx) * 8 / span,
        )
        self._last_t = now
        self._last_nacks = self.nacks_total
        self._last_pli = self.pli_total
        self._last_sent = sent_bytes
        self._last_probe = probe_bytes
        self._last_rtx = rtx_bytes
        self._reports = 0
        if self._heard:
            self.last_heard = now
            self._heard = 0
        return snap

    def silent_for(self, now: float) -> float:
        """Seconds without any RTCP from this viewer (as of the last snapshot)."""
        return now - self.last_heard
