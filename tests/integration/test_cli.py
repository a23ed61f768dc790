"""The `broadcaster` command as a user runs it: a real process, real signals."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from media import write_clip

ROOT = Path(__file__).resolve().parents[2]
CMD = [sys.executable, "-m", "broadcaster.cli"]


def start_serve(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*CMD, "serve", "--port", "0", "--quiet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline() if ready else ""
    match = re.search(r"open (http://\S+/)", line)
    if not match:
        proc.kill()
        raise AssertionError(
            f"no URL printed: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        )
    return proc, match.group(1)


def get_json(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_healthy(url: str, timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = get_json(url + "healthz")
        if status == 200:
            return body
        assert status == 503, status  # "starting", never a 500
        time.sleep(0.1)
    raise AssertionError("never healthy")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_goes_healthy_and_stops_cleanly_on_signal(sig: signal.Signals) -> None:
    proc, url = start_serve()
    try:
        body = wait_healthy(url)
        assert body["status"] == "ok"
        children = _children(proc.pid)
        assert children, "capture runs in its own process"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        # The capture process (and multiprocessing's resource tracker) go with it.
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(") ")[1][0] != "Z"


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
