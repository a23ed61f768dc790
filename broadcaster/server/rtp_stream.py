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


_EXTENSIONS: dict[tuple[int | None, str | None, int | None, int], bytes] = {}


@dataclass(frozen=True, slots=True)
class StreamParams:
    """What negotiation settled for one viewer's video sender."""

    ssrc: int
    payload_type: int
    codec: str  # "vp8" | "h264"
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


@dataclass(slots=True)
class _Sent:
    seq: int
    packet: bytes  # plaintext RTP, header included
    header_length: int
    timestamp: int


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
        key = (p.mid_ext, p.mid, p.abs_send_time_ext, ntp >> 14)
        block = _EXTENSIONS.get(key)
        if block is None:
            # Viewers sent in one slice share MID ids and the send time: build it once.
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
        """Send every packet of ``frame``; returns the bytes handed to the transport."""
        p = self.params
        timestamp = (frame.pts + self.rtp_origin) & 0xFFFFFFFF
        ext = self._extensions(ntp)
        if p.codec == "vp8":
            first, rest = rtp.vp8_descriptors(self.picture_id)
            self.picture_id = (self.picture_id + 1) % rtp.PICTURE_ID_MOD
        else:
            first = rest = b""
        last = len(frame.bodies) - 1
        sent = 0
        packets = []
        for i, body in enumerate(frame.bodies):
            head = rtp.header(int(i == last), p.payload_type, self.seq, timestamp, p.ssrc, ext)
            packet = b"".join((head, first if i == 0 else rest, body))
            self._history[self.seq % HISTORY_SIZE] = _Sent(self.seq, packet, len(head), timestamp)
            packets.append(packet)
            sent += len(packet)
            self.octets += len(packet) - len(head)
            self.seq = (self.seq + 1) & 0xFFFF
        self._send(packets)  # the frame in one go: one syscall where GSO allows
        self.packets += len(frame.bodies)
        self.frames += 1
        self.last_timestamp = timestamp
        self.last_ntp = ntp
        return sent

    # -------------------------------------------------------------- repair

    def lookup(self, seq: int) -> tuple[int, int] | None:
        """(RTP timestamp, payload bytes) of a packet still in history."""
        entry = self._history[seq % HISTORY_SIZE]
        if entry is None or entry.seq != seq:
            return None
        return entry.timestamp, len(entry.packet) - entry.header_length

    def retransmit(self, seq: int, ntp: int) -> int:
        """Answer a NACK for ``seq``: an RTX packet (RFC 4588), or the original packet
        again when RTX was not negotiated. Returns bytes sent (0: no longer in history)."""
        entry = self._history[seq % HISTORY_SIZE]
        if entry is None or entry.seq != seq:
            return 0
        packet = self._rtx(entry, ntp) if self.params.rtx_payload_type is not None else entry.packet
        self._send([packet])
        self.rtx_packets += 1
        return len(packet)

    def _rtx(self, entry: _Sent, ntp: int) -> bytes:
        p = self.params
        assert p.rtx_payload_type is not None and p.rtx_ssrc is not None
        marker = entry.packet[1] >> 7
        head = rtp.header(
            marker, p.rtx_payload_type, self.rtx_seq, entry.timestamp, p.rtx_ssrc,
            self._extensions(ntp),
        )  # fmt: skip
        self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
        osn = entry.seq.to_bytes(2, "big")
        return b"".join((head, osn, entry.packet[entry.header_length :]))

    def probe(self, budget: int, ntp: int) -> int:
        """About ``budget`` bytes of padding traffic the receiver's estimator counts: RTX
        copies of recent packets with a fresh send time (the receiver drops them as
        duplicates). Needs negotiated RTX; returns the bytes sent."""
        if self.params.rtx_payload_type is None or budget <= 0:
            return 0
        recent = [
            e
            for e in (
                self._history[(self.seq - k) % HISTORY_SIZE] for k in range(1, PROBE_WINDOW + 1)
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
