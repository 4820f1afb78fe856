"""Per-client token buckets for offers: one misbehaving client cannot churn peer
connections (each costs sockets, DTLS and threads) for everyone else."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable


class RateLimiter:
    """`rate` offers per second per key with bursts up to `burst`.

    Keys are evicted least-recently-used beyond `max_keys`, so memory stays bounded
    however many addresses show up.
    """

    def __init__(
        self, rate: float, burst: int, max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Spend one token; returns 0 when allowed, else seconds until one is free."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait
