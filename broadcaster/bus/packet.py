"""What travels from the capture process to the server: encoded frames and a few controls.

Capture -> server: FrameSet, AudioFrame (one Opus packet), CaptureStats, CaptureError
(fatal), SourceStatus (the source went away / came back; the stream goes on with a slate
meanwhile), RungFailed (one rung's encoder broke; the others go on). Server -> capture:
KeyframeRequest, Stop.

The wire format is explicit (struct-packed headers + raw bitstream) rather than pickle, so
that a network bus can carry the same bytes later and a non-Python peer could speak it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

# One clock for every rung: pts in 90 kHz units since capture start, so a viewer can be
# moved between rungs at a keyframe without a timestamp jump.
CLOCK_RATE = 90_000
TIME_BASE = Fraction(1, CLOCK_RATE)
# Audio pts count 48 kHz samples on the same clock: sample 0 is the instant of video pts 0.
AUDIO_CLOCK_RATE = 48_000

_FRAMESET = 1
_STATS = 2
_ERROR = 3
_SOURCE_STATUS = 4
_RUNG_FAILED = 5
_AUDIO = 6
_KEYFRAME_REQUEST = 16
_STOP = 17

_FS_HEAD = struct.Struct("!BqdH")  # type, pts, capture wall time, frame count
_FRAME_HEAD = struct.Struct("!BBI")  # rung index, flags, length
_KF_REQ = struct.Struct("!BB")  # type, rung index
_SOURCE_HEAD = struct.Struct("!BBdH")  # type, state, retry_in seconds, message length
_RUNG_FAILED_HEAD = struct.Struct("!BBH")  # type, rung index, message length
_AUDIO_HEAD = struct.Struct("!Bq")  # type, pts (48 kHz samples)
_FLAG_KEY = 1
# Human-readable texts are cut to this many UTF-8 bytes: one line, not a log file.
MAX_TEXT_BYTES = 1000

SourceState = Literal["live", "lost"]
_SOURCE_STATES: tuple[SourceState, ...] = ("live", "lost")  # wire code = index


class BusError(ValueError):
    """A message that does not decode."""


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One rung's encoded picture for one capture instant (one av.Packet's worth)."""

    rung: int
    keyframe: bool
    pts: int
    data: bytes


@dataclass(frozen=True, slots=True)
class FrameSet:
    """Every rung encoded for one capture instant; a rung that skips the instant is absent."""

    pts: int
    capture_time: float  # wall clock (time.time()) when the picture was taken
    frames: tuple[EncodedFrame, ...]

    def get(self, rung: int) -> EncodedFrame | None:
        for frame in self.frames:
            if frame.rung == rung:
                return frame
        return None


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """One Opus packet (20 ms), encoded once for every viewer."""

    pts: int  # AUDIO_CLOCK_RATE units since the capture clock's origin
    data: bytes


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """Periodic figures from the capture side (per rung, over the last interval)."""

    fps: tuple[float, ...]
    kbps: tuple[float, ...]
    encode_ms: tuple[float, ...]  # mean encode time per frame


@dataclass(frozen=True, slots=True)
class CaptureError:
    """The capture side cannot go on; message is one line for a human."""

    message: str


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """The source went away ("lost": the capture sends a slate and retries) or is back.

    ``retry_in``: seconds until the next reopen attempt while lost (0 when live).
    """

    state: SourceState
    message: str = ""
    retry_in: float = 0.0


@dataclass(frozen=True, slots=True)
class RungFailed:
    """One rung's encoder failed: it produces no more frames; the other rungs go on."""

    rung: int
    message: str


@dataclass(frozen=True, slots=True)
class KeyframeRequest:
    rung: int


@dataclass(frozen=True, slots=True)
class Stop:
    pass


CaptureMessage = FrameSet | AudioFrame | CaptureStats | CaptureError | SourceStatus | RungFailed
ServerMessage = KeyframeRequest | Stop


def encode_frameset(fs: FrameSet) -> bytes:
    parts = [_FS_HEAD.pack(_FRAMESET, fs.pts, fs.capture_time, len(fs.frames))]
    for f in fs.frames:
        parts.append(_FRAME_HEAD.pack(f.rung, _FLAG_KEY if f.keyframe else 0, len(f.data)))
        parts.append(f.data)
    return b"".join(parts)


