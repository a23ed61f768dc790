"""End-to-end fixtures: a running Service and a headless Debian Chromium driven by Playwright.

Never `playwright install` here: it downloads browsers. We launch the distribution's
/usr/bin/chromium through `executable_path`.

--disable-features: Chromium keeps only the LAST --disable-features switch on its command
line, and Playwright already passes its own list. Appending ours would silently drop
Playwright's (and vice versa), so we find Playwright's exact switch once per test run (a
probe launch reading chrome://version), drop it with `ignore_default_args` and pass ONE
merged list. The browser fixture then checks the real command line has exactly one
--disable-features holding both lists.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from aiohttp import web
from chromium import CHROMIUM, QUIET_ARGS, require_chromium
from serve_process import running_service

from broadcaster.config import load_config
from broadcaster.server import whep
from broadcaster.server.service import Service

playwright_api = pytest.importorskip("playwright.async_api")


# Features we need off: without this Chromium hides its host candidates behind
# <uuid>.local mDNS names.
OUR_DISABLED_FEATURES = ("WebRtcHideLocalIpsWithMdns",)

BASE_ARGS = QUIET_ARGS

_DISABLE_RE = re.compile(r"--disable-features=(\S*)")

# Playwright's own "--disable-features=..." switch, found once per test run.
_playwright_switch: list[str | None] = []


def host_resolver_rules(page_host: str) -> str:
    # No name resolves except the page's host (an IP literal must be EXCLUDEd explicitly,
    # or navigation to it fails).
    excludes = ["localhost"] + ([page_host] if page_host != "localhost" else [])
    return "--host-resolver-rules=MAP * ~NOTFOUND , " + " , ".join(f"EXCLUDE {h}" for h in excludes)


async def command_line(browser: Any) -> str:
    """The browser's real command line as chrome://version shows it.

    (CDP Browser.getBrowserCommandLine refuses: Playwright does not pass
    --enable-automation.)
    """
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto("chrome://version")
        return str(await page.inner_text("#command_line"))
    finally:
        await context.close()


async def playwright_disable_features_switch(pw: Any) -> str | None:
    if not _playwright_switch:
        probe = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            found = re.findall(r"--disable-features=\S*", await command_line(probe))
        finally:
            await probe.close()
        _playwright_switch.append(found[-1] if found else None)
    return _playwright_switch[0]


def merged_disable_features(playwright_switch: str | None) -> str:
    theirs = playwright_switch.split("=", 1)[1].split(",") if playwright_switch else []
    merged = list(dict.fromkeys([f for f in theirs if f] + list(OUR_DISABLED_FEATURES)))
    return "--disable-features=" + ",".join(merged)


@pytest.fixture
def whep_deletes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(session id, status) of every WHEP DELETE the service answers.

    A closing page also closes its RTCPeerConnection, which releases the session by
    itself; this tells whether the page's DELETE arrived too. Installed before the
    service builds its routes (the service fixture depends on it).
    """
    seen: list[tuple[str, int]] = []
    original = whep.delete_whep

    async def spy(request: web.Request) -> web.StreamResponse:
        response = await original(request)
        seen.append((request.match_info["session_id"], response.status))
        return response

    monkeypatch.setattr(whep, "delete_whep", spy)
    return seen


@pytest_asyncio.fixture
async def service(whep_deletes: list[tuple[str, int]]) -> AsyncIterator[Service]:
    cfg = load_config().with_server(port=0)  # default ladder 720p/360p/180p, free port
    async with running_service(cfg) as svc:
        yield svc


@pytest_asyncio.fixture
async def browser(service: Service) -> AsyncIterator[Any]:
    require_chromium()
    async with playwright_api.async_playwright() as pw:
        theirs = await playwright_disable_features_switch(pw)
        ours = merged_disable_features(theirs)
        host = urlsplit(service.url).hostname or "127.0.0.1"
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*BASE_ARGS, ours, host_resolver_rules(host)],
            ignore_default_args=[theirs] if theirs else None,
        )
        try:
            switches = _DISABLE_RE.findall(await command_line(browser))
            assert len(switches) == 1, f"expected one --disable-features, got {switches}"
            effective = set(switches[0].split(","))
            assert set(OUR_DISABLED_FEATURES) <= effective, switches[0]
            if theirs:
                assert set(theirs.split("=", 1)[1].split(",")) <= effective, switches[0]
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1296, "height": 860})
    try:
        yield await context.new_page()
    finally:
        await context.close()


@pytest.fixture
def console(page: Any) -> list[str]:
    """The page's console output and uncaught errors, for failure messages."""
    lines: list[str] = []
    page.on("console", lambda msg: lines.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda exc: lines.append(f"pageerror: {exc}"))
    return lines
