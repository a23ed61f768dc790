"""The /ws control and chat socket against the real service: protocol, limits, robustness."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from serve_process import running_service
from whep_client import WhepViewer

from broadcaster.config import load_config
from broadcaster.server import ws as ws_module
from broadcaster.server.service import Service
from broadcaster.server.state import VIEWERS, WS_HUB

pytestmark = pytest.mark.asyncio(loop_scope="module")

Msg = dict[str, Any]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def service() -> AsyncIterator[Service]:
    async with running_service(load_config(None).with_server(port=0)) as svc:
        yield svc


async def connect(http: aiohttp.ClientSession, service: Service) -> aiohttp.ClientWebSocketResponse:
    sock = await http.ws_connect(service.url + "ws")
    first = await recv(sock)
    assert first["type"] == "state", first
    history = await recv(sock)
    assert history["type"] == "history", history
    return sock


async def recv(sock: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> Msg:
    msg = await sock.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, sock.close_code)
    data: Msg = json.loads(msg.data)
    return data


async def recv_type(sock: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 5.0) -> Msg:
    """The next message of ``kind``, skipping others (viewer counts, rung updates)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await recv(sock, max(0.01, deadline - time.monotonic()))
        if msg["type"] == kind:
            return msg


async def drain(sock: aiohttp.ClientWebSocketResponse, quiet: float = 0.3) -> list[Msg]:
    """Everything that arrives until the socket is quiet for ``quiet`` seconds."""
    out: list[Msg] = []
    while True:
        try:
            msg = await sock.receive(timeout=quiet)
        except TimeoutError:
            return out
        if msg.type != aiohttp.WSMsgType.TEXT:
            return out
        out.append(json.loads(msg.data))


async def ping_ok(sock: aiohttp.ClientWebSocketResponse) -> None:
    t0 = time.time() * 1000
    await sock.send_json({"type": "ping", "t0": t0})
    pong = await recv_type(sock, "pong")
    assert pong["t0"] == t0
    # Same machine: the server's clock is the test's clock.
    assert t0 - 50 < pong["server_ms"] < time.time() * 1000 + 50


