"""Boxes survive a detector's single misses.

A detector misses a steady face in an occasional frame (video noise). Publishing that
empty result would blink the box off for one result interval, which viewers read as
flicker and tests as a frame without a box. So an empty result is ignored while the
last boxes are recent. "Recent" scales with the session's result interval: at 20
results/s 0.3 s spans several misses, but when results slow down (a busy machine, a
detector replica at low CPU priority, many sessions sharing it) a fixed 0.3 s would
not cover even one, and the box would blink on every miss.
"""

from __future__ import annotations

MIN_HOLD_S = 0.3
# How many result intervals an empty result may follow the last boxes and be ignored:
# more than one, so a single miss is covered even when intervals jitter.
HOLD_INTERVALS = 1.5
# Weight of the newest interval in the running mean.
_EWMA = 0.3


class BoxHold:
    """Per session: `ignore_empty(has_boxes, now)` for every result, in order."""

    def __init__(self, min_hold_s: float = MIN_HOLD_S, intervals: float = HOLD_INTERVALS) -> None:
        self._min_hold_s = min_hold_s
        self._intervals = intervals
        self._boxes_at: float | None = None
        self._last_at: float | None = None
        self._interval_s = 0.0

    @property
    def hold_s(self) -> float:
        return max(self._min_hold_s, self._intervals * self._interval_s)

    def ignore_empty(self, has_boxes: bool, now: float) -> bool:
        """True when this result is empty and the last boxes are recent enough to keep."""
        if self._last_at is not None:
            gap = now - self._last_at
            self._interval_s = gap if self._interval_s == 0 else (1 - _EWMA) * self._interval_s + _EWMA * gap
        self._last_at = now
        if has_boxes:
            self._boxes_at = now
            return False
        return self._boxes_at is not None and now - self._boxes_at < self.hold_s
