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
        # The frame the current rate counts from, and its pts.
        self._first = 0
        self._first_pts = 0

    def change_rate(self, fps: float, index: int) -> None:
        """From frame `index` on, pace at `fps`, the first of them at once (a sender
        whose frame rate is capped mid-stream); pts go on from where they were."""
        self._first_pts, self._first = self.pts(index), index
        self.fps, self._start = fps, None

    async def wait(self, index: int) -> None:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + (index - self._first) / self.fps
        if due > now:
            await asyncio.sleep(due - now)

    def pts(self, index: int) -> int:
        """Frame `index`'s presentation time in `TIME_BASE` units."""
        return self._first_pts + int((index - self._first) * VIDEO_CLOCK / self.fps)
