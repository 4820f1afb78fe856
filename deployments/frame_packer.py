"""Several sessions' frames in one detector call.

Why: a Serve handle call costs about 2.5 ms of CPU in the caller and 2 ms in the
detector replica whatever it carries (measured here with an 8x8 array; a 352x352x3
input adds ~1 ms, `bench/` and issue 10's note). At 100 frames/s that is close to half
of a 2-core machine spent on calls. Frames of different sessions become ready
together (every session whose frame shared a batch gets its answer at once and sends
its next frame), so gathering them for a few milliseconds and sending one call turns N
calls into one, and hands the detector's batch queue N frames at once.

When to send (the rule of Nagle's algorithm for small TCP segments): a frame that
finds no pack of this packer in flight leaves at once (at the end of the current loop
step, so frames submitted together still share a call), since the detector may be
idle and waiting would only add latency; a lone session never waits. Frames that come
while a pack is in flight are held: the detector is busy with that pack, so they
would queue there anyway. They leave together when the pack in flight is answered,
when `max_frames` are held, or `wait_s` after the first of them, whichever is first.
Measured here (16 FastestDet sessions, browser render, one detector replica, back to
back): a fixed 4 ms gathering window made packs of 2.2-2.3 frames, batches of 3.2-3.5
and 74-78 detections/s; this rule with `wait_s` 12 ms made packs and batches of 5.0-7.6
and 109-116 detections/s, and the forward passes' share of the replica's CPU rose from
72-73 % to 84-87 % (fewer calls, each with its fixed cost).

Only for models that run a batch in one pass (`ModelSpec.one_pass_per_batch`; the app
gives frame-by-frame models `max_frames=1`): a pack's answers come back together, so on
a frame-by-frame model every frame in it would wait for the last. The sessions that
shared a pack would then resubmit together and keep sharing their fate. With 16 Haar
sessions on two replicas under overload, slowest/fastest detections ranged 0.57-0.91
with packs and 0.89-0.94 without.

The packer only groups and forwards: the detector still batches frames across packs
(`Detector.detect_pack` feeds each frame into its batch queue, `deployments.fair_batch`), and each
frame keeps its own answer, error and timeout. It runs on one event loop and needs no
lock.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Generic, Protocol, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class PackCall(Protocol[R]):
    """What a pack call returns: awaitable, and cancellable once nobody waits on it
    (a Serve `DeploymentResponse` or an asyncio `Task`)."""

    def __await__(self) -> Any: ...

    def cancel(self) -> Any: ...


class FramePacker(Generic[T, R]):
    """`await packer.submit(item)` -> its result from `call([...items])`.

    With no pack in flight, items leave at the end of the loop step they came in;
    while one is, they are held until it is answered, `max_frames` are held, or
    `wait_s` after the first, whichever comes first; `wait_s=0` sends every item
    alone (no packing). When every item of a pack in flight has been abandoned (its
    caller timed out or went away), the call is cancelled."""

    def __init__(self, call: Callable[[list[T]], PackCall[Sequence[R]]], max_frames: int, wait_s: float) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0, got {wait_s}")
        self._call = call
        self._max_frames = max_frames
        self._wait_s = wait_s
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self.packs_sent = 0
        self.frames_sent = 0

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max_frames or self._wait_s == 0:
            self._flush()
        elif self._timer is None:
            # Idle: this loop step's other frames may still join, then it leaves.
            delay = self._wait_s if self._in_flight else 0.0
            self._timer = loop.call_later(delay, self._flush)
        return await future

    @property
    def mean_pack(self) -> float:
        return self.frames_sent / self.packs_sent if self.packs_sent else 0.0

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pack, self._pending = self._pending, []
        # Items whose caller already gave up are not sent.
        pack = [(item, future) for item, future in pack if not future.done()]
        if not pack:
            return
        self.packs_sent += 1
        self.frames_sent += len(pack)
        task = asyncio.get_running_loop().create_task(self._send(pack))
        self._in_flight.add(task)
        task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[None]) -> None:
        """A pack is done: what was held for it leaves now, unless another pack is
        still in flight (then its own timer or that pack's answer sends it)."""
        self._in_flight.discard(task)
        if self._pending and not self._in_flight:
            self._flush()

    async def _send(self, pack: list[tuple[T, asyncio.Future[R]]]) -> None:
        futures = [future for _, future in pack]
        try:
            response = self._call([item for item, _ in pack])
        except Exception as exc:  # the call could not even be made
            _fail(futures, exc)
            return
        remaining = len(futures)

        def abandoned(future: asyncio.Future[R]) -> None:
            nonlocal remaining
            if future.cancelled():
                remaining -= 1
                if remaining == 0:
                    response.cancel()

        for future in futures:
            future.add_done_callback(abandoned)
        try:
            results = await response
        except asyncio.CancelledError:
            _fail(futures, None)
            raise
        except Exception as exc:
            _fail(futures, exc)
            return
        if len(results) != len(futures):
            _fail(futures, RuntimeError(f"pack of {len(futures)} frames answered with {len(results)} results"))
            return
        for future, result in zip(futures, results):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        """Cancel what is pending and in flight (replica shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        _fail([future for _, future in self._pending], None)
        self._pending = []
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)


def _fail(futures: list[asyncio.Future[Any]], exc: BaseException | None) -> None:
    """Each waiting caller gets `exc`, or is cancelled when `exc` is None."""
    for future in futures:
        if future.done():
            continue
        if exc is None:
            future.cancel()
        else:
            future.set_exception(exc)
