"""The netns harness itself: namespaces, htb UDP cap, nft loss, Chromium in the viewer
namespace, the Timeline, and cleanup. Proven against today's server, before any
adaptive-bitrate scenario builds on it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chromium import require_chromium

from .harness import (
    SERVER_DEV,
    SERVER_IP,
    NetnsPair,
    Sample,
    Timeline,
    netns_list,
    queue_bytes,
    run,
    tool,
)

pytestmark = [pytest.mark.netns]

OUT_DIR = Path(__file__).resolve().parents[2] / "bench" / "out"

CAP_KBPS = 1200
REMB_UNSHAPED_MIN_KBPS = 1500
REMB_CAPPED_MAX_KBPS = 1300
RECV_CAPPED_MAX_KBPS = 1300
FALL_WITHIN_S = 5.0
HTTP_MAX_MS = 500
LOSS_PCT = 20

HEALTHZ_FETCH_JS = """async () => {
  const t0 = performance.now();
  const res = await fetch("/healthz", {cache: "no-store"});
  await res.text();
  return {status: res.status, ms: performance.now() - t0};
}"""


# Pin the top rung through the session's layer URL: the cap must bite whatever the
# server's own rung policy would do (today's server already steps down on low REMB).
PIN_JS = """async (rung) => {
  const deadline = performance.now() + 10000;
  while (!(window.player && window.player.layerUrl) && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!window.player.layerUrl) return "no layer URL";
  const res = await fetch(window.player.layerUrl, {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({encodingId: rung}),
  });
  return res.status;
}"""


def root_view() -> tuple[str, str, str]:
    """The root namespace's qdiscs, firewall and routes (read only): must never change."""
    return (
        run([tool("tc"), "qdisc", "show"]),
        run([tool("nft"), "list", "ruleset"], check=False),
        run([tool("ip"), "route", "show", "table", "all"]),
    )


# ---------------------------------------------------------------- without a browser


def test_shaping_commands_and_cleanup() -> None:
    before = root_view()
    pair = NetnsPair()
    names = {pair.server_ns, pair.viewer_ns}
    try:
        assert names <= netns_list()
        pair.in_viewer(tool("ip"), "route", "get", SERVER_IP)  # reachable, over the veth

        pair.set_udp_cap(300, queue_ms=200)
        classes = pair.shaping_stats()
        assert re.search(r"class htb 1:20 .*rate 300Kbit ceil 300Kbit", classes), classes
        qdiscs = pair.in_server(tool("tc"), "qdisc", "show", "dev", SERVER_DEV)
        assert f"limit {queue_bytes(300, 200)}b" in qdiscs, qdiscs  # 7500 bytes
        pair.set_udp_cap(None)
        assert re.search(r"class htb 1:20 .*rate 1Gbit", pair.shaping_stats())

        pair.set_udp_loss(5)
        rules = pair.in_server(tool("nft"), "list", "ruleset")
        assert "numgen random mod 10000 < 500 drop" in rules, rules
        pair.set_udp_loss(2.5)  # replaces the rule, atomically
        rules = pair.in_server(tool("nft"), "list", "ruleset")
        assert "< 250 drop" in rules and "< 500" not in rules, rules
        pair.set_udp_loss(0)
        assert pair.in_server(tool("nft"), "list", "ruleset").strip() == ""
    finally:
        pair.close()
    pair.close()  # idempotent
    assert not names & netns_list()
    assert root_view() == before


def test_stale_namespaces_with_our_names_are_replaced() -> None:
    tag = f"stale-{os.getpid()}"
    for ns in (f"bc-srv-{tag}", f"bc-view-{tag}"):
        run([tool("ip"), "netns", "add", ns])  # what a crashed run leaves behind
    with NetnsPair(tag=tag) as pair:
        # Fresh namespaces: the veth is there (it would not be in the stale ones).
        assert SERVER_DEV in pair.in_server(tool("ip"), "link", "show")
    assert not {f"bc-srv-{tag}", f"bc-view-{tag}"} & netns_list()


