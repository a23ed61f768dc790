"""One viewer's outgoing video RTP stream on the fast path: numbering, history, RTX, probes.

Pure: it builds packets (broadcaster/server/rtp.py) and hands them to ``send``, which
encrypts and transmits (rtc_internals.DirectTransport); tests give it a list. aiortc's
RTCRtpSender still negotiates, answers RTCP and sends reports; this object does what its
send loop did, without one coroutine per viewer and packet and without re-packetizing
the same frame for every viewer.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from . import rtp

# Packets kept for NACK answers and probes: ~2.5 s at 1 Mbit/s, and a whole keyframe of
# the top rung (aiortc keeps 128).
HISTORY_SIZE = 512
# Probes resend copies of the last this-many packets.
PROBE_WINDOW = 32


HISTORY_MASK = HISTORY_SIZE - 1
assert HISTORY_SIZE & HISTORY_MASK == 0, "a power of two: seq & mask is the slot"

# Extension blocks by (stream's extension layout, send time): viewers sent in one pacer
# slice share their MID ids and the send time, so the block is built once per slice.
_EXTENSIONS: dict[tuple[int, int], bytes] = {}
_LAYOUTS: dict[tuple[int | None, str | None, int | None], int] = {}

# A history slot: (seq, plaintext packet, header length, RTP timestamp). A tuple, not an
# object: one is made per packet per viewer, the hottest allocation on the send path.
_Sent = tuple[int, bytes, int, int]


@dataclass(frozen=True, slots=True)
class StreamParams:
    """What negotiation settled for one viewer's video sender."""

    ssrc: int
    payload_type: int
    codec: str  # "vp8" | "h264" | "opus"
    mid: str | None = None
    mid_ext: int | None = None  # header extension ids (None: not negotiated)
    abs_send_time_ext: int | None = None
    rtx_ssrc: int | None = None
    rtx_payload_type: int | None = None


@dataclass(frozen=True, slots=True)
class SharedFrame:
    """One rung's frame, packetized once and shared by every viewer sent it."""

    rung: int
    pts: int  # 90 kHz capture clock
    keyframe: bool
    bodies: tuple[bytes, ...]  # payloads (VP8: without the per-viewer descriptor)
    size: int  # bytes of the encoded frame
    # Wall-clock capture time of ``pts`` (time.time()): sender reports map RTP time to it,
    # the same way for audio and video, which is what lip sync rests on.
    wall: float = 0.0


