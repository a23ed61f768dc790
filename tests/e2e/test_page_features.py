"""The viewer page's features in a real headless Chromium: quality menu, stats overlay,
glass-to-glass latency, viewer count and chat over /ws, reconnect after a server restart,
and screenshots (desktop and phone) a person can look at in bench/out/."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from broadcaster.config import AuthConfig, load_config
from broadcaster.server.auth import sign_view_token
from broadcaster.server.service import Service

pytestmark = pytest.mark.browser

OUT_DIR = Path(__file__).resolve().parents[2] / "bench" / "out"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

VIDEO_STATS = """async () => {
  const pc = window.player && window.player.pc;
  if (!pc) return null;
  for (const r of (await pc.getStats()).values()) {
    if (r.type === "inbound-rtp" && r.kind === "video") {
      return {framesDecoded: r.framesDecoded || 0, frameWidth: r.frameWidth || 0,
              frameHeight: r.frameHeight || 0};
    }
  }
  return null;
}"""
# What the <video> element itself shows (not just what the decoder produced).
SHOWN_SIZE = (
    "() => [document.getElementById('video').videoWidth, "
    "document.getElementById('video').videoHeight]"
)

T = TypeVar("T")


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    ok: Callable[[T], bool],
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until ``ok(value)``; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s; last: {value!r}")
        await asyncio.sleep(interval)


CHAT_LINES = """() => [...document.querySelectorAll('#chat-log .line')].map(
    l => [l.querySelector('.who').textContent, l.querySelector('.what').textContent])"""


def js(page: Any, expr: str) -> Callable[[], Awaitable[Any]]:
    return lambda: page.evaluate(expr)


def text(page: Any, selector: str) -> Callable[[], Awaitable[str]]:
    return lambda: page.inner_text(selector)


async def open_playing(page: Any, url: str, console: list[str] | None = None) -> None:
    """Open the page and wait for 720p frames on screen."""
    await page.goto(url)
    try:
        await wait_for(
            js(page, SHOWN_SIZE), lambda s: s == [1280, 720], timeout=15, what="720p playing"
        )
        await wait_for(
            lambda: page.inner_text("#state"), lambda t: t == "playing", 5, what="state playing"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nconsole:\n" + "\n".join(console or [])) from None


def page_errors(console: list[str]) -> list[str]:
    return [line for line in console if line.startswith(("error:", "pageerror:"))]


@pytest_asyncio.fixture
async def new_page(browser: Any) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Pages in their own contexts (separate storage, like separate people)."""
    contexts: list[Any] = []

    async def make(viewport: dict[str, int] = DESKTOP, **kwargs: Any) -> Any:
        context = await browser.new_context(viewport=viewport, **kwargs)
        contexts.append(context)
        page = await context.new_page()
        lines: list[str] = []
        page.on("console", lambda msg: lines.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: lines.append(f"pageerror: {exc}"))
        page.console_lines = lines
        return page

    try:
        yield make
    finally:
        for context in contexts:
            await context.close()


async def test_quality_menu_pins_and_returns_to_auto(
    service: Service, new_page: Callable[..., Awaitable[Any]]
) -> None:
    page = await new_page()
    await open_playing(page, service.url, page.console_lines)
    values = await page.eval_on_selector_all("#quality option", "os => os.map(o => o.value)")
    assert values == ["auto", "720p", "360p", "180p"]
    # The menu says what is playing and how it was chosen (server's word, over /ws).
    await wait_for(
        js(page, "() => document.querySelector('#quality option[value=auto]').textContent"),
        lambda t: t == "Auto · 720p",
        5,
        what="Auto · 720p label",
    )
    labels = await page.eval_on_selector_all("#quality option", "os => os.map(o => o.text)")
    assert labels[1:] == ["720p · 1280×720", "360p · 640×360", "180p · 320×180"], labels

    start = time.monotonic()
    await page.select_option("#quality", "180p")
    await wait_for(js(page, SHOWN_SIZE), lambda s: s == [320, 180], 8, what="320x180 shown")
    pinned_after = time.monotonic() - start
    rung = await wait_for(
        js(page, "() => window.player.rung"),
        lambda r: bool(r) and r["rung"] == "180p",
        3,
        what="rung message for 180p",
    )
    assert rung == {"rung": "180p", "target": "180p", "mode": "pinned"}
    await wait_for(lambda: page.inner_text("#resolution"), lambda t: t == "320×180", 3)

    await page.select_option("#quality", "auto")
    await wait_for(js(page, SHOWN_SIZE), lambda s: s == [1280, 720], 8, what="1280x720 back")
    await wait_for(
        js(page, "() => window.player.rung"),
        lambda r: bool(r) and r["mode"] == "auto" and r["rung"] == "720p",
        3,
        what="auto mode on 720p",
    )
    print(f"pinned 180p on screen after {pinned_after:.2f} s")
    assert not page_errors(page.console_lines), page.console_lines


