"""Load generator for bench/fanout.py: many WHEP viewers in one process, none decoding.

Run by the benchmark, one process per batch of viewers:

    python bench/receivers.py --url http://127.0.0.1:PORT/ --count 25 [--rung 360p]

It connects ``--count`` aiortc viewers, pins each to ``--rung`` through the WHEP layer link
(if given), prints one JSON line ``{"event": "ready", ...}`` and then obeys one command per
stdin line: ``stats`` (prints cumulative counters as JSON) or ``stop`` (DELETEs every
session, closes every peer connection, prints ``{"event": "stopped"}`` and exits). EOF on
stdin means the benchmark is gone: stop too, so no viewer outlives it.

The receivers are the load generator, not the thing under test: each RTP packet is only
counted (see ``_count_only``: no jitter buffer, no depacketizer, no decoding) and everything
stays on 127.0.0.1 (see ``_loopback_only``).

``stats`` reports, summed over this process's viewers (all cumulative): ``packets`` (media
RTP packets received, RTX not included), ``lost`` (media packets the senders numbered that
never arrived, from sequence-number gaps), ``rtx``, ``frames`` (distinct RTP timestamps
seen, i.e. frames of which a packet arrived), ``bytes`` (VP8 payload without its
descriptor: the encoded frame bytes), ``connected``, and ``frames_each`` (per viewer, in a
fixed order: one stalled viewer should not hide in a sum).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import weakref
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import pylibsrtp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpreceiver import StreamStatistics

CONNECT_TIMEOUT = 30.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=20)
LAYER_REL = 'rel="urn:ietf:params:whep:ext:core:layer"'
# Connecting all viewers at once makes a burst of ICE/DTLS handshakes that the server
# handles one by one on its event loop; a few at a time connects faster overall.
CONNECT_CONCURRENCY = 8


# Offer an audio m-line too (--audio): its packets cost the server and arrive here, but
# only the video receiver's are counted (audio payload types are not its codecs).
WITH_AUDIO = False


# ---------------------------------------------------------------- aiortc hooks (private names)


class RtpCounts:
    """One viewer's received RTP, counted as it arrives (cumulative).

    Also keeps aiortc's per-SSRC statistics up to date: its RTCP receiver reports, which
    the server reads (ours closes a viewer after 10 s without RTCP), are built from them.
    """

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver
        self.packets = 0  # media packets (RTX not included)
        self.rtx = 0  # retransmission/probe packets
        self.frames = 0  # distinct RTP timestamps: frames of which at least a packet arrived
        self.bytes = 0  # VP8 payload after the payload descriptor = encoded frame bytes
        self.media_ssrc: int | None = None
        self._last_timestamp: int | None = None
        # StreamStatistics.add reads only these two fields: one reusable stand-in packet.
        self._header = SimpleNamespace(sequence_number=0, timestamp=0)

    def add(self, ssrc: int, pt: int, seq: int, timestamp: int, payload: bytes) -> None:
        codec = self.receiver._RTCRtpReceiver__codecs.get(pt)
        if codec is None:
            return
        streams = self.receiver._RTCRtpReceiver__remote_streams
        stream = streams.get(ssrc)
        if stream is None:
            stream = streams[ssrc] = StreamStatistics(codec.clockRate)
        self._header.sequence_number = seq
        self._header.timestamp = timestamp
        stream.add(self._header)
        if codec.name.lower() == "rtx":
            self.rtx += 1
            return
        self.media_ssrc = ssrc
        self.packets += 1
        self.bytes += len(payload) - vp8_descriptor_length(payload)
        if timestamp != self._last_timestamp:
            self.frames += 1
            self._last_timestamp = timestamp

    def lost(self) -> int:
        """Media packets the sender numbered that never arrived (RFC 3550 expected - received)."""
        if self.media_ssrc is None:
            return 0
        stream = self.receiver._RTCRtpReceiver__remote_streams.get(self.media_ssrc)
        return max(0, stream.packets_lost) if stream is not None else 0


# Keyed by receiver object: set up when aiortc creates it, read by ``stats``.
COUNTS: weakref.WeakKeyDictionary[Any, RtpCounts] = weakref.WeakKeyDictionary()
# ICE connection (aioice) -> (its SRTP session, the receiver's counts): the fast path.
FAST: weakref.WeakKeyDictionary[Any, tuple[Any, RtpCounts]] = weakref.WeakKeyDictionary()


def vp8_descriptor_length(payload: bytes) -> int:
    """Bytes of the VP8 RTP payload descriptor (RFC 7741 4.2) at the start of ``payload``."""
    if not payload:
        return 0
    n = 1
    if payload[0] & 0x80 and len(payload) > 1:  # X: extension byte follows
        ext = payload[1]
        n += 1
        if ext & 0x80:  # I: picture id, 7 or 15 bits (M)
            n += 2 if len(payload) > n and payload[n] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            n += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX byte
            n += 1
    return min(n, len(payload))


def rtp_fields(packet: bytes) -> tuple[int, int, int, int, bytes]:
    """(ssrc, payload type, sequence number, timestamp, payload) of a plain RTP packet."""
    first = packet[0]
    start = 12 + 4 * (first & 0x0F)  # CSRCs
    if first & 0x10:  # header extension: 4 bytes + its length in 32-bit words
        start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
    end = len(packet) - (packet[-1] if first & 0x20 else 0)  # padding
    return (
        int.from_bytes(packet[8:12], "big"),
        packet[1] & 0x7F,
        int.from_bytes(packet[2:4], "big"),
        int.from_bytes(packet[4:8], "big"),
        packet[start:end],
    )


def _count_only() -> None:
    """Make this process's aiortc viewers count RTP packets instead of handling them.

    aiortc's receive path costs ~45 us of Python per packet here: the ICE connection
    queues each datagram for the DTLS transport's task, which decrypts and parses it and
    awaits the RTP receiver, which runs a delay-based bandwidth estimator (REMB), a NACK
    generator, VP8 depacketization and a jitter buffer, then decodes every complete frame
    in a thread. 200 such viewers would need more CPU than the server under test on a
    2-core machine. So once a viewer is connected (``attach``), its SRTP packets are taken
    straight from the UDP protocol: decrypted and authenticated (libsrtp, the receiver's
    own session), header parsed, counted. What the SERVER sees of a viewer stays real: ICE
    consent, DTLS, SRTP, and RTCP receiver reports built from per-packet statistics. Not
    sent: REMB, NACK, PLI (nothing needs them on loopback; without NACK a lost packet stays
    lost, so delivery is measured strictly). Packets before ``attach`` take aiortc's path
    to a receiver that only counts them likewise.

    Private names of aiortc 1.16 / aioice 0.13 (pinned by pyproject): the receiver's
    name-mangled codec and stream tables, ``decoder_worker``, ``_rx_srtp``,
    ``_connection``, ``StunProtocol.receiver``.
    """
    from aioice import ice
    from aiortc import rtcrtpreceiver

    def no_decoder(*_args: Any) -> None:
        # The decoder thread each receiver starts exits at once: nothing is queued to it.
        return None

    original_init = rtcrtpreceiver.RTCRtpReceiver.__init__

    def init(self: rtcrtpreceiver.RTCRtpReceiver, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        COUNTS[self] = RtpCounts(self)

    async def handle_rtp(self: Any, packet: Any, arrival_time_ms: int) -> None:
        if self._enabled:
            COUNTS[self].add(
                packet.ssrc,
                packet.payload_type,
                packet.sequence_number,
                packet.timestamp,
                packet.payload,
            )

    original_datagram = ice.StunProtocol.datagram_received

    def datagram_received(self: Any, data: bytes, addr: tuple[Any, ...]) -> None:
        # SRTP (first byte 128-191) but not SRTCP (second byte 192-208: RFC 5761).
        fast = FAST.get(self.receiver)
        if fast is not None and 127 < data[0] < 192 and not 191 < data[1] < 209:
            srtp, counts = fast
            try:
                counts.add(*rtp_fields(srtp.unprotect(data)))
            except (pylibsrtp.Error, IndexError):
                pass  # not authentic or too short: a real receiver drops it too
            return
        original_datagram(self, data, addr)

    rtcrtpreceiver.decoder_worker = no_decoder
    rtcrtpreceiver.RTCRtpReceiver.__init__ = init
    rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet = handle_rtp
    ice.StunProtocol.datagram_received = datagram_received


def attach(pc: RTCPeerConnection) -> None:
    """Route a connected viewer's SRTP to the fast path (see ``_count_only``)."""
    for receiver in pc.getReceivers():
        if receiver.track is None or receiver.track.kind != "video":
            continue  # one BUNDLE transport: its packets go to the video receiver's counts
        dtls = receiver.transport
        counts = COUNTS.get(receiver)
        if counts is not None and dtls._rx_srtp is not None:
            FAST[dtls.transport._connection] = (dtls._rx_srtp, counts)


