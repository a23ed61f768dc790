"""The task that ticks every viewer's ABR policy."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

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


class Captured(Exception):
    pass


def test_a_listening_viewers_audio_counts_in_every_rung_and_in_what_was_sent(
    monkeypatch: Any,
) -> None:
    """Sound shares the link: a viewer capped at 300 kbit/s cannot take a 250 kbit/s
    rung plus ~90 kbit/s of Opus, so the policy must see both."""
    from broadcaster.config import AbrConfig
    from broadcaster.server import abr_controller
    from broadcaster.server.audio import wire_bps
    from broadcaster.server.feedback import FeedbackCollector
    from broadcaster.server.switcher import SwitcherTrack

    seen: dict[str, Any] = {}

    def decide(history: Any, ladder: list[int], *_rest: Any) -> Any:
        seen["ladder"], seen["sent_bps"] = ladder, history[-1].sent_bps
        raise Captured

    class Prober:
        bytes_sent = 0
        available = False

    monkeypatch.setattr(abr_controller, "decide", decide)
    switcher = SwitcherTrack(0, lambda _rung: None)
    switcher.current = 0
    abr = ViewerAbr(
        switcher, Prober(), FeedbackCollector(1, 0.0), [2_500_000, 800_000, 250_000],
        AbrConfig(), 0.0,
    )  # fmt: skip
    abr.audio_bps = wire_bps(64)
    sent = iter([0, 12_000])  # 12 kB of audio in the second between the two ticks
    abr.audio_bytes = lambda: next(sent)
    for now in (0.0, 1.0):  # the first snapshot only starts the count
        with pytest.raises(Captured):
            abr.tick(now)
    audio = round(wire_bps(64))
    assert audio == 64_000 + 23_200
    assert seen["ladder"] == [2_500_000 + audio, 800_000 + audio, 250_000 + audio]
    assert seen["sent_bps"] == 96_000
