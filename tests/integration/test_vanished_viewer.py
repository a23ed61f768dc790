"""A viewer killed without a goodbye (SIGKILL: no DELETE, no DTLS close) is released."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from broadcaster.config import load_config
from broadcaster.server.service import Service

VIEWER = """
import asyncio, sys
sys.path.insert(0, {tests!r})
import aiohttp
from whep_client import WhepViewer

async def main():
    async with aiohttp.ClientSession() as http:
        viewer = WhepViewer({url!r})
        await viewer.connect(http)
        while True:
            await viewer.frame(timeout=15)
            print("frame", flush=True)

asyncio.run(main())
"""


async def test_sigkilled_viewer_is_gone_within_15_s() -> None:
    service = Service(load_config(None).with_server(port=0), "test")
    await service.start()
    proc: subprocess.Popen[str] | None = None
    try:
        await service.wait_healthy()
        script = VIEWER.format(tests=str(Path(__file__).parents[1]), url=service.url)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert line.strip() == "frame"
        assert service.viewers == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        killed = time.monotonic()
        while service.viewers and time.monotonic() - killed < 20:
            await asyncio.sleep(0.2)
        gone_after = time.monotonic() - killed
        print(f"\nsession released {gone_after:.1f} s after SIGKILL")
        assert service.viewers == 0 and gone_after <= 15
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        await service.close()
