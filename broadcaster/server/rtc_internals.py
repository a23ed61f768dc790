"""The ONLY module that touches aiortc/aioice private names.

aiortc hides what a broadcaster needs: keyframe requests (PLI/FIR only set a flag that
the pre-encoded path never reads), the raw RTCP a viewer sends (REMB is not exposed), and
which addresses ICE gathers on. Each hook here is small, checked by ``check_compatible()``
at startup and by tests/unit/test_rtc_internals.py, so an aiortc upgrade that moves these
names fails loudly instead of silently losing keyframe requests.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aioice.ice
from aiortc import RTCRtpSender, RTCRtpTransceiver

logger = logging.getLogger(__name__)

_original_get_host_addresses = aioice.ice.get_host_addresses


def check_compatible() -> None:
    """Raise RuntimeError if the aiortc/aioice internals we hook have moved."""
    missing = [
        f"RTCRtpSender.{name}"
        for name in ("_send_keyframe", "_handle_rtcp_packet")
        if not callable(getattr(RTCRtpSender, name, None))
    ]
    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        missing.append("aioice.ice.get_host_addresses")
    if missing:
        raise RuntimeError(f"aiortc internals changed; missing: {', '.join(missing)}")


def hook_keyframe_requests(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` on every PLI/FIR the viewer sends for this sender."""
    # RTCRtpSender._handle_rtcp_packet calls self._send_keyframe() for PLI and FIR.
    sender._send_keyframe = callback  # type: ignore[method-assign]


RtcpCallback = Callable[[Any], None]


def hook_rtcp(sender: RTCRtpSender, callback: RtcpCallback) -> None:
    """Let ``callback`` see every RTCP packet routed to this sender (RR, REMB, NACK, PLI).

    The callback must not raise; if it does, the error is logged and RTCP handling goes on.
    """
    original: Callable[[Any], Awaitable[None]] = sender._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        try:
            callback(packet)
        except Exception:
            logger.exception("RTCP observer failed")
        await original(packet)

    sender._handle_rtcp_packet = handle  # type: ignore[method-assign]


def negotiated_mime_types(transceiver: RTCRtpTransceiver) -> list[str]:
    """Codecs the last negotiation settled on for this transceiver (empty before)."""
    return [c.mimeType for c in getattr(transceiver, "_codecs", None) or []]


def sender_ssrc(sender: RTCRtpSender) -> int:
    return int(sender._ssrc)


def use_host_addresses(addresses: list[str] | None) -> None:
    """Gather ICE host candidates on exactly ``addresses`` (None: aioice's default).

    aioice leaves 127.0.0.1 out by default, so a server on loopback would offer no
    candidate a local browser can reach directly.
    """
    if addresses is None:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    fixed = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses
