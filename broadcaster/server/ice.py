"""ICE settings from config: aiortc's RTCConfiguration and WHEP's Link headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import replace

from aiortc import RTCConfiguration, RTCIceServer

from ..config import Config, IceServer

TURN_REST_USER = "broadcaster"


def turn_rest_credentials(secret: str, user: str, expires: int) -> tuple[str, str]:
    """(username, credential) per draft-uberti-behave-turn-rest, as coturn's
    ``use-auth-secret`` checks them: base64(HMAC-SHA1(secret, "<expiry>:<user>"))."""
    username = f"{expires}:{user}"
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode()


def ice_servers(config: Config, now: float) -> tuple[IceServer, ...]:
    """The configured servers with credentials filled in: TURN REST ones get fresh,
    time-limited credentials (one set per viewer, expiring ``ttl`` after ``now``)."""
    out = []
    for server in config.ice.servers:
        if server.secret is not None:
            username, credential = turn_rest_credentials(
                server.secret, server.username or TURN_REST_USER, int(now) + server.ttl
            )
            server = replace(server, username=username, credential=credential, secret=None)
        out.append(server)
    return tuple(out)


def rtc_configuration(servers: tuple[IceServer, ...]) -> RTCConfiguration:
    # An explicit (possibly empty) list: aiortc falls back to a public STUN server otherwise.
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in servers
        ]
    )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def link_header(server: IceServer, url: str) -> str:
    """One WHEP ``Link: <url>; rel="ice-server"`` value (draft-ietf-wish-whep)."""
    parts = [f"<{url}>", 'rel="ice-server"']
    if server.username is not None and server.credential is not None:
        parts += [
            f"username={_quote(server.username)}",
            f"credential={_quote(server.credential)}",
            'credential-type="password"',
        ]
    return "; ".join(parts)


def ice_link_headers(servers: tuple[IceServer, ...]) -> list[str]:
    return [link_header(s, url) for s in servers for url in s.urls]


_HOST_CANDIDATE = re.compile(
    r"^(a=candidate:\S+ \d+ udp \d+ )(\S+)( \d+ typ host)", re.IGNORECASE | re.MULTILINE
)


def announce(sdp: str, address: str) -> str:
    """Rewrite host candidates to ``address`` (the public side of a NAT or container)."""
    if not address:
        return sdp
    return _HOST_CANDIDATE.sub(lambda m: m.group(1) + address + m.group(3), sdp)


def host_addresses(config: Config) -> list[str] | None:
    """Addresses to gather host candidates on; None leaves aioice's default."""
    if config.ice.addresses:
        return list(config.ice.addresses)
    host = config.server.host
    if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        # Only local viewers can reach a loopback server's HTTP; loopback is enough
        # and aioice would otherwise leave it out.
        return ["127.0.0.1"]
    return None
