"""Hand-built RTP against aiortc's own: same bytes for the same fields."""

from __future__ import annotations

import os
import random
from fractions import Fraction

import av
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import HeaderExtensionsMap, RtpPacket, unwrap_rtx

from broadcaster.server import rtp
from broadcaster.server.rtp_stream import HISTORY_SIZE, RtpStream, SharedFrame, StreamParams

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
AST = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def ext_map(mid_id: int | None, ast_id: int | None) -> HeaderExtensionsMap:
    exts = []
    if mid_id:
        exts.append(RTCRtpHeaderExtensionParameters(id=mid_id, uri=MID))
    if ast_id:
        exts.append(RTCRtpHeaderExtensionParameters(id=ast_id, uri=AST))
    m = HeaderExtensionsMap()
    m.configure(RTCRtpSendParameters(codecs=[VP8], headerExtensions=exts))
    return m


@pytest.mark.parametrize(
    ("mid", "mid_id", "ast_id"),
    [("0", 4, 2), ("video", 9, 14), ("1", None, 3), ("0", 1, None), (None, None, None),
     ("m" * 16, 4, 2), ("m" * 17, 4, 2), ("0", 15, 2)],
)  # fmt: skip
def test_header_matches_aiortc(mid: str | None, mid_id: int | None, ast_id: int | None) -> None:
    ntp = 0x1234_5678_9ABC_DEF0
    ours_elements = []
    if mid is not None and mid_id:
        ours_elements.append((mid_id, mid.encode()))
    if ast_id:
        ours_elements.append((ast_id, rtp.abs_send_time(ntp)))
    payload = os.urandom(100)
    for marker in (0, 1):
        ours = rtp.header(
            marker, 96, 65535, 0xFFFF_FFFF, 0xDEAD_BEEF, rtp.extension_block(ours_elements)
        )
        theirs = RtpPacket(payload_type=96, marker=marker, sequence_number=65535,
                           timestamp=0xFFFF_FFFF, ssrc=0xDEAD_BEEF, payload=payload)  # fmt: skip
        theirs.extensions.mid = mid
        theirs.extensions.abs_send_time = (ntp >> 14) & 0x00FFFFFF
        assert ours + payload == theirs.serialize(ext_map(mid_id, ast_id))
        assert rtp.header_length(ours + payload) == len(ours)


@pytest.mark.parametrize("size", [1, 1295, 1296, 1297, 5000, 40_000])
def test_vp8_payloads_match_aiortc(size: int) -> None:
    data = os.urandom(size)
    encoder = get_encoder(VP8)
    picture_id = 32767  # wraps on the next frame
    encoder.picture_id = picture_id  # type: ignore[attr-defined]
    packet = av.Packet(data)
    packet.pts, packet.time_base = 0, Fraction(1, 90000)
    theirs, _ = encoder.pack(packet)
    first, rest = rtp.vp8_descriptors(picture_id)
    bodies = rtp.packetize_vp8(data)
    ours = [(first if i == 0 else rest) + b for i, b in enumerate(bodies)]
    assert ours == theirs
    assert all(len(p) <= rtp.PACKET_MAX for p in ours)


def frame(pts: int, n: int = 3, rung: int = 0) -> SharedFrame:
    bodies = tuple(os.urandom(1000) for _ in range(n))
    return SharedFrame(rung=rung, pts=pts, keyframe=False, bodies=bodies, size=3000)


PARAMS = StreamParams(
    ssrc=1111, payload_type=96, codec="vp8", mid="0", mid_ext=4, abs_send_time_ext=2,
    rtx_ssrc=2222, rtx_payload_type=97,
)  # fmt: skip


def test_stream_numbers_packets_and_keeps_one_picture_id_sequence() -> None:
    out: list[bytes] = []
    stream = RtpStream(PARAMS, out.extend, random.Random(1))
    ext = ext_map(4, 2)
    stream.send_frame(frame(0, n=3), ntp=1 << 32)
    stream.send_frame(frame(3000, n=2, rung=1), ntp=2 << 32)  # another rung: same numbering
    packets = [RtpPacket.parse(p, ext) for p in out]
    seqs = [p.sequence_number for p in packets]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(5)]
    assert [p.marker for p in packets] == [0, 0, 1, 0, 1]
    assert {p.ssrc for p in packets} == {1111} and {p.extensions.mid for p in packets} == {"0"}
    assert packets[0].timestamp == stream.rtp_origin & 0xFFFFFFFF
    assert packets[3].timestamp == (stream.rtp_origin + 3000) & 0xFFFFFFFF
    pids = [int.from_bytes(p.payload[2:4], "big") & 0x7FFF for p in packets]
    assert pids[:3] == [pids[0]] * 3 and pids[3] == (pids[0] + 1) % (1 << 15)
    assert [p.payload[0] for p in packets] == [0x90, 0x80, 0x80, 0x90, 0x80]
    assert stream.packets == 5 and stream.octets == sum(len(p.payload) for p in packets)