async def test_stats_overlay_shows_live_numbers_and_screenshot(
    service: Service, new_page: Callable[..., Awaitable[Any]]
) -> None:
    page = await new_page(DESKTOP)
    await open_playing(page, service.url, page.console_lines)
    assert await page.is_hidden("#stats")
    await page.click("#stats-toggle")
    assert await page.is_visible("#stats")

    async def overlay() -> dict[str, str]:
        names = (
            "resolution", "fps", "bitrate", "rung", "latency", "rtt", "loss", "freezes", "audio"
        )  # fmt: skip
        return {n: await page.inner_text(f"#stat-{n}") for n in names}

    def filled(o: dict[str, str]) -> bool:
        return all(v != "–" for v in o.values()) and o["rung"] == "720p · auto"

    shown = await wait_for(overlay, filled, 8, what="every stat filled")
    assert shown["resolution"] == "1280×720"
    assert float(shown["fps"].split()[0]) > 10, shown
    value, unit = shown["bitrate"].split()
    assert float(value) > 0 and unit in ("kbit/s", "Mbit/s"), shown
    assert shown["loss"].endswith("%") and float(shown["loss"].split()[0]) >= 0
    assert shown["freezes"].isdigit()
    assert shown["latency"].endswith("ms") and float(shown["latency"].split()[0]) > 0
    # The test tone: Opus at about its configured 64 kbit/s (plus RTP overhead).
    codec, rate, _level = shown["audio"].split(" · ")
    assert codec == "opus" and rate.endswith("kbit/s") and 30 < float(rate.split()[0]) < 120, shown

    stats = await page.evaluate("() => window.player.stats")
    assert stats["kbps"] > 100 and stats["fps"] > 10, stats
    assert (stats["width"], stats["height"]) == (1280, 720)
    assert stats["rung"] == "720p" and stats["mode"] == "auto"
    # Let the sparkline gather a few seconds, then check it drew something.
    await asyncio.sleep(3.0)
    inked = await page.evaluate("""() => {
        const c = document.getElementById('spark');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n;
    }""")
    assert inked > 200, inked

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(OUT_DIR / "viewer-stats.png"))
    # Closing the overlay hides it again.
    await page.click("#stats-close")
    assert await page.is_hidden("#stats")
    assert not page_errors(page.console_lines), page.console_lines


async def test_latency_readout_is_plausible(
    service: Service, new_page: Callable[..., Awaitable[Any]]
) -> None:
    page = await new_page()
    await open_playing(page, service.url, page.console_lines)
    await wait_for(
        js(page, "() => window.player.latencyMs"),
        lambda v: v is not None,
        8,
        what="a latency reading",
    )
    samples = []
    for _ in range(20):
        samples.append(await page.evaluate("() => window.player.latencyMs"))
        await asyncio.sleep(0.1)
    median = statistics.median(samples)
    assert all(0 < s < 1000 for s in samples), samples
    # Same machine, same clock: the ping/pong estimate of the offset is close to zero.
    offset = await page.evaluate("() => window.player.clockOffsetMs")
    assert abs(offset) < 50, offset
    label = await page.inner_text("#latency")
    assert label.endswith(" ms") and 0 < float(label.split()[0]) < 1000, label
    print(f"page latency: median {median:.1f} ms over {len(samples)} readings; offset {offset}")


async def test_two_pages_count_and_chat(
    service: Service, new_page: Callable[..., Awaitable[Any]]
) -> None:
    alice = await new_page()
    bob = await new_page(PHONE)
    await asyncio.gather(
        open_playing(alice, service.url, alice.console_lines),
        open_playing(bob, service.url, bob.console_lines),
    )
    for page in (alice, bob):
        await wait_for(text(page, "#viewer-count"), lambda t: t == "2", 5, what="2 viewers")
        await wait_for(text(page, "#chat-status"), lambda t: t == "connected", 5)

    await alice.fill("#chat-name", "alice")
    await alice.fill("#chat-text", "<b>x</b> & <img src=x onerror=alert(1)>")
    await alice.press("#chat-text", "Enter")
    sent = "<b>x</b> & <img src=x onerror=alert(1)>"
    for page in (alice, bob):
        lines = await wait_for(
            js(page, CHAT_LINES),
            lambda ls: bool(ls),
            5,
            what="alice's line",
        )
        assert lines[-1] == ["alice", sent]
        # Rendered as text: no element came out of the message.
        assert await page.locator("#chat-log b, #chat-log img").count() == 0
    assert await alice.input_value("#chat-text") == ""  # cleared after sending

    await bob.fill("#chat-name", "bob")
    await bob.fill("#chat-text", "hi alice")
    await bob.click("#chat-send")
    await wait_for(
        lambda: alice.eval_on_selector_all("#chat-log .what", "ls => ls.map(l => l.textContent)"),
        lambda ls: "hi alice" in ls,
        5,
        what="bob's line at alice",
    )
    # The page enforces the server's length limit in the input itself.
    assert await bob.get_attribute("#chat-text", "maxlength") == "500"

    # One page leaving drops the count for the other.
    await bob.close()
    await wait_for(lambda: alice.inner_text("#viewer-count"), lambda t: t == "1", 10)
    assert not page_errors(alice.console_lines), alice.console_lines


