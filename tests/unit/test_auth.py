"""Tokens and signed view links: who may watch, control and publish."""

from __future__ import annotations

import pytest

from broadcaster.config import AuthConfig
from broadcaster.server.auth import Authorizer, Denied, check_view_link, sign_view_token

VIEW = "view-token-0123456789"
CONTROL = "control-token-0123456789"
SECRET = "s" * 32
NOW = 1_800_000_000.0

OPEN = Authorizer(AuthConfig())
LOCKED = Authorizer(
    AuthConfig(view_tokens=(VIEW,), control_tokens=(CONTROL,), link_secret=SECRET)
)
LINK = sign_view_token(SECRET, int(NOW) + 60)


@pytest.mark.parametrize(
    ("auth", "scope", "token", "now", "expected"),
    [
        # Off by default: viewing and control are open, publishing never is.
        (OPEN, "view", None, NOW, None),
        (OPEN, "control", None, NOW, None),
        (OPEN, "publish", None, NOW, "authorization required"),
        (OPEN, "publish", "anything-at-all-000", NOW, "invalid token"),
        # Configured: no token, a wrong one, one of another scope.
        (LOCKED, "view", None, NOW, "authorization required"),
        (LOCKED, "view", "wrong-token-0123456789", NOW, "invalid token"),
        (LOCKED, "view", CONTROL, NOW, "invalid token"),
        (LOCKED, "control", VIEW, NOW, "invalid token"),
        (LOCKED, "view", VIEW[:-1], NOW, "invalid token"),
        (LOCKED, "view", VIEW, NOW, None),
        (LOCKED, "control", CONTROL, NOW, None),
        # Signed links: valid until they expire, for viewing only, not forgeable.
        (LOCKED, "view", LINK, NOW, None),
        (LOCKED, "view", LINK, NOW + 59, None),
        (LOCKED, "view", LINK, NOW + 60, "token expired"),
        (LOCKED, "control", LINK, NOW, "invalid token"),
        (LOCKED, "view", LINK[:-2] + "AA", NOW, "invalid token"),
        (LOCKED, "view", sign_view_token("t" * 32, int(NOW) + 60), NOW, "invalid token"),
        # A later expiry with the old signature does not pass.
        (LOCKED, "view", LINK.replace(str(int(NOW) + 60), str(int(NOW) + 9999)), NOW, "invalid"),
        (LOCKED, "view", "v1.notanumber.abc", NOW, "invalid token"),
        (LOCKED, "view", "v1..", NOW, "invalid token"),
    ],
)
def test_authorizer(
    auth: Authorizer, scope: str, token: str | None, now: float, expected: str | None
) -> None:
    got = auth.check(scope, token, now)  # type: ignore[arg-type]
    if expected is None:
        assert got is None
    else:
        assert isinstance(got, Denied) and got.reason.startswith(expected), got


def test_link_only_config_requires_view_auth() -> None:
    auth = Authorizer(AuthConfig(link_secret=SECRET))
    assert auth.required("view") and not auth.required("control")
    assert auth.check("view", LINK, NOW) is None
    assert auth.check("view", VIEW, NOW) == Denied("invalid token")


def test_signed_link_round_trip() -> None:
    token = sign_view_token(SECRET, 2_000_000_000)
    assert token.startswith("v1.2000000000.")
    assert check_view_link(SECRET, token, 1_999_999_999) is None
    assert check_view_link(SECRET, token, 2_000_000_000) == Denied("token expired")
