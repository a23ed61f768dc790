"""The viewer page in a real headless Chromium: WHEP from the page, playback, layer
selection, goodbye on close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from broadcaster.server.service import Service

pytestmark = pytest.mark.browser

OUT_DIR = Path(__file__).resolve().parents[2] / "bench" / "out"

VIDEO_STATS = """async () => {
  const pc = window.player && window.player.pc;
  if (!pc) return null;
  for (const r of (await pc.getStats()).values()) {
    if (r.type === "inbound-rtp" && r.kind === "video") {
      return {framesDecoded: r.framesDecoded || 0, frameWidth: r.frameWidth || 0,
              frameHeight: r.frameHeight || 0, freezeCount: r.freezeCount || 0};
    }
  }
  return null;
}"""


T = TypeVar("T")


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    ok: Callable[[T], bool],
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until ``ok(value)``; fail with the last value seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if ok(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s; last: {value!r}")
        await asyncio.sleep(interval)


async def video_stats(page: Any) -> dict[str, int] | None:
    stats: dict[str, int] | None = await page.evaluate(VIDEO_STATS)
    return stats


async def resolution_label(page: Any) -> str:
    return str(await page.inner_text("#resolution"))


async def open_playing(page: Any, service: Service, console: list[str]) -> dict[str, int]:
    """Open the viewer page and wait until it decodes 720p frames."""
    await page.goto(service.url)
    try:
        return await wait_for(
            lambda: video_stats(page),
            lambda s: bool(s) and s["framesDecoded"] > 0 and s["frameWidth"] == 1280,
            timeout=15,
            what="decoded 1280-wide frames",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\npage console:\n" + "\n".join(console)) from None


async def healthz_viewers(service: Service) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.get(service.url + "healthz") as res:
            return int((await res.json())["viewers"])


async def test_page_plays_720p(service: Service, page: Any, console: list[str]) -> None:
    first = await open_playing(page, service, console)
    await asyncio.sleep(1.0)
    second = await video_stats(page)
    assert second is not None
    assert second["framesDecoded"] > first["framesDecoded"], (first, second)
    assert (second["frameWidth"], second["frameHeight"]) == (1280, 720), second

    label = await wait_for(
        lambda: resolution_label(page),
        lambda t: t == "1280×720",
        timeout=3,
        what="resolution label 1280×720",
    )
    assert label == "1280×720"
    assert await page.inner_text("#state") == "playing"
    assert await page.is_hidden("#banner")
    # The quality select lists "auto" then every rung of /api/ladder.
    options = await page.eval_on_selector_all("#quality option", "os => os.map(o => o.value)")
    assert options == ["auto", "720p", "360p", "180p"]
    # The merged --disable-features took effect: no mDNS-hidden host candidates.
    offer = await page.evaluate("() => window.player.pc.localDescription.sdp")
    assert "a=candidate" in offer and ".local " not in offer, offer
    assert service.viewers == 1

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(OUT_DIR / "viewer.png"))
    # The <video> element itself shows frames (not just the RTP stack decoding them).
    shown = await page.evaluate("""() => new Promise(resolve => {
        const v = document.getElementById("video");
        v.requestVideoFrameCallback((_now, meta) => resolve([meta.width, meta.height]));
        setTimeout(() => resolve(null), 2000);
    })""")
    assert shown == [1280, 720], shown
    errors = [line for line in console if line.startswith(("error:", "pageerror:"))]
    assert not errors, errors


async def test_quality_select_switches_layer(
    service: Service, page: Any, console: list[str]
) -> None:
    await open_playing(page, service, console)

    await page.select_option("#quality", "180p")
    low = await wait_for(
        lambda: video_stats(page),
        lambda s: bool(s) and s["frameWidth"] == 320,
        timeout=8,
        what="frameWidth 320 after selecting 180p",
    )
    assert low["frameHeight"] == 180
    await wait_for(
        lambda: resolution_label(page),
        lambda t: t == "320×180",
        timeout=3,
        what="resolution label 320×180",
    )

    await page.select_option("#quality", "auto")
    await wait_for(
        lambda: video_stats(page),
        lambda s: bool(s) and s["frameWidth"] == 1280,
        timeout=8,
        what="frameWidth 1280 after selecting auto",
    )
    # Still decoding after the switches.
    before = await video_stats(page)
    await asyncio.sleep(0.5)
    after = await video_stats(page)
    assert before and after and after["framesDecoded"] > before["framesDecoded"]


async def test_closing_page_releases_viewer(
    service: Service, page: Any, console: list[str], whep_deletes: list[tuple[str, int]]
) -> None:
    await open_playing(page, service, console)
    assert service.viewers == 1
    assert await healthz_viewers(service) == 1
    location = await page.evaluate("() => window.player.location")
    session_id = location.rsplit("/", 1)[-1]

    start = time.monotonic()
    await page.close()  # pagehide: the page DELETEs its WHEP session and closes its pc
    await wait_for(
        lambda: asyncio.sleep(0, service.viewers),
        lambda n: n == 0,
        timeout=10,
        interval=0.05,
        what="0 viewers after page close",
    )
    elapsed = time.monotonic() - start
    assert await healthz_viewers(service) == 0
    # The DELETE itself arrived (200, or 404 if the pc's close won the race).
    await wait_for(
        lambda: asyncio.sleep(0, [sid for sid, _ in whep_deletes]),
        lambda ids: session_id in ids,
        timeout=3,
        what="the page's WHEP DELETE",
    )
    print(f"viewer released {elapsed:.2f} s after page.close(); DELETEs: {whep_deletes}")
