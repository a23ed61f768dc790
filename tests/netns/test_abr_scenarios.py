"""Adaptive bitrate end to end: a real Chromium viewer behind a shaped link.

The server runs in one namespace, Chromium in another; the server's outgoing UDP is
capped with htb (and dropped at random with nft for the loss scenario). What counts is
what the browser really shows (frameWidth/Height from getStats). Every scenario writes
its timeline to bench/out/abr_<name>.{json,png}. Defaults only: no tuning per scenario.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from chromium import require_chromium

from .harness import NetnsPair, Timeline
from .test_harness import sleep_until, wait_for_sample

pytestmark = [pytest.mark.netns, pytest.mark.browser, pytest.mark.slow]

OUT_DIR = Path(__file__).resolve().parents[2] / "bench" / "out"
TOP, MID, LOW = 720, 360, 180

VIEWERS_JS = """async () => (await (await fetch("/api/viewers?history=1",
    {cache: "no-store"})).json())"""
SERVER_POLL_S = 5.0  # the server keeps ~10 s of snapshots: poll well within that

Scenario = Callable[[Any, NetnsPair, Timeline], Awaitable[None]]


async def run_scenario(name: str, scenario: Scenario, initial_cap: int | None) -> Timeline:
    """Namespaces, server, Chromium, timeline; the scenario drives the link."""
    from playwright.async_api import async_playwright

    require_chromium()
    pair = NetnsPair()
    timeline: Timeline | None = None
    try:
        if initial_cap is not None:
            pair.set_udp_cap(initial_cap)
        server = await asyncio.to_thread(pair.start_server)
        async with async_playwright() as pw:
            browser = await pair.launch_viewer_browser(pw)
            try:
                page = await browser.new_page()
                timeline = Timeline(page, pair)
                async with timeline:
                    await page.goto(server.url)
                    timeline.mark("join")
                    poller = asyncio.ensure_future(poll_server(page, timeline))
                    try:
                        await scenario(page, pair, timeline)
                    finally:
                        poller.cancel()
                        timeline.notes["server"] = await page.evaluate(VIEWERS_JS)
            finally:
                await browser.close()
    finally:
        pair.close()
        if timeline is not None:
            timeline.save(OUT_DIR / f"abr_{name}")
    return timeline


async def poll_server(page: Any, timeline: Timeline) -> None:
    """Keep the server's own feedback snapshots (what the policy saw) for diagnosis."""
    seen: dict[float, Any] = {}
    timeline.notes["server_history"] = seen
    while True:
        await asyncio.sleep(SERVER_POLL_S)
        try:
            data = await page.evaluate(VIEWERS_JS)
        except Exception:  # the page is reconnecting or closing: try again later
            continue
        for viewer in data.get("viewers", [])[:1]:
            for snap in viewer.get("history", []):
                seen[snap["t"]] = snap


def server_switches(timeline: Timeline) -> list[dict[str, Any]]:
    viewers = timeline.notes.get("server", {}).get("viewers", [])
    return list(viewers[0]["switches"]) if viewers else []


async def reach_top(timeline: Timeline, within: float) -> float:
    """Seconds from join until the browser shows the top rung."""
    await wait_for_sample(timeline, lambda s: s.height == TOP, within, "top rung")
    t = timeline.time_to(lambda s: s.height == TOP)
    assert t is not None
    return t


# ---------------------------------------------------------------- 1. steady link


@pytest.mark.timeout(180)
async def test_steady_5mbit_link() -> None:
    async def scenario(page: Any, pair: NetnsPair, tl: Timeline) -> None:
        t_top = await reach_top(tl, within=10)
        tl.notes["time_to_top_s"] = t_top
        await sleep_until(tl, 62)
        tl.notes["switches_after_top"] = tl.switches(t_top)

    tl = await run_scenario("steady", scenario, initial_cap=5000)
    print(
        "\nsteady:",
        tl.notes["time_to_top_s"],
        "s to top;",
        tl.notes["switches_after_top"],
        "switches after",
    )
    assert tl.notes["time_to_top_s"] <= 5
    assert tl.notes["switches_after_top"] <= 1


# ---------------------------------------------------------------- 2-4. caps, then lift


