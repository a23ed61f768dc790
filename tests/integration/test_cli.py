"""The `broadcaster` command as a user runs it: a real process, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from media import write_clip
from serve_process import CMD, ROOT, alive, children, get_json, start_serve, wait_healthy


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_goes_healthy_and_stops_cleanly_on_signal(sig: signal.Signals) -> None:
    proc, url = start_serve()
    try:
        body = wait_healthy(url)
        assert body["status"] == "ok"
        kids = children(proc.pid)
        assert kids, "capture runs in its own process"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        # The capture process (and multiprocessing's resource tracker) go with it.
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in kids if alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_missing_camera_is_a_clear_error() -> None:
    proc = subprocess.run(
        [*CMD, "serve", "--port", "0", "--quiet", "--source", "camera:9"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 3
    assert "error: camera 9: cannot open" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CMD, "serve", "--port", "0", "--quiet", "--source", f"file:{tmp_path}/none.mp4"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 3
    assert "none.mp4" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        ("mic:lavfi:no_such_filter=1", "error: audio device lavfi:no_such_filter=1: cannot open"),
        ("file", "error: audio source 'file' needs a file: video source"),
    ],
)
def test_sound_that_cannot_be_had_is_a_clear_error(audio: str, message: str) -> None:
    # Asked for by name, a missing sound is fatal (with "auto" a camera without a
    # microphone just goes live silent).
    proc = subprocess.run(
        [*CMD, "serve", "--port", "0", "--quiet", "--audio", audio],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 3, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_file_source_streams_and_loops(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", seconds=1.0)
    proc, url = start_serve("--source", f"file:{clip}")
    try:
        wait_healthy(url)
        time.sleep(2.5)  # longer than the clip: it must loop, not end
        status, body = get_json(url + "healthz")
        assert status == 200 and int(body["frames"]) > 60  # type: ignore[call-overload]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert proc.returncode == 0


def test_check_config_good_and_bad(tmp_path: Path) -> None:
    ok = subprocess.run(
        [*CMD, "check-config", str(ROOT / "config.toml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0 and "config ok" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[ladder]]\nname = "a"\nwidth = 641\nheight = 360\nfps = 30\nbitrate = 800\n')
    res = subprocess.run(
        [*CMD, "check-config", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 2
    assert (
        res.stderr.strip() == "config error: ladder[0].width: must be even (4:2:0 video), got 641"
    )


def test_serve_refuses_bad_config_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nprot = 1\n")
    res = subprocess.run(
        [*CMD, "serve", "--config", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 2
    assert "server.prot: unknown key" in res.stderr


def test_port_in_use_is_a_clear_error() -> None:
    proc, url = start_serve()
    try:
        port = url.rsplit(":", 1)[1].strip("/")
        res = subprocess.run(
            [*CMD, "serve", "--port", port, "--quiet"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ},
        )
        assert res.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in res.stderr
        assert "Traceback" not in res.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
