"""One upload ceiling for all of a server's sessions, from its media loop's lag.

Why: when a machine carries more sessions than its CPU can decode, draw and encode at
camera rate, every stage of the media path waits for CPU at once. Measured at 16
FastestDet sessions (server render, 2 cores, twice what fits at 30 fps): the event
loop woke 35-110 ms late (p50; p95 150-200 ms), a decoded frame waited ~50 ms for the
loop to read it, an encode that needs 4.5 ms of CPU took ~140 ms in its worker thread,
and the decoder threads ~100 ms per frame; the round trip's p95 was 0.9-1.0 s. Each
session's own cap (`component.upload_rate`) follows what that session gets back, so
the machine settled wherever starvation left it, with every stage saturated.

The loop's lag is the one signal every stage shares (the loop carries every packet,
and waits for the same cores and interpreter lock as the threads). A probe
(`LoopLagProbe`) sleeps `PROBE_INTERVAL_S` at a time on the media loop and records
how late it wakes. Once a second `MediaLoad.update` reads the window's 90th
percentile:

- above `target_s` for `LATE_WINDOWS` seconds in a row: congested (one late second is
  a burst, e.g. sessions connecting: their DTLS handshakes run on the loop). The
  ceiling becomes `DECREASE` x the sessions' mean upload rate over the last second
  (not x the old ceiling, which may lie far above what pages send), then holds for
  `HOLD_S` so that pages can follow before it is judged again;
- below half of `target_s`: room. The ceiling rises by `STEP_FPS` a second and is
  lifted once it reaches `MAX_UPLOAD_FPS`;
- in between: it stays.

The default target (50 ms, `StreamPolicy.media_lag_target_ms`) was chosen on 2 cores:
at 30 ms the ceiling already cut 4-6 FastestDet sessions that held ~25-30 fps
uncapped, trading their frame rate for little latency.

Every session's upload cap is min(its own cap, the ceiling): the same number for all,
so under overload the sessions lose frames evenly and the frames that are sent come
back quickly. Measured figures are in the issue notes and BENCHMARKS.md.

Server render only. In browser render the page's upload already follows what the fn
takes (`UploadRate`, `FairShare`), and the loop's lag there comes mostly from the
detections themselves: a ceiling on top cut the frames the fn could take. Measured at
16 FastestDet sessions: 49 detections/s in all (3.0 per session, upload 6.7 fps)
against 85 (5.2 per session) without it.

One event loop owns it (the server's): no locks.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from component.upload_rate import MAX_UPLOAD_FPS, MIN_UPLOAD_FPS, SessionRates

PROBE_INTERVAL_S = 0.025
# The ceiling is cut to this share of what the sessions sent in the last second.
DECREASE = 0.8
# Seconds after a cut before the lag may cut again (pages follow a cap within ~1 s).
HOLD_S = 2.0
# Consecutive late windows (seconds) that make congestion.
LATE_WINDOWS = 2
# Frames per second the ceiling rises per second of an uncongested loop.
STEP_FPS = 2.0
# Share of the probe's wake-ups the judged lag covers.
QUANTILE = 0.9


class LoopLagProbe:
    """How late the event loop runs a timer: a sample per `interval_s` while running.

    Costs one timer wake-up per interval (40 a second at the default)."""

    def __init__(self, interval_s: float = PROBE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._samples: list[float] = []

    def take(self) -> list[float]:
        """The lags (seconds) measured since the last call."""
        samples, self._samples = self._samples, []
        return samples

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.interval_s)
            self._samples.append(max(0.0, loop.time() - asked - self.interval_s))


def quantile(samples: list[float], q: float) -> float:
    """The q-quantile of `samples` (nearest rank); 0 for none."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class MediaLoad(SessionRates):
    """The server-wide upload ceiling (None: no ceiling). Sessions `report` their
    upload rate each second and read `ceiling_fps`; the server calls `update`."""

    def __init__(self, target_s: float, min_fps: float = MIN_UPLOAD_FPS, max_fps: float = MAX_UPLOAD_FPS) -> None:
        super().__init__()
        if target_s <= 0:
            raise ValueError("target_s must be > 0")
        self.target_s = target_s
        self.min_fps, self.max_fps = min_fps, max_fps
        self.ceiling_fps: Optional[float] = None
        self.lag_s = 0.0
        self.cuts = 0
        self._late = 0
        self._hold_until = float("-inf")

    def forget(self, key: str) -> None:
        super().forget(key)
        if self.mean() is None:
            self.ceiling_fps = None  # nothing left to protect; the next session starts free

    def update(self, lag_samples: list[float], now: float) -> Optional[float]:
        """Judge one window of loop lags; returns the ceiling now in force."""
        self.lag_s = quantile(lag_samples, QUANTILE)
        self._late = self._late + 1 if self.lag_s > self.target_s else 0
        sent = self.mean()
        if sent is None or now < self._hold_until:
            return self.ceiling_fps
        if self._late >= LATE_WINDOWS:
            base = sent if self.ceiling_fps is None else min(self.ceiling_fps, sent)
            self.ceiling_fps = max(self.min_fps, DECREASE * base)
            self.cuts += 1
            self._late = 0
            self._hold_until = now + HOLD_S
        elif self.lag_s < self.target_s / 2 and self.ceiling_fps is not None:
            raised = self.ceiling_fps + STEP_FPS
            self.ceiling_fps = None if raised >= self.max_fps else raised
        return self.ceiling_fps

    def stats(self) -> dict[str, Any]:
        return {
            "loop_lag_ms": round(1000 * self.lag_s, 1),
            "target_ms": round(1000 * self.target_s, 1),
            "ceiling_fps": None if self.ceiling_fps is None else round(self.ceiling_fps, 1),
            "cuts": self.cuts,
        }
