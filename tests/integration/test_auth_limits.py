"""Auth and limits against the real service: tokens, signed links, capacity, offer rate."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
import pytest_asyncio
from aiortc import RTCPeerConnection
from serve_process import running_service
from whep_client import WhepViewer

from broadcaster.config import AuthConfig, Config, LimitsConfig, load_config
from broadcaster.server.auth import sign_view_token
from broadcaster.server.service import Service

pytestmark = pytest.mark.asyncio(loop_scope="module")

VIEW = "view-token-for-tests-0001"
CONTROL = "control-token-for-tests-0001"
SECRET = "link-secret-for-tests-0123456789abcdef"
SDP = {"Content-Type": "application/sdp"}


def _config(auth: AuthConfig, limits: LimitsConfig) -> Config:
    base = load_config(None).with_server(port=0)
    return replace(base, auth=auth, limits=limits)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def locked() -> AsyncIterator[Service]:
    config = _config(
        AuthConfig(view_tokens=(VIEW,), control_tokens=(CONTROL,), link_secret=SECRET),
        LimitsConfig(max_viewers=2, offers_per_minute=1000, retry_after=7),
    )
    async with running_service(config) as svc:
        yield svc


def peer_connections() -> int:
    gc.collect()
    return sum(isinstance(o, RTCPeerConnection) for o in gc.get_objects())


async def offer_sdp() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def wait_for(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("headers", "query", "reason"),
    [
        ({}, "", "authorization required"),
        ({"Authorization": "Bearer wrong-token-000000000"}, "", "invalid token"),
        ({"Authorization": f"Basic {VIEW}"}, "", "authorization required"),
        ({"Authorization": f"Bearer {CONTROL}"}, "", "invalid token"),
        ({}, "?token=" + sign_view_token(SECRET, int(time.time()) - 1), "token expired"),
        ({}, "?token=" + sign_view_token("x" * 32, int(time.time()) + 60), "invalid token"),
    ],
)
async def test_whep_refuses_before_any_peer_connection(
    locked: Service, http: aiohttp.ClientSession, headers: dict[str, str], query: str, reason: str
) -> None:
    pc, sdp = await offer_sdp()
    before = peer_connections()
    async with http.post(locked.url + "whep" + query, data=sdp, headers={**SDP, **headers}) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert resp.headers["Access-Control-Allow-Origin"] == "*"  # a player can read why
        assert (await resp.json())["error"].startswith(reason)
    assert peer_connections() == before  # none made, none leaked
    assert locked.viewers == 0
    await pc.close()


async def test_correct_token_and_signed_link_play(
    locked: Service, http: aiohttp.ClientSession
) -> None:
    by_token = WhepViewer(locked.url, token=VIEW)
    await by_token.connect(http)
    frame = await by_token.frame(timeout=15)
    assert (frame.width, frame.height) == (1280, 720)

    link = sign_view_token(SECRET, int(time.time()) + 60)
    # The page sends its signed link (?token=) as a bearer token.
    by_link = WhepViewer(locked.url, token=link)
    await by_link.connect(http)
    await by_link.frame(timeout=15)
    assert locked.viewers == 2

    # max_viewers = 2: the third is refused with Retry-After, before a peer connection.
    pc, sdp = await offer_sdp()
    before = peer_connections()
    async with http.post(
        locked.url + "whep", data=sdp, headers={**SDP, "Authorization": f"Bearer {VIEW}"}
    ) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "7"
        assert "viewer limit" in (await resp.json())["error"]
    assert peer_connections() == before
    await pc.close()

    # DELETE needs only the unguessable session id, which the viewer holds.
    await by_token.close(http)
    await by_link.close(http)
    await wait_for(lambda: locked.viewers == 0)


async def test_control_api_needs_the_control_token(
    locked: Service, http: aiohttp.ClientSession
) -> None:
    for path in ("api/viewers", "metrics"):
        async with http.get(locked.url + path) as resp:
            assert resp.status == 401, path
            assert "error" in await resp.json()
        async with http.get(locked.url + path, headers={"Authorization": f"Bearer {VIEW}"}) as resp:
            assert resp.status == 401, path
        async with http.get(
            locked.url + path, headers={"Authorization": f"Bearer {CONTROL}"}
        ) as resp:
            assert resp.status == 200, path
    # The page's public needs stay public.
    for path in ("healthz", "api/ladder", ""):
        async with http.get(locked.url + path) as resp:
            assert resp.status == 200, path


async def test_websocket_needs_a_view_token(locked: Service, http: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(locked.url + "ws")
    assert info.value.status == 401
    link = sign_view_token(SECRET, int(time.time()) + 60)
    for token in (VIEW, link):
        async with http.ws_connect(locked.url + "ws?token=" + token) as sock:
            msg = await sock.receive_json(timeout=5)
            assert msg["type"] == "state"


async def test_offers_per_ip_are_rate_limited(http: aiohttp.ClientSession) -> None:
    async with running_service(_config(AuthConfig(), LimitsConfig(offers_per_minute=3))) as svc:
        statuses = []
        for _ in range(5):
            # Garbage offers count too: the limit is on attempts, before any parsing.
            async with http.post(svc.url + "whep", data="v=0\r\n", headers=SDP) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert int(resp.headers["Retry-After"]) >= 1
                    assert "too many offers" in (await resp.json())["error"]
        assert statuses == [400, 400, 400, 429, 429]
        async with http.get(svc.url + "healthz") as resp:
            assert resp.status == 200  # only offers are limited
