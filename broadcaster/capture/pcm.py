"""Raw audio as the capture process handles it: 48 kHz signed 16-bit PCM, interleaved.

Every audio source (test tone, microphone, a file's audio track) hands out PCM through
``PcmSource.pull(now)``; the audio pipeline (audio.py) cuts it into 20 ms frames, stamps
them on the capture clock and encodes each frame once with Opus.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 48_000
# Opus frame: 20 ms.
FRAME_SAMPLES = SAMPLE_RATE // 50

Pcm = npt.NDArray[np.int16]  # shape (samples, channels)


class PcmSource(Protocol):
    channels: int

    def pull(self, now: float) -> Pcm | None:
        """PCM not handed out yet, up to capture time ``now`` (time.monotonic() seconds):
        shape (samples, channels), int16, 48 kHz. None (or zero rows) when nothing is
        new. Never blocks. Raises SourceError/OSError/av.FFmpegError when the device or
        file is gone."""
        ...

    def close(self) -> None:
        """Release the device/stream; safe to call more than once."""
        ...


def silence(samples: int, channels: int) -> Pcm:
    return np.zeros((samples, channels), np.int16)
