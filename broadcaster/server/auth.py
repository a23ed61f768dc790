"""Who may watch, control and publish: bearer tokens and signed, expiring view links.

Off unless configured. A request carries its token as ``Authorization: Bearer <token>``
or, where a browser cannot set headers (WebSocket, a shared link), as ``?token=<token>``.
Tokens are compared in constant time against every configured token, so neither timing
nor which token matched leaks. A refusal happens before any peer connection exists.

A signed view link carries ``v1.<expiry unix seconds>.<base64url HMAC-SHA256>`` made
with ``auth.link_secret``; anyone holding it may watch until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from ..config import AuthConfig
from .errors import json_error

Scope = Literal["view", "control", "publish"]
LINK_VERSION = "v1"


@dataclass(frozen=True)
class Denied:
    reason: str


def _sign(secret: str, expires: int) -> str:
    mac = hmac.new(secret.encode(), f"{LINK_VERSION}.view.{expires}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def sign_view_token(secret: str, expires: int) -> str:
    """A view token valid until ``expires`` (unix seconds)."""
    return f"{LINK_VERSION}.{expires}.{_sign(secret, expires)}"


def check_view_link(secret: str, token: str, now: float) -> Denied | None:
    """None if ``token`` is a genuine, unexpired signed view link."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != LINK_VERSION or not parts[1].isdigit():
        return Denied("invalid token")
    expires = int(parts[1])
    if not hmac.compare_digest(_sign(secret, expires), parts[2]):
        return Denied("invalid token")
    if expires <= now:
        return Denied("token expired")
    return None


def _matches_any(token: str, allowed: tuple[str, ...]) -> bool:
    # Every candidate is compared (no early exit), each in constant time.
    found = False
    for candidate in allowed:
        found |= hmac.compare_digest(token.encode(), candidate.encode())
    return found


def request_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token") or None


class Authorizer:
    def __init__(self, config: AuthConfig) -> None:
        self.config = config

    def required(self, scope: Scope) -> bool:
        if scope == "view":
            return self.config.view_required
        if scope == "control":
            return bool(self.config.control_tokens)
        return True  # publishing is never open: no tokens, no publisher

    def check(self, scope: Scope, token: str | None, now: float) -> Denied | None:
        """None when a request with ``token`` may act in ``scope`` at ``now`` (unix s)."""
        if not self.required(scope):
            return None
        if token is None:
            return Denied("authorization required (Authorization: Bearer <token>)")
        tokens = {
            "view": self.config.view_tokens,
            "control": self.config.control_tokens,
            "publish": self.config.publish_tokens,
        }[scope]
        if _matches_any(token, tokens):
            return None
        if scope == "view" and self.config.link_secret and token.startswith(LINK_VERSION + "."):
            return check_view_link(self.config.link_secret, token, now)
        return Denied("invalid token")

    def refuse(self, request: web.Request, scope: Scope, now: float) -> web.Response | None:
        """A 401 answer for ``request``, or None when it may go on."""
        denied = self.check(scope, request_token(request), now)
        if denied is None:
            return None
        return json_error(
            401,
            denied.reason,
            headers={"WWW-Authenticate": f'Bearer realm="broadcaster", scope="{scope}"'},
        )
