"""The running service: capture process + broadcast + HTTP server, started and closed as one."""

from __future__ import annotations

import asyncio
import gc
import logging
import os

from aiohttp import web

from ..capture.audio import resolve_kind
from ..capture.process import CaptureProcess
from ..config import Config
from .app import create_app
from .broadcast import Broadcast
from .pool import WorkerPool
from .state import VIEWERS

logger = logging.getLogger(__name__)


class Service:
    def __init__(self, config: Config, source: str = "test") -> None:
        # "auto" audio is settled here, so workers and WHEP agree with the capture. A
        # camera's microphone stays "auto": the capture goes on without it if it is absent.
        kind = resolve_kind(config.audio, source)
        if config.audio.source == "auto" and kind != "mic":
            config = config.with_audio(kind)
        self.config = config
        self.source = source
        self.capture: CaptureProcess | None = None
        self.broadcast: Broadcast | None = None
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self.pool: WorkerPool | None = None  # fan-out workers, when configured
        self.port = config.server.port
        self.failed = asyncio.Event()
        self._closed = False

    @property
    def url(self) -> str:
        host = self.config.server.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        if ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{self.port}/"

    @property
    def viewers(self) -> int:
        return len(self.app[VIEWERS]) if self.app is not None else 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.capture = CaptureProcess(self.config, self.source)
        self.broadcast = Broadcast(
            self.config.ladder,
            self.capture.link.request_keyframe,
            self.config.video.codec,
            audio=self.config.audio.source != "none",
        )
        self.broadcast.on_error = lambda _msg: self.failed.set()
        workers = self.config.server.worker_count(os.cpu_count())
        if workers:
            self.pool = WorkerPool(self.config, self.broadcast, workers)
            self.pool.start(loop)
        self.capture.link.start(
            loop,
            self.broadcast.on_message,
            self._on_capture_eof,
            tap=self.pool.tap if self.pool is not None else None,
        )
        self.app = create_app(self.config, self.broadcast, viewers=self.pool)
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.config.server.host, self.config.server.port, reuse_address=True
        )
        await site.start()
        # Everything allocated so far lives as long as the server: keep it out of every
        # future full collection (~69k objects, ~39 ms per gen-2 pass otherwise).
        gc.freeze()
        # Port 0 in config means "any free port": report the one the kernel chose.
        for address in self._runner.addresses:
            if isinstance(address, tuple):
                self.port = int(address[1])
                break

    def _on_capture_eof(self) -> None:
        assert self.broadcast is not None
        self.broadcast.on_eof()
        if not self._closed:
            if self.broadcast.error is None:
                self.broadcast.error = "capture process exited"
            logger.error("capture process ended unexpectedly")
            self.failed.set()

    async def wait_healthy(self, timeout: float = 15.0) -> None:
        """Until frames flow; raises RuntimeError with the capture's error if it fails."""
        assert self.broadcast is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.broadcast.healthy:
            if self.broadcast.error:
                raise RuntimeError(self.broadcast.error)
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("capture produced no frames")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Idempotent: viewers, then HTTP, then the capture process."""
        if self._closed:
            return
        self._closed = True
        if self._runner is not None:
            await self._runner.cleanup()  # runs on_shutdown: closes every viewer session
        if self.pool is not None:
            await self.pool.shutdown()
        if self.broadcast is not None:
            await self.broadcast.close()
        if self.capture is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.capture.close)
