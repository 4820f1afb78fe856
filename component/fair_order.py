"""One server's sessions, in the order a shared model should serve them.

When many sessions' frames wait for one model (the Serve app's detector replicas), who
goes next decides who gets what share. First come, first served is not fair here: a
session's place in line is set by when its next frame arrives, which varies with the
server's own load, and with several detector replicas, by which replica's line a frame
joins (each replica keeps its own, at its own speed). Nothing evens out these draws:
measured over 30 s, slowest/fastest detections per session fell to 0.70-0.76 with two
detector replicas (BENCHMARKS.md run H), and a simulation of the same (12 sessions, two
replicas of unequal speed, random routing) gives 0.72-0.78.

`FairOrder` gives each call a key in seconds (wall clock, so keys from different
processes and nodes compare), lowest first: a virtual clock (L. Zhang, "VirtualClock",
1990). Each session's clock advances by the fair cycle (the mean time between answers
across this server's sessions) every time it sends a frame, and never lags the real
clock by more than `GRACE_CYCLES` cycles:

    key = clock_i = max(clock_i + fair_cycle, now - GRACE_CYCLES * fair_cycle)

A session served as often as the average keeps pace with the real clock; one that got
fewer answers (bad luck in line, a slow replica) is behind it and goes first; one that
got more is ahead and waits. The credit a session can hold is capped by the grace, so
a session that was idle (or is new) gets no burst, and a frame waits at most until the
real clock passes its key by the grace: nothing starves. In the simulation above:
0.92-0.94; measured (16 Haar sessions under overload, two detector replicas, 30 s,
this 2-core machine): 0.66-0.85 first in, first out, 0.82-0.89 in this order. A
session that asks rarely (a long `stream_every`) goes first when it asks and never
holds the others back.

One event loop owns it (the server's): no lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

# Most credit (in fair cycles) a session may carry ahead of the real clock.
GRACE_CYCLES = 2.0
# Weight of the newest interval in each session's running mean cycle.
CYCLE_WEIGHT = 0.2


@dataclass
class _Clock:
    virtual: float
    last_answer: Optional[float] = None
    cycle: Optional[float] = None


class FairOrder:
    """Queue keys for one server's sessions: `add` at start, `key` for each frame
    sent to the shared model, `answered` when its answer (or error) is back,
    `forget` at close."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._sessions: dict[str, _Clock] = {}
        self._cycle_sum = 0.0
        self._cycles = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, session: str) -> None:
        self._sessions.setdefault(session, _Clock(virtual=self._clock()))

    def forget(self, session: str) -> None:
        entry = self._sessions.pop(session, None)
        if entry is not None and entry.cycle is not None:
            self._cycle_sum -= entry.cycle
            self._cycles -= 1

    def fair_cycle(self) -> float:
        """Mean seconds between answers across sessions (0 until one has two)."""
        return self._cycle_sum / self._cycles if self._cycles else 0.0

    def answered(self, session: str) -> None:
        entry = self._sessions.get(session)
        if entry is None:
            return
        now = self._clock()
        if entry.last_answer is not None:
            gap = max(0.0, now - entry.last_answer)
            if entry.cycle is None:
                entry.cycle = gap
                self._cycles += 1
                self._cycle_sum += gap
            else:
                updated = (1 - CYCLE_WEIGHT) * entry.cycle + CYCLE_WEIGHT * gap
                self._cycle_sum += updated - entry.cycle
                entry.cycle = updated
        entry.last_answer = now

    def key(self, session: str) -> float:
        """The key of the session's next frame (lower is served first); advances its clock."""
        now = self._clock()
        entry = self._sessions.get(session)
        if entry is None:  # not a session of this server: plain arrival order
            return now
        fair = self.fair_cycle()
        entry.virtual = max(entry.virtual + fair, now - GRACE_CYCLES * fair)
        return entry.virtual