@pytest.mark.timeout(240)
async def test_cap_1200_then_300_then_lift() -> None:
    async def scenario(page: Any, pair: NetnsPair, tl: Timeline) -> None:
        await reach_top(tl, within=10)
        await sleep_until(tl, 10)

        t_cap = tl.now()
        pair.set_udp_cap(1200)
        await sleep_until(tl, t_cap + 20)
        t_mid = tl.time_to(lambda s: s.height == MID, t_cap)
        tl.notes["cap1200"] = {
            "time_to_mid_s": t_mid,
            # The sample that first shows the new rung also reports the gap that ended
            # with it (the old rung stops while the new keyframe crosses the congested
            # link): that gap is before the switch, and is recorded on its own.
            "switch_gap_ms": None if t_mid is None else tl.max_freeze_ms(t_cap),
            "max_freeze_after_switch_ms": None
            if t_mid is None
            else tl.max_freeze_started_after_ms(t_cap + t_mid),
            "switches_after_mid": None if t_mid is None else tl.switches(t_cap + t_mid),
            "loss_on_mid": None if t_mid is None else tl.loss_fraction(t_cap + t_mid + 1, tl.now()),
        }

        t_cap = tl.now()
        pair.set_udp_cap(300)
        await sleep_until(tl, t_cap + 15)
        t_low = tl.time_to(lambda s: s.height == LOW, t_cap)
        tl.notes["cap300"] = {
            "time_to_low_s": t_low,
            "switches": tl.switches(t_cap),
            "max_freeze_after_switch_ms": None
            if t_low is None
            else tl.max_freeze_ms(t_cap + t_low),
        }

        t_lift = tl.now()
        pair.set_udp_cap(None)
        await wait_for_sample(tl, lambda s: s.height == TOP, 20, "top rung after lift")
        await sleep_until(tl, tl.now() + 3)  # and it stays
        tl.notes["lift"] = {
            "time_to_top_s": tl.time_to(lambda s: s.height == TOP, t_lift),
            "switches": tl.switches(t_lift),
        }

    tl = await run_scenario("caps", scenario, initial_cap=None)
    n = tl.notes
    print("\ncap 1200:", n["cap1200"], "\ncap 300:", n["cap300"], "\nlift:", n["lift"])
    assert n["cap1200"]["time_to_mid_s"] is not None and n["cap1200"]["time_to_mid_s"] <= 4
    assert n["cap1200"]["max_freeze_after_switch_ms"] <= 500
    assert n["cap1200"]["switches_after_mid"] == 0
    assert n["cap300"]["time_to_low_s"] is not None and n["cap300"]["time_to_low_s"] <= 4
    assert n["lift"]["time_to_top_s"] <= 15
    ups = [s for s in server_switches(tl) if s["to"] == "720p" and s["from"] is not None]
    assert ups and ups[-1]["reason"] == "probe", server_switches(tl)


# ---------------------------------------------------------------- 5. random loss


@pytest.mark.timeout(180)
async def test_random_loss_5_percent() -> None:
    async def scenario(page: Any, pair: NetnsPair, tl: Timeline) -> None:
        await reach_top(tl, within=10)
        await sleep_until(tl, 8)
        t_loss = tl.now()
        pair.set_udp_loss(5)
        await sleep_until(tl, t_loss + 60)
        tl.notes["loss5"] = {
            "switches": tl.switches(t_loss),
            "max_freeze_ms": tl.max_freeze_ms(t_loss),
            "loss_seen": tl.loss_fraction(t_loss, tl.now()),
            "freezes": (
                tl.samples[-1].freeze_count
                - next(s.freeze_count for s in tl.samples if s.t >= t_loss)
            ),
        }

    tl = await run_scenario("loss", scenario, initial_cap=None)
    print("\nloss 5%:", tl.notes["loss5"])
    assert tl.notes["loss5"]["switches"] <= 2
    assert tl.notes["loss5"]["loss_seen"] is not None and tl.notes["loss5"]["loss_seen"] > 0.02


# ---------------------------------------------------------------- 6. sawtooth


@pytest.mark.timeout(300)
async def test_sawtooth_3000_600() -> None:
    periods: list[dict[str, Any]] = []

    async def scenario(page: Any, pair: NetnsPair, tl: Timeline) -> None:
        await reach_top(tl, within=10)
        await sleep_until(tl, 8)
        for cap in (600, 3000) * 3:
            start = tl.now()
            pair.set_udp_cap(cap)
            await sleep_until(tl, start + 20)
            settle = next(
                (s.t for s in tl.after(start) if s.height != tl.after(start)[0].height), start
            )
            periods.append(
                {
                    "cap": cap,
                    "switches": tl.switches(start),
                    "settled_after_s": settle - start,
                    "rung": tl.samples[-1].height,
                    # Loss on the rung the viewer sat on, once there (a second to switch in).
                    "loss": tl.loss_fraction(settle + 1.0, tl.now()),
                }
            )
        tl.notes["sawtooth"] = periods

    await run_scenario("sawtooth", scenario, initial_cap=3000)
    print("\nsawtooth:", *periods, sep="\n  ")
    for p in periods:
        assert p["switches"] <= 1, p
        assert p["loss"] is None or p["loss"] <= 0.10, p
    assert [p["rung"] for p in periods] == [LOW, TOP] * 3