async def test_page_reconnects_after_server_restart(
    service: Service, new_page: Callable[..., Awaitable[Any]]
) -> None:
    page = await new_page()
    await open_playing(page, service.url, page.console_lines)
    first_session = await page.evaluate("() => window.player.sessionId")
    port = service.port

    await service.close()  # the fixture's close() later is a no-op
    await wait_for(lambda: page.inner_text("#state"), lambda t: t in ("ended", "reconnecting"), 5)
    assert await page.is_visible("#banner")
    banner = await page.inner_text("#banner")

    restarted = Service(load_config(None).with_server(port=port), "test")
    start = time.monotonic()
    try:
        await restarted.start()
        await restarted.wait_healthy()
        await wait_for(
            lambda: page.inner_text("#state"), lambda t: t == "playing", 20, what="playing again"
        )
        back_after = time.monotonic() - start
        before = await page.evaluate(VIDEO_STATS)
        await asyncio.sleep(0.5)
        after = await page.evaluate(VIDEO_STATS)
        assert before and after and after["framesDecoded"] > before["framesDecoded"]
        assert await page.evaluate("() => window.player.sessionId") not in (None, first_session)
        assert restarted.viewers == 1
        await wait_for(lambda: page.inner_text("#viewer-count"), lambda t: t == "1", 5)
        print(f"banner while down: {banner!r}; playing again {back_after:.1f} s after restart")
    finally:
        await page.close()
        await restarted.close()


async def test_phone_layout_and_screenshot(
    service: Service, new_page: Callable[..., Awaitable[Any]]
) -> None:
    page = await new_page(PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    await open_playing(page, service.url, page.console_lines)
    await page.tap("#stats-toggle")
    await wait_for(lambda: page.inner_text("#stat-bitrate"), lambda t: t != "–", 5)
    await page.fill("#chat-text", "hello from a phone")
    await page.tap("#chat-send")
    await wait_for(lambda: page.locator("#chat-log .line").count(), lambda n: n >= 1, 5)
    await asyncio.sleep(1.5)  # a bit of sparkline
    # Nothing sticks out sideways; every control is on screen and big enough to tap.
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    for sel in ("#mute", "#quality", "#stats-toggle", "#fullscreen", "#chat-send"):
        box = await page.locator(sel).bounding_box()
        assert box is not None, sel
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (sel, box)
        assert box["height"] >= 24, (sel, box)
    video = await page.locator("#video").bounding_box()
    assert video is not None and video["width"] == PHONE["width"]
    chat = await page.locator(".chat").bounding_box()
    assert chat is not None and chat["y"] + chat["height"] <= PHONE["height"] + 1, chat
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(OUT_DIR / "viewer-phone.png"))

    # With the overlay closed, the unmute button is there and unmutes the element (there is
    # no audio track yet).
    await page.tap("#stats-close")
    await page.tap("#unmute")
    assert await page.evaluate("() => document.getElementById('video').muted") is False
    assert await page.is_hidden("#unmute")
    assert not page_errors(page.console_lines), page.console_lines


async def test_page_carries_its_signed_link_to_whep_and_the_websocket(
    page: Any, console: list[str]
) -> None:
    """With auth on, the bare page URL is refused (401 shown, no session), and the same
    page opened from a signed link plays: its token goes to WHEP and to /ws."""
    secret = "e2e-link-secret-0123456789abcdef0123"
    base = load_config().with_server(port=0)
    svc = Service(replace(base, auth=AuthConfig(link_secret=secret)), "test")
    await svc.start()
    try:
        await svc.wait_healthy()
        await page.goto(svc.url)
        await wait_for(
            lambda: page.get_attribute("#banner", "data-kind"), lambda k: k == "error", 15,
            what="refusal shown",
        )  # fmt: skip
        assert "401" in await page.inner_text("#banner")
        assert svc.viewers == 0

        console.clear()  # the refused page's 401s were expected
        link = svc.url + "?token=" + sign_view_token(secret, int(time.time()) + 120)
        await open_playing(page, link, console)
        assert svc.viewers == 1
        # The control socket got in too (it would be refused without the token).
        await wait_for(
            js(page, "window.player.control.open"), lambda o: o is True, 5, what="ws open"
        )
        assert not page_errors(console), console
    finally:
        await svc.close()
