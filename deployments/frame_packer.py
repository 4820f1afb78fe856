"""Several sessions' frames in one detector call.

Why: a Serve handle call costs about 2.5 ms of CPU in the caller and 2 ms in the
detector replica whatever it carries (measured here with an 8x8 array; a 352x352x3
input adds ~1 ms, `bench/` and issue 10's note). At 100 frames/s that is close to half
of a 2-core machine spent on calls. Frames of different sessions become ready
together (every session whose frame shared a batch gets its answer at once and sends
its next frame), so gathering them for a few milliseconds and sending one call turns N
calls into one, and hands the detector's batch queue N frames at once.

The packer only groups and forwards: the detector still batches frames across packs
(`Detector.detect_pack` feeds each frame into its `@serve.batch` queue), and each
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

    A pack is sent when it holds `max_frames` items or `wait_s` after its first item,
    whichever comes first; `wait_s=0` sends every item alone (no packing). When every
    item of a pack in flight has been abandoned (its caller timed out or went away),
    the call is cancelled."""

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
            self._timer = loop.call_later(self._wait_s, self._flush)
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
        task.add_done_callback(self._in_flight.discard)

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
