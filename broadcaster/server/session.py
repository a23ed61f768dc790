"""A viewer session: one peer connection, one switcher track, closed exactly once."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Iterator
from typing import Literal

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from . import rtc_internals
from .abr_controller import ViewerAbr
from .broadcast import Broadcast
from .outbound import ViewerOutput
from .ratelimit import TokenBucket
from .switcher import SwitcherTrack

logger = logging.getLogger(__name__)

# Retransmissions per viewer: at most this share of its rung's bitrate, with bursts
# of up to this many seconds of it (a lost keyframe is resent at once).
RTX_SHARE = 0.25
RTX_BURST_S = 0.2
# RTP + SRTP + UDP + IP headers of a retransmitted packet, roughly.
RTP_OVERHEAD_BYTES = 60
# An offer whose ICE/DTLS never completes is released after this many seconds.
CONNECT_TIMEOUT = 15.0
# A connected viewer that sends no RTCP for this long is gone (browsers send several
# reports a second; aiortc about one a second).
SILENT_TIMEOUT = 10.0
SILENCE_CHECK = 1.0

Mode = Literal["auto", "pinned"]


def new_session_id() -> str:
    # 128 bits from the OS CSPRNG: the id is the only key to DELETE/PATCH a session.
    return secrets.token_urlsafe(16)


class ViewerSession:
    def __init__(
        self, pc: RTCPeerConnection, switcher: SwitcherTrack, broadcast: Broadcast
    ) -> None:
        self.id = new_session_id()
        self.pc = pc
        rtc_internals.quiet_connect_after_close(pc)
        rtc_internals.skip_receive_estimation(pc)
        self.switcher = switcher
        self.broadcast = broadcast
        self.mode: Mode = "auto"
        self.abr: ViewerAbr | None = None  # set once the sender exists
        self.output: ViewerOutput | None = None  # its video on the fast path
        self.audio_output: ViewerOutput | None = None  # its audio, when it asked for it
        self.audio_track: MediaStreamTrack | None = None
        self.public_id = hashlib.sha256(self.id.encode()).hexdigest()[:12]
        # RTP timestamp = (pts + rtp_origin) mod 2^32 for this viewer's video; its RTP
        # stream picks the origin at random when the connection is up.
        self.rtp_origin: int | None = None
        top_bytes_per_s = broadcast.ladder[0].bitrate_bps / 8
        self._rtx_budget = TokenBucket(
            burst=top_bytes_per_s * RTX_BURST_S, rate=top_bytes_per_s * RTX_SHARE
        )
        self.created = time.time()
        self._closed = False
        self._watchdog: asyncio.Task[None] | None = None

    def worth_retransmitting(self, timestamp: int) -> bool:
        """False for packets sent before the viewer's last switch: its decoder restarted at
        the new rung's keyframe, so resending the old rung only loads a congested link."""
        switches = self.switcher.switches
        if self.rtp_origin is None or len(switches) < 2:
            return True
        cutoff = (switches[-1].pts + self.rtp_origin) & 0xFFFFFFFF
        return (timestamp - cutoff) & 0xFFFFFFFF < 0x80000000

    def retransmit(self, timestamp: int, payload_bytes: int) -> bool:
        """The NACK answer filter: worth it, and within budget? Counts what is resent.

        The budget (a share of the current rung's bitrate) stops a NACK storm: on a
        congested link every retransmission displaces new packets, which are then lost
        and NACKed in turn. What is refused is recovered by a keyframe (PLI) instead.
        """
        if not self.worth_retransmitting(timestamp):
            return False
        size = payload_bytes + RTP_OVERHEAD_BYTES
        rung = self.switcher.current if self.switcher.current is not None else 0
        rung_bytes_per_s = self.broadcast.ladder[rung].bitrate_bps / 8
        self._rtx_budget.rate = rung_bytes_per_s * RTX_SHARE
        self._rtx_budget.burst = max(rung_bytes_per_s * RTX_BURST_S, 2 * size)
        if not self._rtx_budget.take(size):
            return False
        if self.abr is not None:
            self.abr.rtx_bytes += size
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def rung_index(self) -> int | None:
        """The rung the viewer decodes now (None until its first keyframe)."""
        return self.switcher.current

    @property
    def target_index(self) -> int:
        return self.switcher.target

    @property
    def remote_candidates(self) -> int:
        """ICE candidates the viewer has given us so far (offer and trickle), the count
        offer_guard.check_trickle bounds."""
        transports = {t.receiver.transport.transport for t in self.pc.getTransceivers()}
        return sum(len(t.getRemoteCandidates()) for t in transports)

    def start_watchdog(self, registry: ViewerRegistry) -> None:
        async def watch() -> None:
            started = time.monotonic()
            while True:
                await asyncio.sleep(SILENCE_CHECK)
                now = time.monotonic()
                if self.pc.connectionState != "connected":
                    if now - started > CONNECT_TIMEOUT:
                        logger.info("viewer %s never connected; closing", self.public_id)
                        break
                    continue
                # A viewer that vanished without DELETE (tab killed, network gone) stops
                # sending RTCP at once; aiortc itself would notice only after ~30 s.
                if self.abr is not None and self.abr.feedback.silent_for(now) > SILENT_TIMEOUT:
                    logger.info(
                        "viewer %s silent for %.0f s; closing", self.public_id, SILENT_TIMEOUT
                    )
                    break
            await registry.close(self.id)

        self._watchdog = asyncio.ensure_future(watch())

    def pin(self, rung: int) -> None:
        self.mode = "pinned"
        if self.abr is not None:
            self.abr.pin(rung)
        else:
            self.switcher.select(rung, "pinned")

    def unpin(self) -> None:
        self.mode = "auto"
        if self.abr is not None:
            self.abr.unpin(time.monotonic())

    async def close(self) -> None:
        """Idempotent; cascades to the switcher, the peer connection and our tasks."""
        if self._closed:
            return
        self._closed = True
        self.broadcast.unsubscribe(self.switcher)
        if self.abr is not None:
            self.abr.close()
        if self.output is not None:
            self.output.close()
        if self.audio_output is not None:
            self.broadcast.unlisten(self.audio_output)
            self.audio_output.close()
        if self.audio_track is not None:
            self.audio_track.stop()
        self.switcher.stop()
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        try:
            await self.pc.close()
        except Exception:  # aiortc can raise from close() on a half-built connection
            logger.debug("pc.close() raised", exc_info=True)


class ViewerRegistry:
    """All live sessions by id."""

    def __init__(self) -> None:
        self._sessions: dict[str, ViewerSession] = {}

    def add(self, session: ViewerSession) -> None:
        self._sessions[session.id] = session

    def get(self, session_id: str) -> ViewerSession | None:
        return self._sessions.get(session_id)

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[ViewerSession]:
        return iter(list(self._sessions.values()))

    def abrs(self) -> list[ViewerAbr]:
        return [s.abr for s in self._sessions.values() if s.abr is not None]

    async def close(self, session_id: str) -> bool:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        await session.close()
        return True

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(sid) for sid in list(self._sessions)))
