"""Graceful shutdown of a real `broadcaster serve` with a viewer and a page connected."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import aiohttp
from serve_process import alive, children, start_serve, wait_healthy
from whep_client import WhepViewer

DRAIN_LIMIT_S = 5.0  # "exits 0 within a few seconds"


async def test_sigterm_tells_pages_closes_viewers_and_exits_zero() -> None:
    proc, url = start_serve()
    try:
        await asyncio.to_thread(wait_healthy, url)
        kids = children(proc.pid)
        async with aiohttp.ClientSession() as http:
            sock = await http.ws_connect(url + "ws")
            assert (await sock.receive_json(timeout=5))["stream"] in ("live", "starting")
            viewer = WhepViewer(url)
            await viewer.connect(http)
            await viewer.frame(timeout=15)

            closed = asyncio.Event()
            viewer.pc.on("connectionstatechange", lambda: closed.set())
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)

            # The page hears `ended` before its socket closes with 1001 (going away).
            states = []
            while True:
                msg = await sock.receive(timeout=DRAIN_LIMIT_S)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(msg.data)
                if data["type"] == "state":
                    states.append(data["stream"])
            assert states and states[-1] == "ended", states
            assert sock.close_code == 1001

            code = await asyncio.to_thread(proc.wait, DRAIN_LIMIT_S)
            took = time.monotonic() - sent
            assert code == 0, proc.stderr.read() if proc.stderr else ""
            assert took < DRAIN_LIMIT_S
            # The viewer's session was closed by the server, not left to time out.
            await asyncio.wait_for(closed.wait(), 5)
            assert viewer.pc.connectionState in ("closed", "failed")
            await viewer.close()
        # The capture process (and multiprocessing's resource tracker, which notices the
        # parent's exit a moment later) go with it.
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in kids) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not [pid for pid in kids if alive(pid)], "capture process left behind"
        err = proc.stderr.read() if proc.stderr else ""
        assert "Traceback" not in err
        print(f"SIGTERM to exit: {took:.2f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_second_signal_forces_exit_when_shutdown_hangs() -> None:
    proc, url = start_serve()
    kids: list[int] = []
    try:
        await asyncio.to_thread(wait_healthy, url)
        kids = children(proc.pid)
        assert kids
        # A hung capture process (stopped): a clean shutdown would wait seconds for it.
        for pid in kids:
            os.kill(pid, signal.SIGSTOP)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)
        assert proc.poll() is None, "still waiting for the hung capture"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 5)
        assert time.monotonic() - sent < 1.0
        assert code == 1
        # The stopped child holds the stderr pipe too: end it before reading to EOF.
        for pid in kids:
            os.kill(pid, signal.SIGKILL)
        assert "forced exit" in (proc.stderr.read() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in kids:  # the capture child we stopped: ours to end
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
