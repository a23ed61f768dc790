"""Secrets never reach the logs: every record of a full session, at INFO, is searched for
tokens, signed links, TURN credentials and secrets, ICE passwords and SDP bodies."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import replace

import aiohttp
import pytest
from whep_client import WhepViewer

from broadcaster.config import AuthConfig, IceServer, load_config
from broadcaster.server.auth import sign_view_token
from broadcaster.server.service import Service

VIEW = "view-token-secret-0001"
WRONG = "wrong-token-guess-0002"
CONTROL = "control-token-secret-0003"
LINK_SECRET = "link-secret-0123456789abcdef0123456789"
TURN_PASSWORD = "static-turn-password-0004"
TURN_REST_SECRET = "turn-rest-shared-secret-0005"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Format as a real handler would, traceback included.
        self.lines.append(logging.Formatter("%(name)s %(message)s").format(record))


@pytest.fixture
def collected() -> Iterator[Collect]:
    root = logging.getLogger()
    handler, level = Collect(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # everything but DEBUG, from every library
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _ice_pwds(sdp: str) -> list[str]:
    return re.findall(r"a=ice-pwd:(\S+)", sdp)


async def test_no_secret_in_any_log_line(collected: Collect) -> None:
    base = load_config(None).with_server(port=0)
    # TURN servers nobody listens on: their credentials still flow through aiortc/aioice.
    turn = (
        IceServer(urls=("turn:127.0.0.1:9?transport=udp",), username="u", credential=TURN_PASSWORD),
        IceServer(urls=("turn:127.0.0.1:9?transport=tcp",), secret=TURN_REST_SECRET),
    )
    config = replace(
        base,
        ice=replace(base.ice, servers=turn),
        auth=AuthConfig(view_tokens=(VIEW,), control_tokens=(CONTROL,), link_secret=LINK_SECRET),
    )
    service = Service(config, "test")
    await service.start()
    secrets = [VIEW, WRONG, CONTROL, LINK_SECRET, TURN_PASSWORD, TURN_REST_SECRET]
    try:
        await service.wait_healthy()
        async with aiohttp.ClientSession() as http:
            # Refused attempts: a wrong token, a bad offer.
            async with http.post(
                service.url + "whep",
                data="v=0\r\nnot an offer\r\n",
                headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {WRONG}"},
            ) as resp:
                assert resp.status == 401
            link = sign_view_token(LINK_SECRET, int(time.time()) + 60)
            secrets.append(link)
            viewer = WhepViewer(service.url, token=link)
            await viewer.connect(http)
            await viewer.frame(timeout=15)
            offer = viewer.pc.localDescription.sdp
            answer = viewer.pc.remoteDescription.sdp
            secrets += _ice_pwds(offer) + _ice_pwds(answer)
            # TURN credentials handed to the viewer (static and freshly minted).
            creds = re.findall(r'credential="([^"]+)"', " ".join(viewer.links))
            assert TURN_PASSWORD in creds and len(creds) == 2
            secrets += creds
            # The session id is the only key to PATCH/DELETE a session: logs name viewers
            # by their public id instead, and not even a prefix of the real one appears.
            assert viewer.location is not None
            session_id = viewer.location.rsplit("/", 1)[1]
            secrets += [session_id[:8], session_id[-8:]]
            async with http.ws_connect(service.url + f"ws?token={VIEW}") as sock:
                await sock.receive_json(timeout=5)
            async with http.get(
                service.url + "api/viewers", headers={"Authorization": f"Bearer {CONTROL}"}
            ) as resp:
                assert resp.status == 200
            await viewer.close(http)
    finally:
        await service.close()
    text = "\n".join(collected.lines)
    assert collected.lines, "the session logged nothing at INFO: the test would prove nothing"
    for secret in secrets:
        assert secret not in text, f"a secret ({len(secret)} chars) appears in the logs"
    for sdp_marker in ("a=fingerprint", "a=ice-pwd", "v=0\r", "m=video"):
        assert sdp_marker not in text, f"SDP text ({sdp_marker!r}) appears in the logs"