def test_opus_marks_only_the_streams_first_packet() -> None:
    # RFC 7587: the marker is the start of a talkspurt, not the end of a frame.
    out: list[bytes] = []
    params = StreamParams(ssrc=3333, payload_type=111, codec="opus", mid="1", mid_ext=4)
    stream = RtpStream(params, out.extend, random.Random(2))
    for i in range(4):
        stream.send_frame(SharedFrame(-1, i * 960, True, (b"\xfc" * 80,), 80), ntp=1 << 32)
    packets = [RtpPacket.parse(p, ext_map(4, None)) for p in out]
    assert [p.marker for p in packets] == [1, 0, 0, 0]
    assert [p.timestamp - packets[0].timestamp for p in packets] == [0, 960, 1920, 2880]
    assert all(p.payload == b"\xfc" * 80 for p in packets)  # no descriptor: Opus as is


def test_retransmission_is_rtx_of_the_original() -> None:
    out: list[bytes] = []
    stream = RtpStream(PARAMS, out.extend, random.Random(2))
    stream.send_frame(frame(0, n=4), ntp=1 << 32)
    original = RtpPacket.parse(out[2], ext_map(4, 2))
    assert stream.lookup(original.sequence_number) == (original.timestamp, len(original.payload))
    assert stream.retransmit(original.sequence_number, ntp=5 << 32) > 0
    rtx = RtpPacket.parse(out[-1], ext_map(4, 2))
    assert (rtx.payload_type, rtx.ssrc) == (97, 2222)
    assert rtx.extensions.abs_send_time == ((5 << 32) >> 14) & 0xFFFFFF  # a fresh send time
    restored = unwrap_rtx(rtx, payload_type=96, ssrc=1111)
    assert restored.sequence_number == original.sequence_number
    assert restored.payload == original.payload and restored.timestamp == original.timestamp
    # Unknown or evicted sequence numbers are not answered.
    assert stream.retransmit((original.sequence_number + 100) & 0xFFFF, ntp=0) == 0
    first = RtpPacket.parse(out[0], ext_map(4, 2)).sequence_number
    for pts in range(1, HISTORY_SIZE // 4 + 2):
        stream.send_frame(frame(pts * 3000, n=4), ntp=0)
    assert stream.retransmit(first, ntp=0) == 0


def test_without_rtx_the_original_is_resent_and_no_probe() -> None:
    out: list[bytes] = []
    params = StreamParams(ssrc=1, payload_type=96, codec="vp8")
    stream = RtpStream(params, out.extend, random.Random(3))
    stream.send_frame(frame(0, n=2), ntp=0)
    seq = RtpPacket.parse(out[0]).sequence_number
    stream.retransmit(seq, ntp=0)
    assert out[-1] == out[0]
    assert stream.probe(10_000, ntp=0) == 0


def test_probe_sends_about_the_budget_as_rtx() -> None:
    out: list[bytes] = []
    stream = RtpStream(PARAMS, out.extend, random.Random(4))
    stream.send_frame(frame(0, n=3), ntp=0)
    before = len(out)
    sent = stream.probe(10_000, ntp=1 << 32)
    probes = [RtpPacket.parse(p, ext_map(4, 2)) for p in out[before:]]
    assert 10_000 <= sent < 10_000 + 1100
    assert {p.payload_type for p in probes} == {97} and {p.ssrc for p in probes} == {2222}
    seqs = [p.sequence_number for p in probes]
    assert len(set(seqs)) == len(seqs)  # each probe its own RTX sequence number


def test_h264_has_no_descriptor() -> None:
    out: list[bytes] = []
    params = StreamParams(ssrc=1, payload_type=102, codec="h264")
    stream = RtpStream(params, out.extend, random.Random(5))
    bodies = (b"\x7c\x85abc", b"\x7c\x45def")
    stream.send_frame(SharedFrame(0, 0, True, bodies, 6), ntp=0)
    assert [RtpPacket.parse(p).payload for p in out] == list(bodies)
