"""The bus wire format round-trips and rejects junk with BusError."""

from __future__ import annotations

import multiprocessing

import pytest

from broadcaster.bus.local import CaptureLink
from broadcaster.bus.packet import (
    MAX_TEXT_BYTES,
    AudioFrame,
    BusError,
    CaptureError,
    CaptureStats,
    EncodedFrame,
    FrameSet,
    KeyframeRequest,
    RungFailed,
    SourceStatus,
    Stop,
    decode_capture_message,
    decode_server_message,
    encode_capture_message,
    encode_server_message,
)


def test_frameset_round_trip() -> None:
    fs = FrameSet(
        pts=123456789,
        capture_time=1700000000.25,
        frames=(
            EncodedFrame(0, True, 123456789, b"\x00" * 5000),
            EncodedFrame(2, False, 123456789, b"ab"),
        ),
    )
    back = decode_capture_message(encode_capture_message(fs))
    assert back == fs
    assert isinstance(back, FrameSet)
    assert back.get(2) == fs.frames[1]
    assert back.get(1) is None


def test_stats_and_error_round_trip() -> None:
    stats = CaptureStats(fps=(30.0, 15.0), kbps=(2500.0, 800.0), encode_ms=(7.5, 1.9))
    assert decode_capture_message(encode_capture_message(stats)) == stats
    err = CaptureError("camera 0: cannot open")
    assert decode_capture_message(encode_capture_message(err)) == err


@pytest.mark.parametrize(
    "msg",
    [
        SourceStatus("lost", "file /tmp/a.mp4: no such file", 0.5),
        SourceStatus("lost", "camera 0: read failed \u2014 unplugged?", 5.0),
        SourceStatus("live"),
        RungFailed(1, "360p encoder failed: EOFError: End of file"),
        RungFailed(255, ""),
    ],
)
def test_fault_messages_round_trip(msg: SourceStatus | RungFailed) -> None:
    assert decode_capture_message(encode_capture_message(msg)) == msg


def test_fault_message_text_is_cut_to_one_line_worth() -> None:
    long = SourceStatus("lost", "\u00e9" * 5000, 1.0)
    buf = encode_capture_message(long)
    assert len(buf) < MAX_TEXT_BYTES + 32
    back = decode_capture_message(buf)
    assert isinstance(back, SourceStatus)
    # Cut inside a two-byte character: the partial one is dropped, not garbled.
    assert back.message == "\u00e9" * (MAX_TEXT_BYTES // 2)


@pytest.mark.parametrize(
    "junk",
    [
        b"\x04",  # source status without a body
        b"\x04\x07" + b"\x00" * 8 + b"\x00\x00",  # unknown state
        b"\x04\x01" + b"\x00" * 8 + b"\x00\x05ab",  # text shorter than its length
        b"\x05\x01\x00\x01ab",  # text longer than its length
    ],
)
def test_junk_fault_messages_raise_bus_error(junk: bytes) -> None:
    with pytest.raises(BusError):
        decode_capture_message(junk)


def test_server_messages_round_trip() -> None:
    assert decode_server_message(encode_server_message(KeyframeRequest(2))) == KeyframeRequest(2)
    assert decode_server_message(encode_server_message(Stop())) == Stop()


def test_audio_frame_round_trip() -> None:
    msg = AudioFrame(pts=48_000 * 3600 * 30, data=b"\xfc\x01opus")
    assert decode_capture_message(encode_capture_message(msg)) == msg


@pytest.mark.parametrize(
    "junk", [b"", b"\x01", b"\x01" + b"\x00" * 10, b"\x09zzz", b"\x02{bad", b"\x06\x00"]
)
def test_junk_capture_messages_raise_bus_error(junk: bytes) -> None:
    with pytest.raises(BusError):
        decode_capture_message(junk)


def test_truncated_frameset_raises() -> None:
    fs = FrameSet(1, 0.0, (EncodedFrame(0, True, 1, b"x" * 100),))
    with pytest.raises(BusError):
        decode_capture_message(encode_capture_message(fs)[:-10])


def test_capture_link_poll_reads_requests_and_eof_as_stop() -> None:
    parent, child = multiprocessing.Pipe(duplex=True)
    link = CaptureLink(child)
    assert link.poll() == []
    parent.send_bytes(encode_server_message(KeyframeRequest(1)))
    parent.send_bytes(encode_server_message(KeyframeRequest(0)))
    assert link.poll() == [KeyframeRequest(1), KeyframeRequest(0)]
    parent.close()
    assert link.poll() == [Stop()]
    assert link.publish(CaptureError("x")) is False
    link.close()
    link.close()  # idempotent