def test_close_ends_what_was_left_inside() -> None:
    pair = NetnsPair()
    pair.leftover_grace_s = 0.2
    # E.g. a browser a failing test never closed: it would keep the namespace alive.
    sleeper = subprocess.Popen(pair.exec_args(pair.viewer_ns, "sleep", "60"))
    try:
        pair.close()
        assert sleeper.wait(timeout=5) == -signal.SIGTERM
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    assert not {pair.server_ns, pair.viewer_ns} & netns_list()


# ---------------------------------------------------------------- Timeline on scripted stats


class ScriptedPage:
    """Stands in for a Playwright page: evaluate() returns the next scripted stats."""

    def __init__(self, stats: list[dict[str, Any]]) -> None:
        self._stats = iter(stats)

    async def evaluate(self, _js: str) -> dict[str, Any]:
        return next(self._stats)


def raw_stats(ts: float, height: int, frames: int, kbytes: int, freezes: float = 0.0) -> Any:
    return {
        "ts": ts, "width": height * 16 // 9, "height": height, "frames_decoded": frames,
        "freeze_count": 0, "total_freezes_duration": freezes, "packets_lost": 0,
        "packets_received": 0, "nack_count": 0, "pli_count": 0,
        "bytes_received": kbytes * 1000, "jitter": 0.0,
        "remb_bps": 2_000_000, "rtt_s": 0.002,
    }  # fmt: skip


async def test_timeline_queries() -> None:
    # 250 ms apart; 720p -> 360p at 1.0 s; the same frame count from 1.0 s to 1.75 s
    # (a stall of at least 750 ms); 125 kB per 250 ms = 4000 kbit/s.
    frames = [0, 8, 15, 23, 30, 30, 30, 30, 38]
    heights = [720, 720, 720, 720, 360, 360, 360, 360, 360]
    stats = [
        raw_stats(i * 250.0, h, f, 125 * i)
        for i, (h, f) in enumerate(zip(heights, frames, strict=True))
    ]
    timeline = Timeline(ScriptedPage(stats))
    timeline.mark("udp cap", cap_kbps=500)
    for _ in stats:
        await timeline.sample()
    samples = timeline.samples
    assert samples[0].remb_kbps == 2000 and samples[0].rtt_ms == 2
    assert samples[0].cap_kbps == 500 and samples[0].recv_kbps is None
    assert samples[-1].recv_kbps == pytest.approx(4000)
    assert timeline.switches() == 1
    assert timeline.max_freeze_ms() == pytest.approx(750)
    assert timeline.max_freeze_ms(after_t=samples[-1].t) == 0
    switch_t = samples[4].t
    assert timeline.time_to(lambda s: s.height == 360) == pytest.approx(switch_t, abs=0.01)
    assert timeline.time_to(lambda s: s.height == 360, after_t=switch_t) == 0
    assert timeline.time_to(lambda s: s.height == 180) is None


# ---------------------------------------------------------------- with Chromium


async def wait_for_sample(
    timeline: Timeline, ok: Callable[[Sample], bool], timeout: float, what: str
) -> Sample:
    start = timeline.now()
    while timeline.now() - start < timeout:
        last = timeline.last()
        if last is not None and last.t >= start and ok(last):
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout} s; last: {timeline.last()}")


async def sleep_until(timeline: Timeline, t: float) -> None:
    await asyncio.sleep(max(0.0, t - timeline.now()))


async def check_unshaped(timeline: Timeline) -> None:
    # Chromium reports availableIncomingBitrate only after its first REMB (~5 s in).
    s = await wait_for_sample(
        timeline,
        lambda s: s.width == 1280 and (s.remb_kbps or 0) > REMB_UNSHAPED_MIN_KBPS,
        timeout=20,
        what=f"1280x720 with REMB > {REMB_UNSHAPED_MIN_KBPS} kbit/s",
    )
    timeline.notes["unshaped"] = {"t": s.t, "remb_kbps": s.remb_kbps, "rtt_ms": s.rtt_ms}


