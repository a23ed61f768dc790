"""Sound in a real Chromium: the page plays the Opus track, and the test pattern's beep
comes out with its flash (A/V sync), as the browser itself plays them.

How the offset is measured, all on the page's performance.now() clock:

- flash: requestVideoFrameCallback on the <video>; each presented frame is drawn to a
  small canvas and the bottom-right square (white during a mark) is read. A flash starts
  at the ``expectedDisplayTime`` of the first white frame.
- beep: getStats() polled every ~10 ms (each report's own ``timestamp``). Chromium adds
  each played 10 ms of audio to ``totalAudioEnergy`` (level^2 x seconds) and
  ``totalSamplesDuration`` as it plays it out, so the energy gained in one poll says how
  much of the audio played since the last poll was loud: a beep started
  ``gained energy / beep power`` seconds before the poll that first sees it.

offset = beep start - flash start (positive: sound late). Both marks leave the capture
at the same instant (broadcaster/capture/syncmarks.py), so this is what encoding, the
network and the browser's playout did to sync.

Two things about headless Chromium shape the assertion. Its stats are cached: they move
in ~50 ms steps, so one beep's onset is known to tens of ms. And its fake audio output
pulls audio in a sawtooth against the page clock (about 1 % fast for ~10 s, then a
~100 ms pause), so per-beep offsets swing about +-50 ms. The test
therefore measures ~20 beeps and asserts their MEDIAN, and cross-checks it with
Chromium's own view of sync: the difference between the video's and the audio's
``estimatedPlayoutTimestamp`` (the capture time each is playing now, from our sender
reports). Both must be within +-80 ms.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from serve_process import running_service
from test_viewer_page import OUT_DIR, open_playing, wait_for

from broadcaster.config import load_config
from broadcaster.server.service import Service

SYNC_BUDGET_MS = 80.0
MEASURE_S = 20

MEASURE_JS = """async (seconds) => {
  const video = document.getElementById("video");
  const pc = window.player.pc;
  const canvas = document.createElement("canvas");
  canvas.width = 160; canvas.height = 90;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const frames = [];
  const polls = [];
  const end = performance.now() + seconds * 1000;
  const onFrame = (now, meta) => {
    ctx.drawImage(video, 0, 0, 160, 90);
    // The square is the bottom-right 20 % of the height; read well inside it.
    const px = ctx.getImageData(160 - 12, 90 - 12, 10, 10).data;
    let sum = 0;
    for (let i = 0; i < px.length; i += 4) sum += px[i] + px[i + 1] + px[i + 2];
    frames.push({ t: meta.expectedDisplayTime, luma: sum / (px.length / 4) / 3 });
    if (performance.now() < end) video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  while (performance.now() < end) {
    const report = await pc.getStats();
    let videoPlayout = null;
    report.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") {
        videoPlayout = r.estimatedPlayoutTimestamp;
      }
    });
    report.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "audio") {
        polls.push({
          skew: videoPlayout && r.estimatedPlayoutTimestamp
            ? videoPlayout - r.estimatedPlayoutTimestamp : null,
          // When the stats were gathered (Unix ms), not when the promise came back.
          t: r.timestamp - performance.timeOrigin,
          energy: r.totalAudioEnergy || 0,
          duration: r.totalSamplesDuration || 0,
          level: r.audioLevel || 0,
          received: r.totalSamplesReceived || 0,
          packets: r.packetsReceived || 0,
          codec: r.codecId || "",
        });
      }
    });
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return { frames, polls };
}"""


def flash_starts(frames: list[dict[str, float]]) -> list[float]:
    starts = []
    for prev, cur in zip(frames, frames[1:], strict=False):
        if cur["luma"] > 128 >= prev["luma"]:
            starts.append(cur["t"])
    return starts


def beep_starts(polls: list[dict[str, float]]) -> tuple[list[float], float]:
    """Beep onsets (ms) and the beep's power (energy per second while loud)."""
    gains = []
    for prev, cur in zip(polls, polls[1:], strict=False):
        de, dd = cur["energy"] - prev["energy"], cur["duration"] - prev["duration"]
        gains.append((prev, cur, de, dd))
    # The beep's power: the loudest polls are wholly inside a beep.
    powers = sorted(de / dd for _, _, de, dd in gains if dd > 0.005)
    power = statistics.median(powers[-max(3, len(powers) // 20) :]) if powers else 0.0
    starts: list[float] = []
    quiet_since = None
    for prev, cur, de, dd in gains:
        loud = dd > 0 and de / dd > power * 0.05
        if not loud:
            quiet_since = quiet_since if quiet_since is not None else prev["t"]
            continue
        if quiet_since is not None and cur["t"] - quiet_since > 500:
            starts.append(cur["t"] - de / power * 1000)
        quiet_since = None
    return starts, power


def pair(flashes: list[float], beeps: list[float]) -> list[float]:
    """beep - flash (ms) for each beep with a flash within half a second of it."""
    offsets = []
    for beep in beeps:
        near = min(flashes, key=lambda f: abs(f - beep), default=None)
        if near is not None and abs(beep - near) < 500:
            offsets.append(beep - near)
    return offsets


async def test_page_plays_sound_in_sync_with_the_flash(
    service: Service, page: Any, console: list[str]
) -> None:
    await open_playing(page, service, console)
    await page.click("#unmute")
    assert await page.evaluate("() => document.getElementById('video').muted") is False
    assert await page.evaluate("() => window.player.hasAudio") is True
    # Chromium's own sync settles over the first sender reports: give it a few seconds.
    await wait_for(
        lambda: page.evaluate(
            """async () => { let n = 0; (await window.player.pc.getStats()).forEach(r => {
                if (r.type === "inbound-rtp" && r.kind === "audio") n = r.totalSamplesReceived;
            }); return n; }"""
        ),
        lambda n: n > 48_000 * 3,
        timeout=15,
        what="3 s of audio received",
    )
    result = await page.evaluate(MEASURE_JS, MEASURE_S)
    frames, polls = result["frames"], result["polls"]
    assert polls, "no inbound-rtp audio stats"
    first, last = polls[0], polls[-1]
    # Audio arrives and is played: samples grow, and the level is up during beeps.
    assert last["received"] > first["received"] + 48_000 * 6, (first, last)
    assert last["duration"] > first["duration"] + 6, (first, last)
    assert max(p["level"] for p in polls) > 0.1, [p["level"] for p in polls][:50]
    codec = await page.evaluate(
        """async () => { let m = ""; (await window.player.pc.getStats()).forEach(r => {
            if (r.type === "codec" && r.mimeType.startsWith("audio/")) m = r.mimeType;
        }); return m; }"""
    )
    assert codec.lower() == "audio/opus"

    flashes = flash_starts(frames)
    beeps, power = beep_starts(polls)
    offsets = sorted(pair(flashes, beeps))
    skews = [p["skew"] for p in polls if p["skew"] is not None]
    median = statistics.median(offsets) if offsets else None
    chromium_skew = statistics.median(skews) if skews else None
    report = {
        "beeps": len(beeps),
        "flashes": len(flashes),
        "paired": len(offsets),
        "median_ms": None if median is None else round(median, 1),
        "min_ms": round(offsets[0], 1) if offsets else None,
        "max_ms": round(offsets[-1], 1) if offsets else None,
        "offsets_ms": [round(o, 1) for o in pair(flashes, beeps)],
        "chromium_estimated_skew_ms": chromium_skew,
        "beep_power": round(power, 3),
        "stats_interval_ms": round((last["t"] - first["t"]) / max(1, len(polls) - 1), 1),
        "seconds": MEASURE_S,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "av_sync.json").write_text(json.dumps(report, indent=2) + "\n")
    print("A/V sync:", report)
    # Every beep found its flash (none is off by half a second or lost)...
    assert len(flashes) >= MEASURE_S - 2, report
    assert len(offsets) >= len(beeps) - 1 >= MEASURE_S - 3, report
    # ...and the sound plays with the picture: as measured, and as Chromium sees it.
    assert median is not None and abs(median) <= SYNC_BUDGET_MS, report
    assert chromium_skew is not None and abs(chromium_skew) <= SYNC_BUDGET_MS, report


async def test_page_without_sound_offers_nothing_to_unmute(
    browser: Any, console: list[str]
) -> None:
    config = load_config().with_server(port=0).with_audio("none")
    async with running_service(config) as silent:
        context = await browser.new_context(viewport={"width": 1296, "height": 860})
        try:
            page = await context.new_page()
            await open_playing(page, silent, console)
            assert await page.evaluate("() => window.player.hasAudio") is False
            assert await page.is_hidden("#unmute")
            assert await page.is_disabled("#mute")
            assert await page.get_attribute("#mute", "title") == "this stream has no sound"
            await page.click("#stats-toggle")
            await wait_for(
                lambda: page.inner_text("#stat-resolution"),
                lambda text: text != "–",
                timeout=8,
                what="stats filled",
            )
            assert await page.inner_text("#stat-audio") == "none"
        finally:
            await context.close()
