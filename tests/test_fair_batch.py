"""`FairBatchQueue` batches like `@serve.batch` and serves the lowest priority first;
`FairOrder` gives the keys that make a shared model's answers fair across sessions.
Pure asyncio: the batch handler is a coroutine standing in for the model (the real
replica path is covered by test_batching, test_tuning and the e2e tests)."""

from __future__ import annotations

import asyncio

import random

import numpy as np
import pytest

from component.fair_order import GRACE_CYCLES, FairOrder
from component.stream_context import current_stream
from deployments.fair_batch import FairBatchQueue


class Model:
    """A batch handler: records each batch, answers item * 10 once `release` is set
    (or at once), or raises."""

    def __init__(self, fail: Exception | None = None, hold: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        if not hold:
            self.release.set()

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.started.set()
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [item * 10 for item in items]


async def wait_until(condition, timeout: float = 2.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


async def busy_queue(max_batch_size: int, first: int = 0):
    """A queue whose model holds its first batch (`first` alone) until released:
    what is submitted next waits in line. -> (model, queue, the first caller)."""
    model = Model(hold=True)
    queue = FairBatchQueue(model, max_batch_size=max_batch_size, wait_s=0.0)
    running = asyncio.ensure_future(queue.submit(first))
    await asyncio.wait_for(model.started.wait(), 2)
    return model, queue, running


async def test_frames_queued_while_a_batch_runs_leave_least_served_first():
    model, queue, first = await busy_queue(3, first=0)
    # Six sessions' frames arrive while the first batch runs; rates 5, 1, 3, 0.5, 4, 2.
    rates = {1: 5.0, 2: 1.0, 3: 3.0, 4: 0.5, 5: 4.0, 6: 2.0}
    waiting = [asyncio.ensure_future(queue.submit(item, priority=rate)) for item, rate in rates.items()]
    await wait_until(lambda: len(queue) == 6)
    model.release.set()
    assert await first == 0
    assert await asyncio.gather(*waiting) == [10, 20, 30, 40, 50, 60]
    # Lowest rate first, max_batch_size per batch: 0.5, 1, 2 then 3, 4, 5.
    assert model.batches == [[0], [4, 2, 6], [3, 5, 1]]


async def test_equal_priorities_keep_arrival_order():
    model, queue, first = await busy_queue(2, first=9)
    waiting = [asyncio.ensure_future(queue.submit(item, priority=1.0)) for item in range(1, 6)]
    await wait_until(lambda: len(queue) == 5)
    model.release.set()
    await asyncio.gather(first, *waiting)
    assert model.batches == [[9], [1, 2], [3, 4], [5]]


async def test_a_batch_waits_for_more_frames_up_to_wait_s_then_leaves_partial():
    model = Model()
    queue = FairBatchQueue(model, max_batch_size=8, wait_s=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(queue.submit(1), queue.submit(2), queue.submit(3))
    assert results == [10, 20, 30]
    assert model.batches == [[1, 2, 3]]
    assert loop.time() - started >= 0.045


async def test_a_full_batch_leaves_without_waiting():
    model = Model()
    queue = FairBatchQueue(model, max_batch_size=2, wait_s=5.0)
    results = await asyncio.wait_for(asyncio.gather(queue.submit(1), queue.submit(2)), 1.0)
    assert results == [10, 20] and model.batches == [[1, 2]]


async def test_configure_applies_to_the_next_batch_and_rejects_bad_values():
    model = Model()
    queue = FairBatchQueue(model, max_batch_size=1, wait_s=0.0)
    await asyncio.gather(queue.submit(1), queue.submit(2))
    assert model.batches == [[1], [2]]
    queue.configure(max_batch_size=4, wait_s=0.02)
    await asyncio.gather(queue.submit(3), queue.submit(4), queue.submit(5))
    assert model.batches[-1] == [3, 4, 5]
    with pytest.raises(ValueError):
        queue.configure(max_batch_size=0, wait_s=0.0)
    with pytest.raises(ValueError):
        queue.configure(max_batch_size=1, wait_s=-1.0)


async def test_a_failing_batch_fails_each_of_its_callers_and_the_queue_goes_on():
    model = Model(fail=ValueError("bad frame"))
    queue = FairBatchQueue(model, max_batch_size=4, wait_s=0.01)
    results = await asyncio.gather(queue.submit(1), queue.submit(2), return_exceptions=True)
    assert all(isinstance(r, ValueError) and "bad frame" in str(r) for r in results)
    model.fail = None
    assert await queue.submit(3) == 30


async def test_a_caller_that_went_away_is_not_sent_to_the_model():
    model, queue, first = await busy_queue(4, first=1)
    gone = asyncio.ensure_future(queue.submit(2))
    kept = asyncio.ensure_future(queue.submit(3))
    await wait_until(lambda: len(queue) == 2)
    gone.cancel()
    model.release.set()
    assert await first == 10 and await kept == 30
    assert model.batches == [[1], [3]]


async def test_nan_priority_does_not_break_the_order():
    model, queue, first = await busy_queue(1, first=0)
    waiting = [asyncio.ensure_future(queue.submit(i, priority=p)) for i, p in ((1, 2.0), (2, float("nan")), (3, 1.0))]
    await wait_until(lambda: len(queue) == 3)
    model.release.set()
    await asyncio.gather(first, *waiting)
    assert model.batches == [[0], [2], [3], [1]]


async def test_close_cancels_queued_and_running_callers():
    model, queue, running = await busy_queue(1, first=1)
    queued = asyncio.ensure_future(queue.submit(2))
    await wait_until(lambda: len(queue) == 1)
    await queue.close()
    for caller in (running, queued):
        with pytest.raises(asyncio.CancelledError):
            await caller


async def overloaded_replicas(order: FairOrder | None, seed: int) -> list[int]:
    """Closed loop, as sessions behave under overload: 12 sessions, each with one
    frame waiting at a time, sending its next after a random delay (its share of the
    ingress's work); each frame goes to one of two replicas at random (Serve's router),
    one replica slower than the other. Returns each session's answers once 600 are in."""
    loop = asyncio.get_running_loop()
    draws, routes = np.random.default_rng(seed), random.Random(seed)
    delays = draws.exponential(0.003, size=(12, 2000))

    def replica(seconds: float):
        async def model(items: list[int]) -> list[int]:
            await asyncio.sleep(seconds)
            return items

        return FairBatchQueue(model, max_batch_size=2, wait_s=0.0)

    replicas = [replica(0.004), replica(0.007)]
    answers = [0] * 12
    if order is not None:
        order._clock = loop.time  # the simulation's clock
        for i in range(12):
            order.add(str(i))

    async def session(i: int) -> None:
        for n in range(2000):
            if sum(answers) >= 600:
                return
            key = order.key(str(i)) if order is not None else 0.0
            await routes.choice(replicas).submit(i, priority=key)
            answers[i] += 1
            if order is not None:
                order.answered(str(i))
            await asyncio.sleep(delays[i, n])

    await asyncio.wait_for(asyncio.gather(*(session(i) for i in range(12))), 60)
    for queue in replicas:
        await queue.close()
    return answers


async def test_under_overload_fair_keys_even_out_what_first_in_first_out_leaves_uneven():
    """The case run H measured (two detector replicas, 0.70-0.76): first in, first out
    leaves the sessions' shares as the draws fell; `FairOrder` keys bring the slowest
    within a few answers of the fastest."""
    fifo, fair = [], []
    for seed in (1, 2):
        counts = await overloaded_replicas(None, seed)
        fifo.append(min(counts) / max(counts))
        counts = await overloaded_replicas(FairOrder(), seed)
        fair.append(min(counts) / max(counts))
    assert min(fair) >= 0.85, (fair, fifo)
    assert sum(fair) > sum(fifo) + 0.1, (fair, fifo)


def test_fair_order_keys_follow_a_virtual_clock_with_bounded_credit():
    now = [1000.0]
    order = FairOrder(clock=lambda: now[0])
    for name in ("a", "b"):
        order.add(name)
    # No cycle known yet: keys are the real clock.
    assert order.key("a") == 1000.0 and order.fair_cycle() == 0.0
    # Both answered every second: the fair cycle is 1 s.
    for _ in range(3):
        now[0] += 1.0
        order.answered("a")
        order.answered("b")
    assert order.fair_cycle() == pytest.approx(1.0)
    # A session that keeps pace stays near the real clock; each frame adds one cycle.
    first = order.key("a")
    assert order.key("a") == pytest.approx(first + 1.0)
    # For a minute "a" sends a frame and is answered every second; "b" sends nothing.
    for _ in range(60):
        now[0] += 1.0
        order.answered("a")
        latest_a = order.key("a")
    # "b" is behind, so its next frame goes before a's latest, but it holds no more
    # than GRACE_CYCLES of credit however long it was idle.
    key_b = order.key("b")
    assert key_b == pytest.approx(now[0] - GRACE_CYCLES * 1.0)
    assert key_b < latest_a
    # Unknown sessions get the real clock; forgotten ones leave the mean.
    assert order.key("stranger") == now[0]
    order.forget("a")
    order.forget("b")
    assert len(order) == 0 and order.fair_cycle() == 0.0


def test_current_stream_is_none_outside_a_stream_fn():
    assert current_stream() is None


async def test_the_replica_sends_a_frame_by_frame_backend_one_frame_per_pass():
    """Haar runs frames one by one: the replica hands it one frame at a time whatever
    `max_batch_size` says (a batch would only delay the first answers), while a
    batched model's frames still share passes. The Detector class, in-process."""
    from deployments.detector import Detector
    from deployments.models import ModelSpec, build_preprocessor
    from tests.support.images import photo

    cls = Detector.func_or_class
    for spec, per_pass in (
        (ModelSpec(kind="haar"), 1),
        (ModelSpec(kind="callable", callable="tests.support.cluster:faces_batch", batched=True), 4),
    ):
        detector = cls(spec)
        await detector.reconfigure({"max_batch_size": 4, "batch_wait_timeout_s": 0.05})
        assert detector.stats()["frames_per_pass"] == per_pass
        item = build_preprocessor(spec)(photo("astronaut"))
        answers = await asyncio.gather(*(detector.detect(item) for _ in range(4)))
        assert all(any(d.label == "face" for d in a) for a in answers), answers
        assert detector.stats()["batch_sizes"] == {per_pass: 4 // per_pass}
