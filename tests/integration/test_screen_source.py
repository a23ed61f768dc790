"""Screen source against a real (virtual) X server.

Needs the Debian packages ``xvfb`` (Xvfb) and ``x11-xserver-utils`` (xsetroot, which paints
the root window a known colour).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from broadcaster.capture.screen import ScreenSource
from broadcaster.capture.sources import SourceError, open_source

RUNG = {"width": 1280, "height": 720, "fps": 30.0}
DISPLAY_NUMBERS = range(97, 121)


def _start_xvfb(number: int) -> subprocess.Popen[bytes] | None:
    """Xvfb on :number, or None if that display turned out to be taken."""
    socket = Path(f"/tmp/.X11-unix/X{number}")
    proc = subprocess.Popen(
        # -noreset: otherwise the server resets (root back to black) each time its last
        # client, e.g. xsetroot, disconnects.
        ["Xvfb", f":{number}", "-screen", "0", "640x480x24", "-nolisten", "tcp", "-noreset"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None  # lost a race for the display number
        if socket.exists():
            return proc
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    return None


@pytest.fixture
def xvfb_display() -> Iterator[str]:
    # .ci/run installs both: in CI a missing tool is a failure, not a skip.
    give_up = pytest.fail if os.environ.get("CI") else pytest.skip
    if shutil.which("Xvfb") is None:
        give_up("Xvfb not installed (apt package: xvfb)")
    if shutil.which("xsetroot") is None:
        give_up("xsetroot not installed (apt package: x11-xserver-utils)")
    for number in DISPLAY_NUMBERS:
        if Path(f"/tmp/.X{number}-lock").exists() or Path(f"/tmp/.X11-unix/X{number}").exists():
            continue
        proc = _start_xvfb(number)
        if proc is None:
            continue
        try:
            yield f":{number}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return
    pytest.fail(f"no free X display number in {DISPLAY_NUMBERS}")


def _paint_root(display: str, colour: str) -> None:
    subprocess.run(["xsetroot", "-display", display, "-solid", colour], check=True, timeout=10)


def _mean_bgr(frame: np.ndarray) -> tuple[float, ...]:
    return tuple(float(c) for c in frame.reshape(-1, 3).mean(axis=0))


@pytest.mark.xvfb
def test_screen_grabs_the_virtual_display(
    xvfb_display: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPLAY", xvfb_display)
    _paint_root(xvfb_display, "#ff0000")
    source = open_source("screen", **RUNG)  # type: ignore[arg-type]
    try:
        frame = source.read()
        assert frame.shape == (480, 640, 3)
        assert frame.dtype == np.uint8
        assert frame.flags.c_contiguous
        assert _mean_bgr(frame) == pytest.approx((0, 0, 255), abs=2)

        # A second grab must see the new content, not a cached image.
        _paint_root(xvfb_display, "#00ff00")
        assert _mean_bgr(source.read()) == pytest.approx((0, 255, 0), abs=2)
    finally:
        source.close()
        source.close()
    with pytest.raises(SourceError, match="after close"):
        source.read()


@pytest.mark.xvfb
def test_screen_bad_monitor_index(xvfb_display: str) -> None:
    with pytest.raises(SourceError) as info:
        ScreenSource(5, display=xvfb_display)
    assert str(info.value).startswith("screen 5: no such monitor")
    assert "1 monitor" in str(info.value)


def test_screen_without_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(SourceError) as info:
        open_source("screen", **RUNG)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("screen 1: no X display")
    assert "DISPLAY" in message
    assert "\n" not in message


def test_screen_unreachable_display() -> None:
    # Display :1999 has no server behind it (no socket created by anyone sane).
    assert not os.path.exists("/tmp/.X11-unix/X1999")
    with pytest.raises(SourceError) as info:
        ScreenSource(1, display=":1999")
    assert str(info.value).startswith("screen 1: cannot connect to display :1999 (")


@pytest.mark.xvfb
async def test_screen_streams_to_a_viewer(
    xvfb_display: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --source screen`: a WHEP viewer decodes the virtual display's known colour."""
    import aiohttp
    from whep_client import WhepViewer

    from broadcaster.config import load_config
    from broadcaster.server.service import Service

    monkeypatch.setenv("DISPLAY", xvfb_display)  # the capture process inherits it
    _paint_root(xvfb_display, "#ff0000")
    service = Service(load_config(None).with_server(port=0), "screen")
    await service.start()
    try:
        await service.wait_healthy()
        async with aiohttp.ClientSession() as http:
            viewer = WhepViewer(service.url)
            await viewer.connect(http)
            for _ in range(5):
                frame = await viewer.frame(timeout=15)
            rgb = frame.to_ndarray(format="rgb24")
            assert rgb.shape == (720, 1280, 3)
            # 640x480 letterboxed into 16:9: red in the middle, black bars at the sides.
            centre = rgb[200:520, 400:880].reshape(-1, 3).mean(axis=0)
            assert centre[0] > 200 and centre[1] < 50 and centre[2] < 50
            assert rgb[:, :100].mean() < 30
            await viewer.close(http)
    finally:
        await service.close()
