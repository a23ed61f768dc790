"""Test hook: make one rung's real encoder fail after N frames.

``BROADCASTER_FAULT_ENCODER="RUNG:FRAMES"`` in the capture process's environment (e.g.
``1:60``: rung 1 fails after encoding 60 frames). When the count is reached the hook
flushes that rung's encoder (sends it end-of-stream), so the next ``encode`` raises a
genuine ``av.error.EOFError`` from ``avcodec_send_frame`` inside the real encode path: the
capture loop's handling of a broken rung is exercised end to end without mocking it.
Unset (the normal case) it does nothing. Not for production use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..encode.encoder import RungEncoder

logger = logging.getLogger(__name__)

ENV_ENCODER_FAULT = "BROADCASTER_FAULT_ENCODER"


@dataclass(frozen=True, slots=True)
class EncoderFault:
    rung: int
    after_frames: int


def parse_encoder_fault(value: str) -> EncoderFault | None:
    """``"RUNG:FRAMES"`` -> EncoderFault; None (with a warning) for anything else."""
    rung, sep, frames = value.strip().partition(":")
    try:
        fault = EncoderFault(int(rung), int(frames)) if sep else None
    except ValueError:
        fault = None
    if fault is None or fault.rung < 0 or fault.after_frames < 0:
        logger.warning("ignoring %s=%r (want RUNG:FRAMES, e.g. 1:60)", ENV_ENCODER_FAULT, value)
        return None
    return fault


def encoder_fault_from_env(environ: Mapping[str, str] = os.environ) -> EncoderFault | None:
    value = environ.get(ENV_ENCODER_FAULT)
    return parse_encoder_fault(value) if value else None


class EncoderFaultHook:
    """Counts one rung's frames and breaks its encoder once the count is reached."""

    def __init__(self, fault: EncoderFault | None) -> None:
        self.fault = fault
        self._frames = 0
        self._fired = False

    def before_encode(self, rung: int, encoder: RungEncoder) -> None:
        if self.fault is None or rung != self.fault.rung or self._fired:
            return
        if self._frames >= self.fault.after_frames:
            self._fired = True
            logger.warning("test hook: breaking rung %d's encoder (%s)", rung, ENV_ENCODER_FAULT)
            encoder.flush()
            return
        self._frames += 1
