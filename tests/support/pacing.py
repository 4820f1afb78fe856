"""A camera's clock for the Python peers: frame n leaves n/fps after the first one, with
the pts an RTP video sender expects. Shared by the test client's `ImageTrack` and the
load generator's pre-encoded `LoopTrack`, so both send at the same, drift-free pace."""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Optional

VIDEO_CLOCK = 90_000  # RTP's clock rate for video
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)


class FramePacer:
    """When frame `index` is due, counted from the first `wait()`. A late frame goes at
    once and the schedule stays put (no drift, no burst to catch up beyond the frames
    already due)."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self._start: Optional[float] = None

    async def wait(self, index: int) -> None:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + index / self.fps
        if due > now:
            await asyncio.sleep(due - now)

    def pts(self, index: int) -> int:
        """Frame `index`'s presentation time in `TIME_BASE` units."""
        return int(index * VIDEO_CLOCK / self.fps)