class RtpStream:
    def __init__(
        self,
        params: StreamParams,
        send: Callable[[list[bytes]], None],
        rng: random.Random | None = None,
    ) -> None:
        r = rng or random.SystemRandom()
        self.params = params
        self._send = send
        self.seq = r.randrange(1 << 16)
        self.rtx_seq = r.randrange(1 << 16)
        # RTP timestamp = (pts + rtp_origin) mod 2^32, fixed for the stream's life.
        self.rtp_origin = r.randrange(1 << 32)
        self.picture_id = r.randrange(rtp.PICTURE_ID_MOD)
        self._history: list[_Sent | None] = [None] * HISTORY_SIZE
        self._vp8 = params.codec == "vp8"
        # Video marks a frame's last packet; audio marks only the start of a talkspurt
        # (RFC 7587), here the stream's first packet.
        self._audio = params.codec == "opus"
        self._layout = _LAYOUTS.setdefault(
            (params.mid_ext, params.mid, params.abs_send_time_ext), len(_LAYOUTS)
        )
        self._probe_cursor = 0
        # For sender reports (RFC 3550: payload octets) and stats.
        self.packets = 0
        self.octets = 0
        self.last_timestamp: int | None = None
        self.last_ntp = 0
        self.frames = 0
        self.rtx_packets = 0
        self.probe_bytes = 0

    # -------------------------------------------------------------- media

    def _extensions(self, ntp: int) -> bytes:
        p = self.params
        key = (self._layout, ntp >> 14 if p.abs_send_time_ext else 0)
        block = _EXTENSIONS.get(key)
        if block is None:
            if len(_EXTENSIONS) > 64:
                _EXTENSIONS.clear()
            elements = []
            if p.mid is not None and p.mid_ext:
                elements.append((p.mid_ext, p.mid.encode()))
            if p.abs_send_time_ext:
                elements.append((p.abs_send_time_ext, rtp.abs_send_time(ntp)))
            block = _EXTENSIONS[key] = rtp.extension_block(elements)
        return block

    def send_frame(self, frame: SharedFrame, ntp: int) -> int:
        """Send every packet of ``frame``; returns the bytes handed to the transport.

        Runs once per viewer per frame, hundreds of times per frame: written flat, with
        locals, because here every attribute lookup and call is multiplied."""
        p = self.params
        timestamp = (frame.pts + self.rtp_origin) & 0xFFFFFFFF
        ext = self._extensions(ntp)
        head_length = 12 + len(ext)
        if self._vp8:
            first, rest = rtp.vp8_descriptors(self.picture_id)
            self.picture_id = (self.picture_id + 1) % rtp.PICTURE_ID_MOD
        else:
            first = rest = b""
        pack = rtp.HEADER.pack
        version = rtp.RTP_VERSION_WITH_EXTENSION if ext else rtp.RTP_VERSION
        pt, ssrc, seq, history = p.payload_type, p.ssrc, self.seq, self._history
        bodies = frame.bodies
        last = len(bodies) - 1 if not self._audio else (0 if self.frames == 0 else -1)
        packets = []
        for i, body in enumerate(bodies):
            packet = b"".join(
                (pack(version, pt | 0x80 if i == last else pt, seq, timestamp, ssrc),
                 ext, rest if i else first, body)
            )  # fmt: skip
            history[seq & HISTORY_MASK] = (seq, packet, head_length, timestamp)
            packets.append(packet)
            seq = (seq + 1) & 0xFFFF
        self.seq = seq
        self._send(packets)  # the frame in one go: one syscall where GSO allows
        sent = sum(map(len, packets))
        self.octets += sent - head_length * len(packets)
        self.packets += len(packets)
        self.frames += 1
        self.last_timestamp = timestamp
        self.last_ntp = ntp
        return sent

    # -------------------------------------------------------------- repair

    def lookup(self, seq: int) -> tuple[int, int] | None:
        """(RTP timestamp, payload bytes) of a packet still in history."""
        entry = self._history[seq & HISTORY_MASK]
        if entry is None or entry[0] != seq:
            return None
        return entry[3], len(entry[1]) - entry[2]

    def retransmit(self, seq: int, ntp: int) -> int:
        """Answer a NACK for ``seq``: an RTX packet (RFC 4588), or the original packet
        again when RTX was not negotiated. Returns bytes sent (0: no longer in history)."""
        entry = self._history[seq & HISTORY_MASK]
        if entry is None or entry[0] != seq:
            return 0
        packet = self._rtx(entry, ntp) if self.params.rtx_payload_type is not None else entry[1]
        self._send([packet])
        self.rtx_packets += 1
        return len(packet)

    def _rtx(self, entry: _Sent, ntp: int) -> bytes:
        p = self.params
        assert p.rtx_payload_type is not None and p.rtx_ssrc is not None
        seq, packet, header_length, timestamp = entry
        marker = packet[1] >> 7
        head = rtp.header(
            marker, p.rtx_payload_type, self.rtx_seq, timestamp, p.rtx_ssrc,
            self._extensions(ntp),
        )  # fmt: skip
        self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
        return b"".join((head, seq.to_bytes(2, "big"), packet[header_length:]))

    def probe(self, budget: int, ntp: int) -> int:
        """About ``budget`` bytes of padding traffic the receiver's estimator counts: RTX
        copies of recent packets with a fresh send time (the receiver drops them as
        duplicates). Needs negotiated RTX; returns the bytes sent."""
        if self.params.rtx_payload_type is None or budget <= 0:
            return 0
        recent = [
            e
            for e in (
                self._history[(self.seq - k) & HISTORY_MASK] for k in range(1, PROBE_WINDOW + 1)
            )
            if e is not None
        ]
        if not recent:
            return 0
        sent = 0
        packets = []
        while sent < budget:
            entry = recent[self._probe_cursor % len(recent)]
            self._probe_cursor += 1
            packet = self._rtx(entry, ntp)
            packets.append(packet)
            sent += len(packet)
        self._send(packets)
        self.probe_bytes += sent
        return sent
