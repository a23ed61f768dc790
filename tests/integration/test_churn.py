"""Viewers joining and leaving for minutes leave nothing behind in the server.

The server runs in a process of its own (census_server.py: the real Service, which
reports its own fds, RSS, threads and asyncio tasks on request); 20 real aiortc WHEP
viewers run here. Each joins, watches for 1-5 s and leaves one of three ways: DELETE;
closing its peer connection without DELETE (DTLS says goodbye, the server sees the
connection close); or vanishing (ICE stopped first, so not a packet more: the server's
RTCP-silence watchdog must notice). A warm-up round, drained to zero viewers, is the
baseline; after DURATION seconds of churn, drained again, the server must be back to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from whep_client import WhepViewer

from broadcaster.server import rtc_internals

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "out" / "churn.json"
SEED = 7
DURATION = 120.0  # seconds of churn measured
WARMUP = 20.0  # seconds of churn before the baseline
VIEWERS = 20  # at once
WATCH_S = (1.0, 5.0)  # each viewer watches this long (uniform)
LEAVE = {"delete": 0.5, "close": 0.25, "vanish": 0.25}
# Vanished viewers are released after 10 s of RTCP silence (session.SILENT_TIMEOUT),
# checked once a second; the rest at once.
DRAIN_S = 30.0
# Bounds, from measurements on the 2-core dev machine: after 778 sessions in 2 min the
# idle server was back to the baseline's fds, tasks and threads, with 47 more GC-tracked
# objects and 7.6 MB more RSS; over 5 min (1955 sessions) RSS rose 7 MB in the first
# ~400 sessions (allocator warm-up: tracemalloc shows no Python-level growth) and then
# ~2 KB a session. 20 MB still catches any per-session leak of 26 KB or more (a leaked
# peer connection is hundreds), 1000 objects one of two objects a session.
MAX_FD_GROWTH = 10
MAX_TASK_GROWTH = 2
MAX_RSS_GROWTH_MB = 20
MAX_OBJECT_GROWTH = 1000


@dataclass
class Churn:
    rng: random.Random
    sessions: int = 0  # 201s
    frames: int = 0
    left: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


# Asks the census server: "stats" (the default) or "census" (after a full collection).
Ask = Callable[..., Awaitable[dict[str, Any]]]


@asynccontextmanager
async def census_server(stderr: Path) -> AsyncIterator[tuple[str, Ask]]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    with stderr.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("census_server.py")),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            cwd=ROOT,
            env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None
        stdin, stdout = proc.stdin, proc.stdout

        async def ask(what: str = "stats") -> dict[str, Any]:
            stdin.write(what.encode() + b"\n")
            await stdin.drain()
            answer: dict[str, Any] = json.loads(await asyncio.wait_for(stdout.readline(), 30))
            return answer

        try:
            hello = json.loads(await asyncio.wait_for(stdout.readline(), 30))
            yield hello["url"], ask
        finally:
            if proc.returncode is None:
                stdin.write(b"quit\n")
                await stdin.drain()
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def leave(viewer: WhepViewer, how: str, http: aiohttp.ClientSession) -> None:
    if how == "delete":
        await viewer.close(http)
    elif how == "close":
        await viewer.pc.close()
    else:  # vanish: ICE down first, so not even DTLS's close_notify gets out
        transports = {t.receiver.transport.transport for t in viewer.pc.getTransceivers()}
        for ice in transports:
            await ice.stop()
        await viewer.pc.close()


async def one_viewer(url: str, http: aiohttp.ClientSession, churn: Churn) -> None:
    viewer = WhepViewer(url)
    stage = "connect"
    try:
        await viewer.connect(http)
        churn.sessions += 1
        # The smallest rung: 20 viewers decode in this process, beside the server's
        # two processes on the same two cores.
        stage = "pin 180p"
        async with http.post(url.rstrip("/") + viewer.layer_url, json={"encodingId": "180p"}):
            pass
        stage = "watch"
        until = time.monotonic() + churn.rng.uniform(*WATCH_S)
        while time.monotonic() < until:
            await viewer.frame(timeout=10)
            churn.frames += 1
        how = churn.rng.choices(list(LEAVE), weights=list(LEAVE.values()))[0]
        stage = f"leave ({how})"
        await leave(viewer, how, http)
        churn.left[how] += 1
    except Exception as exc:
        churn.errors.append(f"{stage}: {type(exc).__name__}: {exc}")
        try:
            await viewer.close(http if viewer.location else None)
        except Exception as cleanup:  # the session may be gone already
            churn.errors.append(f"cleanup: {type(cleanup).__name__}: {cleanup}")


async def churn_for(seconds: float, url: str, http: aiohttp.ClientSession, churn: Churn) -> None:
    """VIEWERS slots, each one viewer after another until ``seconds`` are up."""
    end = time.monotonic() + seconds

    async def slot() -> None:
        while time.monotonic() < end:
            await one_viewer(url, http, churn)

    await asyncio.gather(*(slot() for _ in range(VIEWERS)))


async def drained(ask: Ask) -> dict[str, Any]:
    """Wait until the server has no viewer session left, then let closing finish."""
    deadline = time.monotonic() + DRAIN_S
    while (await ask())["viewers"] and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)  # aiortc's last close callbacks, the keep-alive connections
    return await ask("census")


@pytest.mark.slow
@pytest.mark.timeout(WARMUP + DURATION + 4 * DRAIN_S + 120)
async def test_viewers_churning_leave_no_fds_tasks_or_memory_behind(tmp_path: Path) -> None:
    # The viewers gather ICE candidates on loopback only, as the server does.
    rtc_internals.use_host_addresses(["127.0.0.1"])
    stderr = tmp_path / "server.stderr"
    try:
        async with census_server(stderr) as (url, ask):
            rng = random.Random(SEED)
            warmup = Churn(rng)
            async with aiohttp.ClientSession() as http:
                await churn_for(WARMUP, url, http, warmup)
            baseline = await drained(ask)

            churn = Churn(rng)
            peak: dict[str, int] = {}
            timeline = []
            started = time.monotonic()
            async with aiohttp.ClientSession() as http:
                work = asyncio.ensure_future(churn_for(DURATION, url, http, churn))
                while not work.done():
                    sample = await ask()
                    for key, value in sample.items():
                        peak[key] = max(peak.get(key, 0), value)
                    timeline.append(
                        [round(time.monotonic() - started, 1), churn.sessions, sample["viewers"]]
                        + [sample[k] for k in ("fds", "tasks")]
                        + [round(sample["rss"] / (1 << 20), 1)]
                    )
                    await asyncio.wait([work], timeout=2)
                await work
            churned_s = time.monotonic() - started
            final = await drained(ask)
    finally:
        rtc_internals.use_host_addresses(None)

    sessions = churn.sessions
    mb = 1 << 20
    stats = {
        "seed": SEED,
        "viewers_at_once": VIEWERS,
        "churn_s": round(churned_s, 1),
        "warmup_sessions": warmup.sessions,
        "sessions": sessions,
        "sessions_per_s": round(sessions / churned_s, 2),
        "left": dict(churn.left),
        "frames": churn.frames,
        "viewer_errors": churn.errors[:20],
        "baseline": baseline,
        "peak": peak,
        "final": final,
        "rss_growth_mb": round((final["rss"] - baseline["rss"]) / mb, 1),
        "timeline": {"columns": ["s", "sessions", "viewers", "fds", "tasks", "rss_mb"]}
        | {"rows": timeline},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(stats, indent=2) + "\n")
    print(
        f"\nchurn: {sessions} sessions in {churned_s:.0f} s ({stats['sessions_per_s']}/s, "
        f"{VIEWERS} at once, left {dict(churn.left)}, {len(churn.errors)} viewer errors)\n"
        f"  fds      baseline {baseline['fds']}  peak {peak['fds']}  final {final['fds']}\n"
        f"  RSS MB   baseline {baseline['rss'] / mb:.1f}  peak {peak['rss'] / mb:.1f}  "
        f"final {final['rss'] / mb:.1f}\n"
        f"  tasks    baseline {baseline['tasks']}  peak {peak['tasks']}  final {final['tasks']}\n"
        f"  threads  baseline {baseline['threads']}  peak {peak['threads']}  "
        f"final {final['threads']}\n"
        f"  objects  baseline {baseline['objects']}  final {final['objects']}"
    )

    log = stderr.read_text(errors="replace")
    assert "Traceback" not in log and "never retrieved" not in log, log[-3000:]
    # The churn happened: viewers came and went, by all three ways, and saw video.
    assert sessions >= 10 * DURATION / sum(WATCH_S), stats
    assert all(churn.left[how] > 0 for how in LEAVE), churn.left
    assert len(churn.errors + warmup.errors) <= sessions // 100, churn.errors[:5]
    assert peak["viewers"] >= VIEWERS

    assert final["viewers"] == 0 and final["sessions"] == 0, final
    assert final["peer_connections"] == 0, final
    assert final["fds"] <= baseline["fds"] + MAX_FD_GROWTH, stats
    assert final["tasks"] <= baseline["tasks"] + MAX_TASK_GROWTH, stats
    assert final["threads"] <= baseline["threads"], stats
    assert final["objects"] <= baseline["objects"] + MAX_OBJECT_GROWTH, stats
    assert stats["rss_growth_mb"] < MAX_RSS_GROWTH_MB, stats
