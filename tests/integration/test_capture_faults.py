"""Capture faults mid-stream against the real service: viewers stay connected and watching.

A file source whose file disappears (the stream carries a "signal lost" slate, then the
file again once it is back), and a rung whose real encoder breaks (the test hook
BROADCASTER_FAULT_ENCODER): real capture process, real aiortc WHEP viewers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from media import write_clip
from serve_process import running_service
from whep_client import WhepViewer

from broadcaster.capture.faults import ENV_ENCODER_FAULT
from broadcaster.config import parse_config
from broadcaster.server.service import Service
from broadcaster.server.state import VIEWERS


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# A small ladder keeps the capture process (and the test's own decoding) cheap enough
# to run at its nominal rate on a loaded two-core machine.
LADDER = [
    {"name": "360p", "width": 640, "height": 360, "fps": 30, "bitrate": 800},
    {"name": "270p", "width": 480, "height": 270, "fps": 30, "bitrate": 500},
    {"name": "180p", "width": 320, "height": 180, "fps": 30, "bitrate": 250},
]
SIZES = {(640, 360), (480, 270), (320, 180)}


def running(source: str) -> contextlib.AbstractAsyncContextManager[Service]:
    return running_service(parse_config({"ladder": LADDER}).with_server(port=0), source)


@dataclass
class Watcher:
    """Decodes a viewer's frames in the background, noting when each arrived and its size."""

    viewer: WhepViewer
    frames: list[tuple[float, int, int]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    stopping: bool = False

    def start(self) -> None:
        track = self.viewer.track
        assert track is not None

        async def watch() -> None:
            # No wait_for here: on Python 3.11 it can swallow a cancellation that races
            # with a frame arriving, and the watcher would never stop. The flag ends it.
            while not self.stopping:
                frame = await track.recv()
                self.frames.append((time.monotonic(), frame.width, frame.height))

        self.task = asyncio.ensure_future(watch())

    def since(self, t: float) -> list[tuple[float, int, int]]:
        assert self.task is not None and not self.task.done(), "the viewer stopped receiving"
        return [f for f in self.frames if f[0] >= t]

    def sizes_since(self, t: float) -> set[tuple[int, int]]:
        return {(w, h) for _, w, h in self.since(t)}

    def assert_flowing(self) -> None:
        """Frames still arrive now (a stalled stream would leave a gap at the end)."""
        assert self.frames and time.monotonic() - self.frames[-1][0] < 1.0, "no recent frame"

    async def stop(self) -> None:
        assert self.task is not None
        self.stopping = True
        self.task.cancel()
        await asyncio.wait({self.task}, timeout=5)
        if self.task.done() and not self.task.cancelled():
            self.task.exception()  # retrieved: a stream that ended is not an error here


@contextlib.asynccontextmanager
async def watching(svc: Service, http: aiohttp.ClientSession) -> AsyncIterator[Watcher]:
    """A connected viewer whose frames are decoded in the background; always torn down."""
    viewer = WhepViewer(svc.url)
    watcher = Watcher(viewer)
    try:
        await viewer.connect(http)
        await viewer.frame(timeout=15)
        watcher.start()
        yield watcher
    finally:
        if watcher.task is not None:
            await watcher.stop()
        await viewer.close()


async def wait_for(predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    """Poll until ``predicate()``; returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def metric(http: aiohttp.ClientSession, base: str, sample: str) -> float:
    async with http.get(base + "metrics") as resp:
        text = await resp.text()
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    assert match, f"{sample} not in /metrics"
    return float(match.group(1))


async def test_file_removed_mid_stream_slate_then_resumes(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    clip = write_clip(tmp_path / "clip.mp4", seconds=1.0)
    away = tmp_path / "moved-away.mp4"
    async with running(f"file:{clip}") as svc, watching(svc, http) as watcher:
        assert svc.broadcast is not None and svc.app is not None
        broadcast = svc.broadcast
        [session_id] = [s.id for s in svc.app[VIEWERS]]

        os.rename(clip, away)
        # The open file plays to its end (<= 1 s), then reopening it for the loop fails.
        await wait_for(lambda: broadcast.source_state == "lost", 5, "the source lost")
        lost_at = time.monotonic()
        assert await metric(http, svc.url, "broadcaster_source_live") == 0
        status, body = await get_json(http, svc.url + "healthz")
        assert status == 200 and body["status"] == "ok"  # the slate is a live stream
        assert body["source"] == "lost" and "no such file" in body["source_error"]
        assert "no such file" in broadcast.source_message

        await asyncio.sleep(2.0)  # away for a while: several reopen attempts fail
        # The slate keeps coming (30 fps nominal; the bound is loose for a loaded box).
        assert len(watcher.since(lost_at)) >= 10
        assert watcher.sizes_since(lost_at) <= SIZES
        watcher.assert_flowing()
        status, body = await get_json(http, svc.url + "healthz")
        assert body["source"] == "lost"

        os.rename(away, clip)
        back_in = await wait_for(lambda: broadcast.source_state == "live", 10, "the source back")
        # At most one back-off step (5 s) plus the reopen itself.
        assert back_in < 7.0
        resumed = time.monotonic()
        await asyncio.sleep(1.5)
        assert len(watcher.since(resumed)) >= 5
        watcher.assert_flowing()
        assert await metric(http, svc.url, "broadcaster_source_live") == 1
        assert await metric(http, svc.url, "broadcaster_source_losses_total") == 1

        # The viewer was never dropped: same session, still connected.
        assert [s.id for s in svc.app[VIEWERS]] == [session_id]
        assert watcher.viewer.pc.connectionState == "connected"


async def test_encoder_fault_moves_viewer_off_the_failed_rung(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rung 1 (270p) breaks after 180 frames (6 s at 30 fps; longer on a loaded machine,
    # where the capture drops frames): time to join and settle on it first. The capture
    # process is spawned with this environment.
    monkeypatch.setenv(ENV_ENCODER_FAULT, "1:180")
    async with running("test") as svc, watching(svc, http) as watcher:
        assert svc.broadcast is not None and svc.capture is not None and svc.app is not None
        broadcast = svc.broadcast
        layer = svc.url.rstrip("/") + watcher.viewer.layer_url
        async with http.post(layer, json={"encodingId": "270p"}) as resp:
            assert resp.status == 200
        pinned = time.monotonic()
        await wait_for(lambda: (480, 270) in watcher.sizes_since(pinned), 10, "270p")
        assert broadcast.rung_available(1), "the fault fired before the viewer got there"
        [session_id] = [s.id for s in svc.app[VIEWERS]]

        await wait_for(lambda: not broadcast.rung_available(1), 30, "the rung to fail")
        failed_at = time.monotonic()
        # Moved to the next lower rung (180p) at its keyframe; the stream goes on.
        await wait_for(lambda: (320, 180) in watcher.sizes_since(failed_at), 5, "180p")
        settled = time.monotonic()
        await asyncio.sleep(1.5)
        assert len(watcher.since(settled)) >= 10
        assert watcher.sizes_since(settled) == {(320, 180)}
        watcher.assert_flowing()

        status, viewers = await get_json(http, svc.url + "api/viewers")
        [entry] = viewers["viewers"]
        assert entry["rung"] == "180p" and entry["target"] == "180p"
        assert viewers["switches"].get("rung-failed") == 1
        status, health = await get_json(http, svc.url + "healthz")
        assert status == 200 and health["status"] == "ok"
        assert health["rungs_down"] == ["270p"]
        async with http.get(svc.url + "api/ladder") as resp:
            ladder = await resp.json()
        assert [r["available"] for r in ladder["rungs"]] == [True, False, True]
        # Pinning the dead rung is refused, naming what is left.
        async with http.post(layer, json={"encodingId": "270p"}) as resp:
            assert resp.status == 409
            refused = await resp.json()
        assert refused["valid"] == ["auto", "360p", "180p"] and "unavailable" in refused["error"]
        assert await metric(http, svc.url, 'broadcaster_rung_available{rung="270p"}') == 0
        assert await metric(http, svc.url, 'broadcaster_rung_available{rung="180p"}') == 1
        assert svc.capture.process.is_alive() and not svc.failed.is_set()
        assert [s.id for s in svc.app[VIEWERS]] == [session_id]

        # Back to Auto: the policy chooses among the live rungs only.
        async with http.post(layer, json={"encodingId": "auto"}) as resp:
            assert resp.status == 200
        await asyncio.sleep(1.5)
        session = svc.app[VIEWERS].get(session_id)
        assert session is not None and 1 not in (session.switcher.target, session.switcher.current)
        watcher.assert_flowing()
