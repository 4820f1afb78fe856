"""`FramePacker` groups frames into one call and gives each caller its own answer,
error or timeout. Pure asyncio: the call is a coroutine standing in for the detector
handle (the real handle path is covered by test_batching and the e2e tests)."""

from __future__ import annotations

import asyncio

import pytest

from deployments.frame_packer import FramePacker


class Recorder:
    """A pack call: records each pack, answers item * 10 after `delay` (or raises)."""

    def __init__(self, delay: float = 0.0, fail: Exception | None = None, short: bool = False) -> None:
        self.packs: list[list[int]] = []
        self.cancelled = asyncio.Event()
        self.delay, self.fail, self.short = delay, fail, short

    def __call__(self, items: list[int]) -> asyncio.Task:
        self.packs.append(list(items))
        return asyncio.ensure_future(self._answer(items))

    async def _answer(self, items: list[int]) -> list[int]:
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        if self.fail is not None:
            raise self.fail
        answers = [item * 10 for item in items]
        return answers[:-1] if self.short else answers


async def test_frames_submitted_together_go_in_one_call_and_get_their_own_answers():
    call = Recorder()
    packer = FramePacker(call, max_frames=8, wait_s=0.05)
    results = await asyncio.gather(*(packer.submit(i) for i in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert call.packs == [[0, 1, 2, 3, 4]]
    assert packer.mean_pack == 5


async def test_a_full_pack_leaves_at_once_and_the_rest_starts_the_next():
    call = Recorder()
    packer = FramePacker(call, max_frames=3, wait_s=10.0)  # the timer must not be needed
    first = await asyncio.wait_for(asyncio.gather(*(packer.submit(i) for i in range(3))), 1.0)
    assert first == [0, 10, 20] and call.packs == [[0, 1, 2]]
    # A lone frame with nothing in flight leaves at once, whatever the window.
    packer = FramePacker(call, max_frames=3, wait_s=10.0)
    assert await asyncio.wait_for(packer.submit(7), 1.0) == 70
    assert call.packs[-1] == [7]


async def test_with_nothing_in_flight_a_frame_leaves_without_waiting():
    """A lone session never pays the gathering window: the detector may be idle."""
    call = Recorder()
    packer = FramePacker(call, max_frames=8, wait_s=30.0)
    for i in range(3):
        assert await asyncio.wait_for(packer.submit(i), 1.0) == 10 * i
    assert call.packs == [[0], [1], [2]]


async def test_frames_that_come_while_a_pack_is_in_flight_leave_together_when_it_is_answered():
    call = Recorder(delay=0.1)
    packer = FramePacker(call, max_frames=8, wait_s=30.0)  # only the answer can send them
    first = asyncio.ensure_future(packer.submit(0))
    await asyncio.wait_for(_until(lambda: len(call.packs) == 1), 1.0)
    held = []
    for i in (1, 2, 3):
        held.append(asyncio.ensure_future(packer.submit(i)))
        await asyncio.sleep(0.01)  # separate loop steps: no same-step grouping
    assert len(call.packs) == 1, "frames were sent while a pack was in flight"
    assert await asyncio.wait_for(asyncio.gather(first, *held), 1.0) == [0, 10, 20, 30]
    assert call.packs == [[0], [1, 2, 3]]


async def test_held_frames_leave_after_wait_s_even_if_the_pack_in_flight_is_slow():
    call = Recorder(delay=2.0)
    packer = FramePacker(call, max_frames=8, wait_s=0.05)
    slow = asyncio.ensure_future(packer.submit(0))
    await asyncio.wait_for(_until(lambda: len(call.packs) == 1), 1.0)
    asyncio.ensure_future(packer.submit(1))
    await asyncio.wait_for(_until(lambda: len(call.packs) == 2), 1.0)  # well before 2 s
    assert call.packs == [[0], [1]] and not slow.done()
    await packer.close()


async def _until(condition, step: float = 0.005) -> None:
    while not condition():
        await asyncio.sleep(step)


async def test_wait_zero_sends_every_frame_alone():
    call = Recorder()
    packer = FramePacker(call, max_frames=8, wait_s=0.0)
    assert await asyncio.gather(*(packer.submit(i) for i in range(3))) == [0, 10, 20]
    assert call.packs == [[0], [1], [2]]


async def test_a_caller_that_gives_up_does_not_disturb_the_others():
    call = Recorder(delay=0.2)
    packer = FramePacker(call, max_frames=8, wait_s=0.01)
    impatient = asyncio.ensure_future(asyncio.wait_for(packer.submit(1), 0.05))
    patient = asyncio.ensure_future(packer.submit(2))
    with pytest.raises(asyncio.TimeoutError):
        await impatient
    assert await patient == 20
    assert sorted(call.packs[0]) == [1, 2] and len(call.packs) == 1 and not call.cancelled.is_set()


async def test_a_pack_everyone_gave_up_on_is_cancelled():
    call = Recorder(delay=5.0)
    packer = FramePacker(call, max_frames=8, wait_s=0.01)
    waits = [asyncio.ensure_future(asyncio.wait_for(packer.submit(i), 0.1)) for i in range(3)]
    for w in waits:
        with pytest.raises(asyncio.TimeoutError):
            await w
    await asyncio.wait_for(call.cancelled.wait(), 1.0)


async def test_a_frame_given_up_before_its_pack_leaves_is_not_sent():
    call = Recorder()
    packer = FramePacker(call, max_frames=8, wait_s=0.2)
    gone = asyncio.ensure_future(packer.submit(1))
    await asyncio.sleep(0)  # let it enter the pack
    gone.cancel()
    assert await packer.submit(2) == 20
    assert call.packs == [[2]]


async def test_a_failed_call_fails_every_frame_in_it_with_its_error():
    call = Recorder(fail=ConnectionError("replica died"))
    packer = FramePacker(call, max_frames=8, wait_s=0.01)
    results = await asyncio.gather(*(packer.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) and "replica died" in str(r) for r in results)


async def test_a_call_that_answers_the_wrong_count_fails_its_frames():
    packer = FramePacker(Recorder(short=True), max_frames=8, wait_s=0.01)
    results = await asyncio.gather(*(packer.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "3 frames answered with 2" in str(r) for r in results)


async def test_close_cancels_pending_and_in_flight_frames():
    call = Recorder(delay=5.0)
    packer = FramePacker(call, max_frames=2, wait_s=5.0)
    in_flight = [asyncio.ensure_future(packer.submit(i)) for i in range(2)]  # full: sent
    pending = asyncio.ensure_future(packer.submit(9))  # waits for its timer
    await asyncio.sleep(0.01)
    await asyncio.wait_for(packer.close(), 1.0)
    for task in in_flight + [pending]:
        with pytest.raises(asyncio.CancelledError):
            await task
    assert call.cancelled.is_set()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_frames"):
        FramePacker(Recorder(), max_frames=0, wait_s=0.01)
    with pytest.raises(ValueError, match="wait_s"):
        FramePacker(Recorder(), max_frames=1, wait_s=-1)
