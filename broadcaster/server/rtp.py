"""RTP packets for the fan-out fast path, built with struct instead of aiortc's objects.

A rung's frame is packetized ONCE (``packetize_vp8``; H.264 through aiortc's packetizer
in rtc_internals) and every viewer of that rung shares the payload bytes. Only what is
per viewer is built per viewer: the 12-byte header (its sequence number, timestamp,
SSRC), the header extensions (its MID, the send time) and, for VP8, the 4-byte payload
descriptor carrying its own picture id, so each viewer sees one continuous picture-id
sequence across rung switches (as mediasoup rewrites it per consumer).

The output is byte-for-byte what aiortc's ``RtpPacket.serialize`` and ``Vp8Encoder.pack``
produce for the same fields: tests/unit/test_rtp.py compares them, so an aiortc upgrade
that changes its wire format shows up as a failing test, not as a confused browser.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

# aiortc's packetizers keep every payload within this many bytes.
PACKET_MAX = 1300
# VP8 payload descriptor as aiortc writes it: X=1, S, PID=0 | I=1 | M=1 + 15-bit picture id.
VP8_DESCRIPTOR_BYTES = 4
VP8_BODY_MAX = PACKET_MAX - VP8_DESCRIPTOR_BYTES
PICTURE_ID_MOD = 1 << 15

HEADER = struct.Struct("!BBHII")
RTP_VERSION_WITH_EXTENSION = 0x90  # V=2, P=0, X=1, CC=0
RTP_VERSION = 0x80
_ONE_BYTE_PROFILE = 0xBEDE
_EXT_HEADER = struct.Struct("!HH")


def packetize_vp8(frame: bytes) -> tuple[bytes, ...]:
    """Split a VP8 frame into payload bodies (descriptor excluded), as aiortc splits it."""
    return tuple(frame[pos : pos + VP8_BODY_MAX] for pos in range(0, len(frame), VP8_BODY_MAX))


def vp8_descriptors(picture_id: int) -> tuple[bytes, bytes]:
    """(first packet's, later packets') descriptor for one frame with ``picture_id``."""
    hi, lo = 0x80 | (picture_id >> 8), picture_id & 0xFF
    return bytes((0x90, 0x80, hi, lo)), bytes((0x80, 0x80, hi, lo))


def abs_send_time(ntp: int) -> bytes:
    """The abs-send-time extension value (6.18 fixed point seconds) for an NTP time."""
    return ((ntp >> 14) & 0x00FFFFFF).to_bytes(3, "big")


def extension_block(elements: Sequence[tuple[int, bytes]]) -> bytes:
    """The RTP header extension (RFC 8285 one-byte form, two-byte when needed), with its
    profile/length word; empty when there is nothing to send. Same order as given."""
    if not elements:
        return b""
    one_byte = all(0 < i <= 14 and 0 < len(v) <= 16 for i, v in elements)
    if one_byte:
        body = b"".join(bytes(((i << 4) | (len(v) - 1),)) + v for i, v in elements)
        profile = _ONE_BYTE_PROFILE
    else:
        body = b"".join(bytes((i, len(v))) + v for i, v in elements)
        profile = 0x1000
    body += b"\x00" * (-len(body) % 4)
    return _EXT_HEADER.pack(profile, len(body) >> 2) + body


def header(
    marker: int, payload_type: int, seq: int, timestamp: int, ssrc: int, ext: bytes
) -> bytes:
    first = RTP_VERSION_WITH_EXTENSION if ext else RTP_VERSION
    return HEADER.pack(first, (marker << 7) | payload_type, seq, timestamp, ssrc) + ext


def header_length(packet: bytes) -> int:
    """Bytes before the payload of a packet this module built (no CSRCs, no padding)."""
    if not packet[0] & 0x10:
        return 12
    words = int.from_bytes(packet[14:16], "big")
    return 16 + 4 * words
