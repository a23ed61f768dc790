"""Sender-report timing: the RTP time of the send instant, on the capture clock."""

from __future__ import annotations

import pytest

from broadcaster.server.outbound import NTP_UNIX_OFFSET, rtp_time_at

WALL = 1_795_670_000.25  # a capture instant, Unix seconds


def ntp(unix: float) -> int:
    return round((unix + NTP_UNIX_OFFSET) * (1 << 32))


@pytest.mark.parametrize(
    ("sent_after_s", "clock_rate", "timestamp", "expected"),
    [
        (0.0, 90_000, 1000, 1000),  # sent at capture: the frame's own time
        (0.040, 90_000, 1000, 1000 + 3600),  # video 40 ms later: 3600 ticks on
        (0.040, 48_000, 1000, 1000 + 1920),  # audio: the same instant, its own clock
        (0.010, 90_000, 0xFFFFFF00, (0xFFFFFF00 + 900) & 0xFFFFFFFF),  # wraps at 2^32
        (-0.005, 48_000, 5000, 5000 - 240),  # a clock read just before the capture stamp
    ],
)
def test_report_pairs_the_send_instant_with_its_rtp_time(
    sent_after_s: float, clock_rate: int, timestamp: int, expected: int
) -> None:
    assert rtp_time_at(ntp(WALL + sent_after_s), timestamp, WALL, clock_rate) == expected


def test_unknown_capture_time_leaves_the_timestamp() -> None:
    assert rtp_time_at(ntp(WALL), 1234, 0.0, 90_000) == 1234
