"""The real service in a process of its own that reports on itself when asked.

For tests that measure the server from outside (test_churn.py): the server's fds, memory,
threads and asyncio tasks, with nothing of the test (viewers, pytest) in the same
process. Prints one JSON line ``{"url": ...}`` once frames flow; then answers each line
on stdin with one JSON line of counts ("census": after a full garbage collection, with
object counts too); "quit" or EOF stops the service. Run as
``python tests/integration/census_server.py`` with the project on PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import threading
from dataclasses import replace
from typing import Any

import psutil
from aiortc import RTCPeerConnection

from broadcaster.config import load_config
from broadcaster.server.service import Service
from broadcaster.server.session import ViewerSession
from broadcaster.server.state import VIEWERS


def counts(service: Service, full: bool) -> dict[str, Any]:
    assert service.app is not None
    if full:
        gc.collect()
    out: dict[str, Any] = {
        "viewers": len(service.app[VIEWERS]),
        "tasks": len(asyncio.all_tasks()),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss": psutil.Process().memory_info().rss,
        "threads": threading.active_count(),
    }
    if full:
        objects = gc.get_objects()
        out["objects"] = len(objects)
        out["peer_connections"] = sum(isinstance(o, RTCPeerConnection) for o in objects)
        out["sessions"] = sum(isinstance(o, ViewerSession) for o in objects)
    return out


async def main() -> None:
    base = load_config(None).with_server(port=0)
    # Churn makes hundreds of offers a minute from one address: the per-IP rate is off.
    service = Service(replace(base, limits=replace(base.limits, offers_per_minute=0)), "test")
    await service.start()
    try:
        await service.wait_healthy()
        print(json.dumps({"url": service.url, "pid": os.getpid()}), flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while (line := (await reader.readline()).decode().strip()) not in ("", "quit"):
            print(json.dumps(counts(service, full=line == "census")), flush=True)
    finally:
        await service.close()


if __name__ == "__main__":
    asyncio.run(main())
