"""Logging a failure that may repeat every frame without flooding the log.

A stream fn or a draw that fails on one frame usually fails on every frame after it:
at 30 fps per session that is thousands of identical tracebacks a minute, which bury
everything else and cost the media loop real time. `ThrottledLog` writes the first
occurrence in full (with its traceback), then at most one summary line per
`every_s` seconds saying how many repeats it held back and what the latest was.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional


class ThrottledLog:
    """One repeating failure's log, owned by whatever repeats it (a track, a session),
    so one noisy session never silences another's first report."""

    def __init__(
        self, logger: logging.Logger, message: str, every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.message = message
        self.every_s = every_s
        self.count = 0  # failures seen in all
        self._clock = clock
        self._reported_at: Optional[float] = None
        self._held_back = 0

    def failure(self, exc: BaseException) -> None:
        """Record one failure; log it if it is the first, or if `every_s` passed since
        the last line (then with the count of those held back in between)."""
        self.count += 1
        now = self._clock()
        if self._reported_at is None:
            self.logger.error("%s", self.message, exc_info=exc)
            self._reported_at = now
            return
        self._held_back += 1
        if now - self._reported_at >= self.every_s:
            self.logger.error(
                "%s: %d more times in the last %.0f s (%d in all), latest %s: %s",
                self.message, self._held_back, now - self._reported_at, self.count, type(exc).__name__, exc,
            )
            self._reported_at = now
            self._held_back = 0
