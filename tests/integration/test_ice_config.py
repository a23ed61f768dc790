"""ICE settings from config drive real sessions: port range and announced ICE servers."""

from __future__ import annotations

import re

import aiohttp
from whep_client import WhepViewer

from broadcaster.config import parse_config
from broadcaster.server import rtc_internals
from broadcaster.server.service import Service


async def test_media_ports_come_from_the_configured_range() -> None:
    config = parse_config({"server": {"port": 0}, "ice": {"port_min": 42000, "port_max": 42009}})
    service = Service(config, "test")
    await service.start()
    try:
        await service.wait_healthy()
        async with aiohttp.ClientSession() as http:
            viewer = WhepViewer(service.url)
            await viewer.connect(http)
            answer = viewer.pc.remoteDescription.sdp
            ports = {
                int(p) for p in re.findall(r"a=candidate:\S+ 1 udp \d+ \S+ (\d+) typ host", answer)
            }
            assert ports and all(42000 <= p <= 42009 for p in ports)
            frame = await viewer.frame(timeout=15)
            assert frame.width == 1280
            await viewer.close(http)
    finally:
        await service.close()
        rtc_internals.use_port_range(0, 0)
