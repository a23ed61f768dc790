"""The task that ticks every viewer's ABR policy."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any, cast

from broadcaster.server.abr_controller import TICK, ViewerAbr, run_controller


class Ticked:
    """What the controller needs of a viewer: ``tick(now)``."""

    def __init__(self, fail: bool = False) -> None:
        self.ticks = 0
        self.fail = fail

    def tick(self, now: float) -> None:
        self.ticks += 1
        if self.fail:
            raise RuntimeError("policy bug")


@contextlib.asynccontextmanager
async def controller(viewers: list[Any]) -> AsyncIterator[None]:
    def current() -> list[ViewerAbr]:
        return cast(list[ViewerAbr], list(viewers))

    task = asyncio.ensure_future(run_controller(current))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_one_viewers_error_does_not_stop_the_others() -> None:
    broken, viewer = Ticked(fail=True), Ticked()
    async with controller([broken, viewer]):
        await asyncio.sleep(TICK * 2.5)
    assert broken.ticks >= 2 and viewer.ticks >= 2


async def test_keeps_no_viewer_alive_after_it_left() -> None:
    viewers: list[Any] = [Ticked()]
    gone = weakref.ref(viewers[0])
    async with controller(viewers):
        await asyncio.sleep(TICK * 1.5)
        assert gone() is not None and gone().ticks >= 1  # type: ignore[union-attr]
        viewers.clear()
        await asyncio.sleep(TICK * 2)
        # A departed viewer's session (peer connection, transports, buffers) must not
        # stay reachable from the controller until the next viewer comes.
        assert gone() is None