async def test_state_on_connect(service: Service, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(service.url + "ws") as sock:
        state = await recv(sock)
        assert state["type"] == "state"
        assert state["stream"] == "live"
        assert state["viewers"] == 0
        assert [r["name"] for r in state["ladder"]] == ["720p", "360p", "180p"]
        assert state["ladder"][2] | {} == {
            "name": "180p",
            "width": 320,
            "height": 180,
            "fps": 30,
            "bitrate": 250,
        }
        assert (await recv(sock))["type"] == "history"
        await ping_ok(sock)


async def test_malformed_and_unknown_messages_get_errors(
    service: Service, http: aiohttp.ClientSession
) -> None:
    sock = await connect(http, service)
    cases: list[tuple[str | bytes, str]] = [
        ("{not json", "bad_json"),
        ("", "bad_json"),
        ("[" * 4000 + "]" * 4000, "bad_json"),  # nesting, not size
        ('{"type": "ping", "t0": NaN}', "bad_json"),
        ("[1, 2]", "bad_message"),
        ('"hello"', "bad_message"),
        ('{"no": "type"}', "bad_message"),
        ('{"type": 7}', "bad_message"),
        ('{"type": "launch_missiles"}', "unknown_type"),
        ('{"type": "ping"}', "bad_field"),
        ('{"type": "ping", "t0": "now"}', "bad_field"),
        ('{"type": "ping", "t0": true}', "bad_field"),
        ('{"type": "ping", "t0": 1e999}', "bad_field"),
        ('{"type": "ping", "t0": 1' + "0" * 5000 + "}", "bad_json"),  # int too long to parse
        ('{"type": "chat", "name": ["x"], "text": 1}', "bad_field"),
        ('{"type": "hello"}', "unknown_session"),
        (b"\x00\x01binary", "bad_message"),
    ]
    for payload, code in cases:
        if isinstance(payload, bytes):
            await sock.send_bytes(payload)
        else:
            await sock.send_str(payload)
        reply = await recv_type(sock, "error")
        assert reply["code"] == code, (payload[:40], reply)
        assert reply["message"]
    # Still open and answering after all of that.
    await ping_ok(sock)
    await sock.close()
    async with http.get(service.url + "healthz") as res:
        assert res.status == 200


async def test_oversize_message_closes_with_1009(
    service: Service, http: aiohttp.ClientSession
) -> None:
    sock = await connect(http, service)
    other = await connect(http, service)
    await sock.send_str(json.dumps({"type": "chat", "name": "x", "text": "a" * 20_000}))
    msg = await sock.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
    assert sock.close_code == 1009
    # A message just under the limit is fine (and answered with an error, not a close).
    limit = service.config.limits.ws_max_message_bytes
    big = json.dumps({"type": "ping", "t0": 1, "pad": "p" * (limit - 100)})
    assert len(big) <= limit
    await other.send_str(big)
    assert (await recv_type(other, "pong"))["t0"] == 1
    await ping_ok(other)
    await other.close()


async def test_hello_with_bad_id_keeps_socket_open(
    service: Service, http: aiohttp.ClientSession
) -> None:
    sock = await connect(http, service)
    for bad in ("nope", "", 42, None, "x" * 1000):
        await sock.send_json({"type": "hello", "session": bad})
        err = await recv_type(sock, "error")
        assert err["code"] == "unknown_session", err
    await ping_ok(sock)
    await sock.close()


async def test_hello_binds_rung_and_clock(service: Service, http: aiohttp.ClientSession) -> None:
    viewer = WhepViewer(service.url)
    await viewer.connect(http)
    sock = await connect(http, service)
    try:
        await viewer.frame(timeout=15)
        assert viewer.location is not None
        session_id = viewer.location.rsplit("/", 1)[-1]
        session = service.app[VIEWERS].get(session_id)  # type: ignore[index]
        assert session is not None

        await sock.send_json({"type": "hello", "session": session_id})
        ack = await recv_type(sock, "hello")
        assert ack["viewer"] == session.public_id
        assert session_id not in json.dumps(ack)  # the secret id is never echoed
        rung = await recv_type(sock, "rung")
        assert rung == {"type": "rung", "rung": "720p", "target": "720p", "mode": "auto"}
        clock = await recv_type(sock, "clock")
        assert clock["rtp_origin"] == session.rtp_origin
        assert clock["epoch"] == pytest.approx(service.broadcast.clock_epoch, abs=0.01)  # type: ignore[union-attr]
        assert clock["rate"] == 90_000

        # Pinning through WHEP's layer URL shows up as rung messages on the socket.
        async with http.post(
            service.url.rstrip("/") + viewer.layer_url, json={"encodingId": "180p"}
        ) as res:
            assert res.status == 200
        pinned = await recv_type(sock, "rung")
        assert (pinned["target"], pinned["mode"]) == ("180p", "pinned")
        if pinned["rung"] != "180p":  # the move itself waits for a keyframe
            pinned = await recv_type(sock, "rung")
        assert pinned == {"type": "rung", "rung": "180p", "target": "180p", "mode": "pinned"}
    finally:
        await sock.close()
        await viewer.close(http)


async def test_viewer_count_follows_whep_sessions(
    service: Service, http: aiohttp.ClientSession
) -> None:
    # Counts are polled: let an earlier test's viewer leave (and be noticed) first.
    while service.viewers:
        await asyncio.sleep(0.05)
    await asyncio.sleep(2 * ws_module.POLL_S)
    sock = await connect(http, service)
    viewer = WhepViewer(service.url)
    await viewer.connect(http)
    try:
        joined = await recv_type(sock, "viewers")
        assert joined["count"] == 1
    finally:
        await viewer.close(http)
    left = await recv_type(sock, "viewers")
    assert left["count"] == 0
    await sock.close()


async def test_chat_reaches_everyone_with_limits(
    service: Service, http: aiohttp.ClientSession
) -> None:
    a = await connect(http, service)
    b = await connect(http, service)
    limit = ws_module.MAX_TEXT_CHARS

    await a.send_json({"type": "chat", "name": "  alice  ", "text": "<b>x</b> & " + "é"})
    for sock, mine in ((a, True), (b, False)):
        line = await recv_type(sock, "chat")
        # Trimmed, but not escaped: HTML is the page's business (it uses textContent).
        assert (line["name"], line["text"], line["mine"]) == ("alice", "<b>x</b> & é", mine)
        assert abs(line["at"] - time.time() * 1000) < 5000

    full = "y" * limit
    await b.send_json({"type": "chat", "name": "b" * ws_module.MAX_NAME_CHARS, "text": full})
    for sock in (a, b):
        assert (await recv_type(sock, "chat"))["text"] == full

    await a.send_json({"type": "chat", "name": "alice", "text": "z" * (limit + 1)})
    assert (await recv_type(a, "error"))["code"] == "too_long"
    await a.send_json({"type": "chat", "name": "n" * 33, "text": "hi"})
    assert (await recv_type(a, "error"))["code"] == "too_long"
    for name, text in (("alice", "   \n\t "), ("", "hi"), ("\u202e\u200b", "hi")):
        await a.send_json({"type": "chat", "name": name, "text": text})
        assert (await recv_type(a, "error"))["code"] == "empty"
    # Control, bidi-override and lone-surrogate characters are removed; inner newlines stay.
    await a.send_str('{"type": "chat", "name": "al\\u202eice\\u0007", "text": "one\\ntwo\\ud800"}')
    line = await recv_type(b, "chat")
    assert (line["name"], line["text"]) == ("alice", "one\ntwo")
    # Nothing over the limit ever reached b.
    assert all(m["type"] != "chat" for m in await drain(b))

    # A newcomer gets the recent lines.
    async with http.ws_connect(service.url + "ws") as c:
        await recv_type(c, "state")
        history = await recv_type(c, "history")
        texts = [m["text"] for m in history["messages"]]
        assert texts[-3:] == ["<b>x</b> & é", full, "one\ntwo"]
    await a.close()
    await b.close()


async def test_flood_is_throttled_for_the_flooder_only(
    service: Service, http: aiohttp.ClientSession
) -> None:
    flooder = await connect(http, service)
    calm = await connect(http, service)
    n = 200
    for i in range(n):
        await flooder.send_json({"type": "chat", "name": "spam", "text": f"spam {i}"})
    # The calm socket's own chat still goes out to everyone, and it still gets pongs.
    await calm.send_json({"type": "chat", "name": "calm", "text": "still here"})
    got = await drain(calm, quiet=0.5)
    await ping_ok(calm)
    spam = [m for m in got if m["type"] == "chat" and m["name"] == "spam"]
    assert len(spam) == ws_module.CHAT_BURST, len(spam)
    assert any(m["type"] == "chat" and m["text"] == "still here" for m in got)
    assert not any(m["type"] == "error" for m in got)  # no errors for the calm one

    flood_replies = await drain(flooder, quiet=0.5)
    errors = [m for m in flood_replies if m["type"] == "error"]
    assert errors and all(e["code"] == "rate_limited" for e in errors)
    assert all(e["retry_after"] >= 0 for e in errors)
    # Replies are bounded: one per allowed message at most, never one per flood message.
    assert len(errors) <= service.config.limits.ws_message_burst + 5, len(errors)
    assert "still here" in [m.get("text") for m in flood_replies]

    # A ping/garbage flood: same story.
    for _ in range(1000):
        await flooder.send_str("{garbage")
    await ping_ok(calm)
    await flooder.close()
    await calm.close()
    async with http.get(service.url + "healthz") as res:
        assert res.status == 200


async def test_closed_sockets_leave_the_registry(
    service: Service, http: aiohttp.ClientSession
) -> None:
    hub = service.app[WS_HUB]  # type: ignore[index]
    await asyncio.sleep(0.2)
    before = len(hub)
    socks = [await connect(http, service) for _ in range(5)]
    assert len(hub) == before + 5
    for s in socks:
        await s.close()
    deadline = time.monotonic() + 5
    while len(hub) != before:
        assert time.monotonic() < deadline, len(hub)
        await asyncio.sleep(0.05)


async def test_shutdown_says_ended_then_closes() -> None:
    svc = Service(load_config(None).with_server(port=0), "test")
    await svc.start()
    try:
        await svc.wait_healthy()
        async with aiohttp.ClientSession() as http:
            socks = [await connect(http, svc) for _ in range(3)]
            closing = asyncio.ensure_future(svc.close())
            for sock in socks:
                ended = await recv_type(sock, "state")
                assert ended["stream"] == "ended"
                msg = await sock.receive(timeout=5)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
                assert sock.close_code == 1001
            await asyncio.wait_for(closing, 15)
            assert len(svc.app[WS_HUB]) == 0  # type: ignore[index]
    finally:
        await svc.close()