async def check_cap(page: Any, pair: NetnsPair, timeline: Timeline) -> None:
    t_cap = timeline.now()
    pair.set_udp_cap(CAP_KBPS)
    # HTTP while the UDP queue is full: TCP is in the unshaped class.
    await sleep_until(timeline, t_cap + 2.0)
    fetches = [await page.evaluate(HEALTHZ_FETCH_JS) for _ in range(3)]
    await sleep_until(timeline, t_cap + FALL_WITHIN_S + 0.5)

    fall = timeline.time_to(lambda s: (s.remb_kbps or 1e9) < REMB_CAPPED_MAX_KBPS, t_cap)
    # From 1.5 s on, the 1 s rate window holds only capped traffic.
    recv = [s.recv_kbps for s in timeline.after(t_cap + 1.5) if s.recv_kbps is not None]
    last = timeline.last()
    timeline.notes["cap"] = {
        "cap_kbps": CAP_KBPS,
        "remb_fall_s": fall,
        "remb_kbps_end": last.remb_kbps if last else None,
        "recv_kbps_max": max(recv, default=None),
        "recv_kbps_mean": sum(recv) / len(recv) if recv else None,
        "healthz_ms": [f["ms"] for f in fetches],
        # The pinned 720p rung cannot fit: expect the picture to freeze (informational).
        "max_freeze_ms": timeline.max_freeze_ms(t_cap),
        "tc": pair.shaping_stats(),
    }
    print("\ncap:", {k: v for k, v in timeline.notes["cap"].items() if k != "tc"})
    assert fall is not None and fall <= FALL_WITHIN_S, timeline.notes["cap"]
    assert recv and max(recv) <= RECV_CAPPED_MAX_KBPS, recv
    assert all(f["status"] == 200 and f["ms"] < HTTP_MAX_MS for f in fetches), fetches
    dropped = re.search(r"class htb 1:20 .*?\n.*?dropped (\d+)", pair.shaping_stats())
    assert dropped and int(dropped.group(1)) > 0, "the capped class never dropped"


async def check_loss(pair: NetnsPair, timeline: Timeline) -> None:
    pair.set_udp_cap(None)
    pair.set_udp_loss(LOSS_PCT)
    t_loss = timeline.now()
    await sleep_until(timeline, t_loss + 4.0)
    window = timeline.after(t_loss)
    assert len(window) >= 2, window
    lost = window[-1].packets_lost - window[0].packets_lost
    nacks = window[-1].nack_count - window[0].nack_count
    timeline.notes["loss"] = {
        "loss_pct": LOSS_PCT,
        "packets_lost": lost,
        "nacks": nacks,
        "max_freeze_ms": timeline.max_freeze_ms(t_loss),
        "switches": timeline.switches(t_loss),
    }
    print("loss:", timeline.notes["loss"])
    assert lost > 10 and nacks > 5, timeline.notes["loss"]
    pair.set_udp_loss(0)


async def play_scenario(pair: NetnsPair, timeline_box: list[Timeline]) -> None:
    from playwright.async_api import async_playwright

    server = await asyncio.to_thread(pair.start_server)
    async with async_playwright() as pw:
        browser = await pair.launch_viewer_browser(pw)
        try:
            page = await browser.new_page()
            await page.goto(server.url)
            assert await page.evaluate(PIN_JS, "720p") in (200, 204)
            timeline = Timeline(page, pair)
            timeline_box.append(timeline)
            async with timeline:
                await check_unshaped(timeline)
                await check_cap(page, pair, timeline)
                await check_loss(pair, timeline)
        finally:
            await browser.close()


@pytest.mark.browser
@pytest.mark.slow
async def test_viewer_in_namespace_sees_cap_and_loss() -> None:
    pytest.importorskip("playwright.async_api")
    require_chromium()
    before = root_view()
    pair = NetnsPair()
    names = {pair.server_ns, pair.viewer_ns}
    timeline_box: list[Timeline] = []
    try:
        await play_scenario(pair, timeline_box)
    finally:
        pair.close()
        if timeline_box:  # also on failure: the plot is the best diagnosis
            timeline_box[0].save(OUT_DIR / "netns_harness")
    assert not names & netns_list(), netns_list()
    assert root_view() == before
