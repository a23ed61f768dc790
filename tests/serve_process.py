"""`broadcaster serve` as a real child process: start it, find its URL, poll its health."""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from broadcaster.config import Config
from broadcaster.server.service import Service

ROOT = Path(__file__).resolve().parents[1]
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


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(") ")[1][0] != "Z"


@asynccontextmanager
async def running_service(config: Config, source: str = "test") -> AsyncIterator[Service]:
    """The service in this process, frames flowing; closed (idempotently) on the way out."""
    svc = Service(config, source)
    try:
        await svc.start()
        await svc.wait_healthy()
        yield svc
    finally:
        await svc.close()
