"""The detector replica's batch queue: batches like `@serve.batch`, but in the order of
each frame's `priority` (lowest first) instead of arrival.

Why: with first in, first out, a session's share of a saturated detector depends on
when its frames happen to arrive and which replica's line they join, and those draws
never even out (slowest/fastest detections/s 0.70-0.76 with two replicas under
overload, BENCHMARKS.md run H). The ingress sets each frame's priority to its session's
fair-queueing key (`component.fair_order`, a virtual clock in wall-clock seconds, so
keys from every ingress replica compare): sessions that got less than the average go
first. The queue itself only orders; it knows nothing of sessions.

One difference from `@serve.batch` beyond the order: Serve (Ray 2.60) forms its next
batch while the previous one still runs (it waits for the running one only after
forming it), so under load that batch holds only what arrived within
`batch_wait_timeout_s` of the previous one's start. Here the next batch is formed when
the previous pass ends, from everything that waited meanwhile: at 16 FastestDet
browser-render sessions on one replica, batches of 8.0 against 6.0 frames, 98 against
85 detections/s (back to back).

Rules, as `@serve.batch`: one batch runs at a time; a batch leaves with
`max_batch_size` frames, or `wait_s` after its first frame was queued, whichever is
first (frames that waited through the previous batch leave at once); each caller gets
its own result or the batch's exception; a caller that went away (cancelled) before its
frame was taken is skipped. Equal priorities keep arrival order. The queue holds what
the replica's callers submitted: `max_ongoing_requests` bounds it, not this class.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

BatchHandler = Callable[[list[T]], Awaitable[Sequence[R]]]


class FairBatchQueue(Generic[T, R]):
    """`await queue.submit(item, priority)` -> its result from `handler([...items])`;
    lower `priority` first."""

    def __init__(self, handler: BatchHandler[T, R], max_batch_size: int, wait_s: float) -> None:
        self._handler = handler
        self.configure(max_batch_size, wait_s)
        self._heap: list[tuple[float, int, T, asyncio.Future[R]]] = []
        self._order = itertools.count()
        self._queued = asyncio.Event()
        self._first_queued_at: float | None = None
        self._runner: asyncio.Task[None] | None = None
        self._serving: list[asyncio.Future[R]] = []

    def configure(self, max_batch_size: int, wait_s: float) -> None:
        """New settings, taken by the next batch formed (a running one finishes as it was)."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0, got {wait_s}")
        self.max_batch_size, self.wait_s = max_batch_size, wait_s

    def __len__(self) -> int:
        return len(self._heap)

    async def submit(self, item: T, priority: float = 0.0) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._heap:
            self._first_queued_at = loop.time()
        if priority != priority:  # NaN would break the heap's order
            priority = 0.0
        heapq.heappush(self._heap, (priority, next(self._order), item, future))
        self._queued.set()
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        return await future

    async def _run(self) -> None:
        """Form and serve batches while frames wait; ends when none do (the next
        `submit` starts it again), so an idle replica holds no task."""
        loop = asyncio.get_running_loop()
        while self._heap:
            # Gather until the batch is full or its first frame has waited `wait_s`.
            while len(self._heap) < self.max_batch_size:
                assert self._first_queued_at is not None
                remaining = self._first_queued_at + self.wait_s - loop.time()
                if remaining <= 0:
                    break
                self._queued.clear()
                try:
                    await asyncio.wait_for(self._queued.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            if batch:
                await self._serve(batch)

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        while self._heap and len(batch) < self.max_batch_size:
            _, _, item, future = heapq.heappop(self._heap)
            if not future.done():  # its caller went away: not worth a forward pass
                batch.append((item, future))
        if self._heap:
            # What stays has waited through this batch: the next one leaves at once.
            self._first_queued_at = asyncio.get_running_loop().time() - self.wait_s
        else:
            self._first_queued_at = None
        return batch

    async def _serve(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        futures = self._serving = [future for _, future in batch]
        try:
            results = await self._handler([item for item, _ in batch])
            if len(results) != len(futures):
                raise RuntimeError(f"batch of {len(futures)} answered with {len(results)} results")
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._serving = []
        for future, result in zip(futures, results):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        """Stop forming batches; callers still queued or in the running batch are
        cancelled."""
        serving = self._serving
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for future in [*serving, *(entry[3] for entry in self._heap)]:
            future.cancel()
        self._heap.clear()