def _loopback_only() -> None:
    # aioice gathers on every interface but loopback; the benchmark must stay on 127.0.0.1.
    from broadcaster.server.rtc_internals import use_host_addresses

    use_host_addresses(["127.0.0.1"])


# ---------------------------------------------------------------- one viewer


@dataclass
class Viewer:
    base_url: str
    pc: RTCPeerConnection = field(
        # Explicit empty list: aiortc's default would ask a public STUN server.
        default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[]))
    )
    location: str | None = None
    layer_url: str | None = None
    closing: bool = False

    async def connect(self, http: aiohttp.ClientSession) -> None:
        connected = asyncio.Event()

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            state = self.pc.connectionState
            if state == "connected":
                connected.set()
            elif state in ("failed", "closed") and not self.closing:
                # Unasked-for: the benchmark's log says when and how a viewer was lost.
                print(
                    f"{time.strftime('%H:%M:%S')} viewer {self.location}: {state}",
                    file=sys.stderr,
                    flush=True,
                )

        self.pc.addTransceiver("video", direction="recvonly")
        if WITH_AUDIO:
            self.pc.addTransceiver("audio", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with http.post(
            self.base_url + "whep",
            data=self.pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp"},
        ) as resp:
            answer = await resp.text()
            if resp.status != 201:
                raise RuntimeError(f"WHEP POST: {resp.status} {answer[:200]}")
            self.location = resp.headers["Location"]
            self.layer_url = _layer_link(resp.headers.getall("Link", []))
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(connected.wait(), CONNECT_TIMEOUT)
        attach(self.pc)

    async def pin(self, http: aiohttp.ClientSession, rung: str) -> None:
        if self.layer_url is None:
            raise RuntimeError("server offered no layer link")
        async with http.post(self._absolute(self.layer_url), json={"encodingId": rung}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"layer POST: {resp.status} {await resp.text()}")

    def counts(self) -> dict[str, int]:
        """What arrived, summed over this viewer's receivers (one: video)."""
        out = dict.fromkeys(("packets", "lost", "rtx", "frames", "bytes"), 0)
        for receiver in self.pc.getReceivers():
            c = COUNTS.get(receiver)
            if c is not None:
                out["packets"] += c.packets
                out["lost"] += c.lost()
                out["rtx"] += c.rtx
                out["frames"] += c.frames
                out["bytes"] += c.bytes
        return out

    async def close(self, http: aiohttp.ClientSession) -> None:
        self.closing = True
        try:
            if self.location is not None:
                async with http.delete(self._absolute(self.location)):
                    pass
        except (aiohttp.ClientError, TimeoutError):
            pass  # the server may already be gone; closing our side still matters
        finally:
            await self.pc.close()

    def _absolute(self, path: str) -> str:
        return path if path.startswith("http") else self.base_url.rstrip("/") + path


def _layer_link(links: list[str]) -> str | None:
    for link in links:
        if LAYER_REL in link:
            return link[link.index("<") + 1 : link.index(">")]
    return None


# ---------------------------------------------------------------- the worker


async def _connect_all(
    http: aiohttp.ClientSession, url: str, count: int, rung: str | None
) -> tuple[list[Viewer], list[str]]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    viewers = [Viewer(url) for _ in range(count)]

    async def one(viewer: Viewer) -> None:
        async with gate:
            await viewer.connect(http)
        if rung:
            await viewer.pin(http, rung)

    results = await asyncio.gather(*(one(v) for v in viewers), return_exceptions=True)
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    return viewers, errors


def _stats(viewers: list[Viewer]) -> dict[str, Any]:
    out = dict.fromkeys(("packets", "lost", "rtx", "frames", "bytes"), 0)
    frames_each = []
    for viewer in viewers:
        counts = viewer.counts()
        for key, value in counts.items():
            out[key] += value
        frames_each.append(counts["frames"])
    connected = sum(v.pc.connectionState == "connected" for v in viewers)
    return {"event": "stats", **out, "connected": connected, "frames_each": frames_each}


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _commands() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run(url: str, count: int, rung: str | None) -> None:
    commands = await _commands()
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        viewers, errors = await _connect_all(http, url, count, rung)
        try:
            _emit({"event": "ready", "count": count, "errors": errors[:5], "failed": len(errors)})
            while line := (await commands.readline()).decode().strip():
                if line == "stats":
                    _emit(_stats(viewers))
                elif line == "stop":
                    break
        finally:
            await asyncio.gather(*(v.close(http) for v in viewers), return_exceptions=True)
    _emit({"event": "stopped"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="server base URL ending in /")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rung", default="", help="pin every viewer to this rung (WHEP layer)")
    p.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority")
    p.add_argument(
        "--audio", action="store_true", help="viewers ask for audio too (counted: video only)"
    )
    args = p.parse_args()
    os.nice(args.nice)
    _count_only()
    _loopback_only()
    global WITH_AUDIO
    WITH_AUDIO = args.audio
    asyncio.run(run(args.url, args.count, args.rung or None))


if __name__ == "__main__":
    main()