def _encode_json(kind: int, body: dict[str, Any]) -> bytes:
    return bytes([kind]) + json.dumps(body).encode()


def _text(message: str) -> bytes:
    # Cutting may split a character; the decoder drops the partial one.
    return message.encode("utf-8")[:MAX_TEXT_BYTES]


def _untext(buf: bytes, offset: int, length: int) -> str:
    data = buf[offset : offset + length]
    if len(data) != length or len(buf) != offset + length:
        raise BusError("bad text length")
    return data.decode("utf-8", "ignore")


def encode_capture_message(msg: CaptureMessage) -> bytes:
    if isinstance(msg, FrameSet):
        return encode_frameset(msg)
    if isinstance(msg, AudioFrame):
        return _AUDIO_HEAD.pack(_AUDIO, msg.pts) + msg.data
    if isinstance(msg, CaptureStats):
        return _encode_json(_STATS, {"fps": msg.fps, "kbps": msg.kbps, "encode_ms": msg.encode_ms})
    if isinstance(msg, SourceStatus):
        text = _text(msg.message)
        state = _SOURCE_STATES.index(msg.state)
        return _SOURCE_HEAD.pack(_SOURCE_STATUS, state, msg.retry_in, len(text)) + text
    if isinstance(msg, RungFailed):
        text = _text(msg.message)
        return _RUNG_FAILED_HEAD.pack(_RUNG_FAILED, msg.rung, len(text)) + text
    return _encode_json(_ERROR, {"message": msg.message})


def decode_capture_message(buf: bytes) -> CaptureMessage:
    try:
        kind = buf[0]
        if kind == _FRAMESET:
            return _decode_frameset(buf)
        if kind == _AUDIO:
            _, pts = _AUDIO_HEAD.unpack_from(buf, 0)
            return AudioFrame(pts, bytes(buf[_AUDIO_HEAD.size :]))
        if kind == _SOURCE_STATUS:
            _, state, retry_in, length = _SOURCE_HEAD.unpack_from(buf, 0)
            message = _untext(buf, _SOURCE_HEAD.size, length)
            return SourceStatus(_SOURCE_STATES[state], message, retry_in)
        if kind == _RUNG_FAILED:
            _, rung, length = _RUNG_FAILED_HEAD.unpack_from(buf, 0)
            return RungFailed(rung, _untext(buf, _RUNG_FAILED_HEAD.size, length))
        body = json.loads(buf[1:])
        if kind == _STATS:
            return CaptureStats(
                fps=tuple(body["fps"]),
                kbps=tuple(body["kbps"]),
                encode_ms=tuple(body["encode_ms"]),
            )
        if kind == _ERROR:
            return CaptureError(str(body["message"]))
    except (IndexError, KeyError, TypeError, ValueError, struct.error) as exc:
        raise BusError(f"bad capture message: {exc}") from None
    raise BusError(f"unknown capture message type {kind}")


def _decode_frameset(buf: bytes) -> FrameSet:
    _, pts, capture_time, count = _FS_HEAD.unpack_from(buf, 0)
    offset = _FS_HEAD.size
    frames = []
    for _ in range(count):
        rung, flags, length = _FRAME_HEAD.unpack_from(buf, offset)
        offset += _FRAME_HEAD.size
        data = buf[offset : offset + length]
        if len(data) != length:
            raise BusError("truncated frame set")
        offset += length
        frames.append(EncodedFrame(rung, bool(flags & _FLAG_KEY), pts, data))
    return FrameSet(pts, capture_time, tuple(frames))


def encode_server_message(msg: ServerMessage) -> bytes:
    if isinstance(msg, KeyframeRequest):
        return _KF_REQ.pack(_KEYFRAME_REQUEST, msg.rung)
    return bytes([_STOP])


def decode_server_message(buf: bytes) -> ServerMessage:
    if buf[:1] == bytes([_STOP]):
        return Stop()
    try:
        kind, rung = _KF_REQ.unpack(buf)
    except struct.error as exc:
        raise BusError(f"bad server message: {exc}") from None
    if kind != _KEYFRAME_REQUEST:
        raise BusError(f"unknown server message type {kind}")
    return KeyframeRequest(rung)
