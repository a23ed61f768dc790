"""Fan-out in worker processes: WHEP and the WebSocket work whichever worker holds a
viewer, and a worker that dies loses only its own viewers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
import pytest_asyncio
from whep_client import WhepViewer

from broadcaster.config import load_config
from broadcaster.server.pool import WorkerPool
from broadcaster.server.service import Service
from broadcaster.server.state import VIEWERS

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def service() -> AsyncIterator[Service]:
    base = load_config(None).with_server(port=0)
    svc = Service(replace(base, server=replace(base.server, workers=2)), "test")
    await svc.start()
    await svc.wait_healthy()
    yield svc
    await svc.close()


async def wait_for(predicate, timeout: float = 15.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def pool(service: Service) -> WorkerPool:
    assert service.app is not None
    viewers = service.app[VIEWERS]
    assert isinstance(viewers, WorkerPool)
    return viewers


async def test_viewers_spread_over_workers_and_everything_routes(service: Service) -> None:
    async with aiohttp.ClientSession() as http:
        viewers = [WhepViewer(service.url) for _ in range(4)]
        for v in viewers:
            await v.connect(http, audio=True)
        for v in viewers:
            frame = await v.frame(timeout=20)
            assert (frame.width, frame.height) == (1280, 720)
            # Sound too, from whichever worker holds the viewer.
            sound = await v.audio_frame(timeout=20)
            assert sound.sample_rate == 48_000 and sound.samples == 960
        p = pool(service)
        workers = [p.get(v.location.rsplit("/", 1)[1]).worker for v in viewers]  # type: ignore[union-attr]
        assert sorted(workers) == [0, 0, 1, 1]  # least loaded first
        # Layer selection reaches the worker that holds the session.
        target = viewers[1]
        async with http.post(
            service.url.rstrip("/") + target.layer_url, json={"encodingId": "180p"}
        ) as r:
            assert r.status == 200 and (await r.json())["mode"] == "pinned"
        for _ in range(90):
            frame = await target.frame()
            if (frame.width, frame.height) == (320, 180):
                break
        else:
            raise AssertionError("never switched to 180p")
        async with http.post(
            service.url.rstrip("/") + target.layer_url, json={"encodingId": "4k"}
        ) as r:
            assert r.status == 400 and "valid" in await r.json()
        # The page's WebSocket binds to a session in a worker: hello, rung, clock.
        sid = target.location.rsplit("/", 1)[1]  # type: ignore[union-attr]
        async with http.ws_connect(service.url + "ws") as sock:
            await sock.send_json({"type": "hello", "session": sid})
            got: dict[str, dict] = {}  # type: ignore[type-arg]
            deadline = time.monotonic() + 10
            # The mirror of a worker's sessions is at most one state push (0.25 s) old.
            while not (
                {"hello", "rung", "clock"} <= got.keys() and got["rung"]["rung"] == "180p"
            ):
                assert time.monotonic() < deadline, got
                msg = await sock.receive_json(timeout=5)
                got[msg["type"]] = msg
                if msg["type"] == "state":
                    assert msg["viewers"] == 4
        assert got["rung"]["mode"] == "pinned"
        assert got["clock"]["rtp_origin"] is not None
        # /api/viewers asks every worker; /metrics shows each.
        async with http.get(service.url + "api/viewers") as r:
            listed = (await r.json())["viewers"]
        assert sorted(v["worker"] for v in listed) == [0, 0, 1, 1]
        async with http.get(service.url + "metrics") as r:
            text = await r.text()
        assert 'broadcaster_worker_viewers{worker="0"} 2' in text
        assert 'broadcaster_worker_viewers{worker="1"} 2' in text
        assert 'broadcaster_worker_up{worker="1"} 1' in text
        assert "broadcaster_worker_loop_lag_p99_seconds" in text
        for v in viewers:
            await v.close(http)
        await wait_for(lambda: len(pool(service)) == 0, what="sessions to close")


async def test_a_dead_worker_loses_only_its_viewers_and_comes_back(service: Service) -> None:
    p = pool(service)
    async with aiohttp.ClientSession() as http:
        a, b = WhepViewer(service.url), WhepViewer(service.url)
        await a.connect(http)
        await b.connect(http)
        await a.frame(timeout=20)
        await b.frame(timeout=20)
        wa = p.get(a.location.rsplit("/", 1)[1]).worker  # type: ignore[union-attr]
        wb = p.get(b.location.rsplit("/", 1)[1]).worker  # type: ignore[union-attr]
        assert wa != wb
        victim = p._workers[wa]
        assert victim is not None
        os.kill(victim.process.pid, signal.SIGKILL)
        await wait_for(lambda: len(p) == 1, what="the dead worker's session to go")
        # The other worker's viewer goes on receiving.
        for _ in range(30):
            await b.frame()
        # The worker comes back and takes new viewers.
        await wait_for(lambda: p.stats()[wa].up and p.stats()[wa].restarts == 1, what="respawn")
        c = WhepViewer(service.url)
        await c.connect(http)
        await c.frame(timeout=20)
        assert p.get(c.location.rsplit("/", 1)[1]).worker == wa  # type: ignore[union-attr]
        await a.close()
        await b.close(http)
        await c.close(http)
        await wait_for(lambda: len(p) == 0, what="sessions to close")
