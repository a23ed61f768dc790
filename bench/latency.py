"""Glass-to-glass latency on loopback, as the viewer page itself measures it.

    python bench/latency.py [--seconds 60] [--warmup 3]

Starts ``broadcaster serve --port <free> --quiet`` (test pattern, default ladder) as a
subprocess and opens the viewer page in headless Debian Chromium (Playwright with
executable_path=/usr/bin/chromium; never downloads a browser). The page computes, for
every frame it shows, capture time -> display time from requestVideoFrameCallback's
rtpTimestamp, the server's capture clock (/ws `clock`) and its ping/pong clock offset.

Two views of the same measurement:
- readout: ``window.player.latencyMs`` (the number on screen, a median over the last
  second), sampled every 100 ms;
- frames: every frame's own value (``window.player.latencyFrames()``), so the tail is
  not smoothed away by the readout's median.

Prints median and p95 of both; writes bench/out/latency.json. Stops the server it
started by pid (SIGTERM, then SIGKILL), nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from chromium import CHROMIUM, QUIET_ARGS  # noqa: E402  (shared with the browser tests)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"

START_TIMEOUT = 30.0  # server healthy
PLAY_TIMEOUT = 20.0  # first latency reading on the page
STOP_TIMEOUT = 10.0  # graceful stop before SIGKILL
SAMPLE_EVERY = 0.1
# Same switches as the e2e tests (tests/e2e/conftest.py explains them); mDNS-hidden host
# candidates must be off for the loopback server to reach the browser.
BASE_ARGS = list(QUIET_ARGS)
OUR_DISABLED_FEATURES = ["WebRtcHideLocalIpsWithMdns"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values), 1),
        "p95_ms": round(percentile(values, 95), 1),
        "p99_ms": round(percentile(values, 99), 1),
        "mean_ms": round(statistics.fmean(values), 1),
        "min_ms": round(min(values), 1),
        "max_ms": round(max(values), 1),
    }


def start_server(port: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("broadcaster")
    argv = [exe] if exe else [sys.executable, "-m", "broadcaster.cli"]
    argv += ["serve", "--port", str(port), "--quiet"]
    log(f"starting {' '.join(argv)}")
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM our server by pid (it stops its own capture child), SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log(f"server pid {proc.pid} ignored SIGTERM; killing it")
        proc.kill()
        proc.wait()


async def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"server exited with {proc.returncode}: {err.strip()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "healthz") as res:
                    if res.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise TimeoutError("server not healthy in time")


async def launch_chromium(pw: Any) -> Any:
    # Chromium honours only the last --disable-features and Playwright passes its own:
    # find Playwright's switch (probe launch), drop it, and pass one merged list.
    probe = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    try:
        page = await probe.new_page()
        await page.goto("chrome://version")
        found = re.findall(r"--disable-features=\S*", await page.inner_text("#command_line"))
    finally:
        await probe.close()
    theirs = found[-1] if found else None
    features = (theirs.split("=", 1)[1].split(",") if theirs else []) + OUR_DISABLED_FEATURES
    merged = "--disable-features=" + ",".join(dict.fromkeys(f for f in features if f))
    return await pw.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[*BASE_ARGS, merged],
        ignore_default_args=[theirs] if theirs else None,
    )


async def measure(url: str, seconds: float, warmup: float) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(url)
            deadline = time.monotonic() + PLAY_TIMEOUT
            while await page.evaluate("() => window.player.latencyMs") is None:
                if time.monotonic() > deadline:
                    raise TimeoutError("the page never showed a latency reading")
                await asyncio.sleep(0.1)
            log(f"page is measuring; {warmup:g} s warm-up, then {seconds:g} s of samples")
            await asyncio.sleep(warmup)
            await page.evaluate("() => window.player.latencyFrames()")  # drop warm-up frames
            readout: list[float] = []
            frames: list[float] = []
            missing = 0
            start = time.monotonic()
            next_at = start
            while time.monotonic() - start < seconds:
                value = await page.evaluate("() => window.player.latencyMs")
                if value is None:
                    missing += 1
                else:
                    readout.append(float(value))
                if len(readout) % 10 == 0:
                    frames += await page.evaluate("() => window.player.latencyFrames()")
                next_at += SAMPLE_EVERY
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            frames += await page.evaluate("() => window.player.latencyFrames()")
            final = await page.evaluate(
                "() => ({stats: window.player.stats, offset: window.player.clockOffsetMs,"
                " rtt: window.player.control.rttMs, state: window.player.state})"
            )
            version = browser.version
        finally:
            await browser.close()
    return {
        "readout": summary(readout),
        "frames": summary(frames),
        "readout_missing": missing,
        "clock_offset_ms": final["offset"],
        "ws_rtt_ms": final["rtt"],
        "page_state": final["state"],
        "final_stats": final["stats"],
        "chromium": version,
    }


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="sampling time (default 60)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds ignored after start")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        log(f"{CHROMIUM} not found (apt-get install -y chromium)")
        return 2

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = start_server(port)
    try:
        await wait_healthy(url, proc)
        log(f"server up at {url} (pid {proc.pid})")
        result = await measure(url, args.seconds, args.warmup)
    finally:
        stop_server(proc)

    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "what": "glass-to-glass latency (capture -> display), loopback, test pattern, "
        "default ladder, headless Chromium, the page's own measurement",
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "seconds": args.seconds,
        "sample_every_s": SAMPLE_EVERY,
        **result,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "latency.json").write_text(json.dumps(report, indent=2) + "\n")
    r, f = report["readout"], report["frames"]
    print(f"glass-to-glass latency over {args.seconds:g} s (loopback, test pattern, Chromium)")
    if r.get("n"):
        print(
            f"  page readout (1 s median, sampled every 100 ms, n={r['n']}): "
            f"median {r['median_ms']} ms, p95 {r['p95_ms']} ms"
        )
    if f.get("n"):
        print(
            f"  every frame (n={f['n']}): median {f['median_ms']} ms, p95 {f['p95_ms']} ms, "
            f"max {f['max_ms']} ms"
        )
    print(f"  clock offset page->server {report['clock_offset_ms']:.2f} ms")
    print(f"  wrote {OUT / 'latency.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
