"""mode="receive": the page only watches, so the stream fn makes the picture.

With no camera to feed it, the fn is called on a clock, every `stream_every` seconds
(at most 60 times a second), with None where the camera frame would be, and returns
the next BGR image to send (None: nothing new). A generator fn (sync or async, the
reference's shape for a video source) is advanced one item per tick instead; when it
is exhausted the session ends. Each image is sent once, as soon as it is made.
"""

from __future__ import annotations

import asyncio
import fractions
import inspect
import time
from concurrent.futures import Executor
from typing import Any, Callable, Optional, Sequence

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from component.tracks import Closed, Latest, image_frame

MIN_INTERVAL_S = 1 / 60
CLOCK = fractions.Fraction(1, 90000)


class Exhausted(Exception):
    """A generator fn has no more images: the stream is over."""


class SourceTrack(MediaStreamTrack):
    """Sends each new image of `images` once (paced by the source's clock)."""

    kind = "video"

    def __init__(self, images: Latest[VideoFrame], on_frame: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self._images = images
        self._on_frame = on_frame
        self._sent = 0

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            self._sent, frame = await self._images.newer_than(self._sent)
        except Closed:
            self.stop()
            raise MediaStreamError from None
        self._on_frame()
        return frame


class FrameSource:
    """Calls `fn(*inputs)` (None at `frame_index`) on a clock and publishes its images."""

    def __init__(
        self,
        fn: Callable[..., Any],
        stream_every: float,
        frame_index: int,
        inputs: Callable[[], Sequence[Any]],
        images: Latest[VideoFrame],
        executor: Executor,
        on_error: Callable[[Exception], None],
    ) -> None:
        self._fn = fn
        self._interval = max(stream_every, MIN_INTERVAL_S)
        self._frame_index = frame_index
        self._inputs = inputs
        self._images = images
        self._executor = executor
        self._on_error = on_error
        self._generator: Any = None
        self._start = time.monotonic()

    async def run(self) -> None:
        """Until cancelled, or until a generator fn is exhausted (raises `Exhausted`)."""
        loop = asyncio.get_running_loop()
        next_start = loop.time()
        while True:
            delay = next_start - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            next_start = max(next_start + self._interval, loop.time())
            try:
                image = await self._next_image()
                if image is not None:
                    self._images.put(await loop.run_in_executor(self._executor, self._frame, image))
            except (asyncio.CancelledError, Exhausted):
                raise
            except Exception as exc:  # a failing tick costs one picture, not the session
                self._on_error(exc)

    async def _next_image(self) -> Optional[np.ndarray]:
        loop = asyncio.get_running_loop()
        if self._generator is None:
            extras = tuple(self._inputs())
            args = (*extras[: self._frame_index], None, *extras[self._frame_index :])
            if inspect.isasyncgenfunction(self._fn) or inspect.isgeneratorfunction(self._fn):
                self._generator = self._fn(*args)
            elif inspect.iscoroutinefunction(self._fn):
                return await self._fn(*args)
            else:
                return await loop.run_in_executor(None, lambda: self._fn(*args))
        if inspect.isasyncgen(self._generator):
            try:
                return await self._generator.__anext__()
            except StopAsyncIteration:
                raise Exhausted from None
        item = await loop.run_in_executor(None, next, self._generator, _DONE)
        if item is _DONE:
            raise Exhausted
        return item

    def _frame(self, image: Any) -> VideoFrame:
        if not isinstance(image, np.ndarray):
            raise TypeError(f"mode='receive' stream fn returned {type(image).__name__}; expected a HxWx3 uint8 BGR image or None")
        return image_frame(image, _Timing(int((time.monotonic() - self._start) / CLOCK)))


_DONE = object()


class _Timing:
    """Presentation time for a made-up frame: seconds since the source started."""

    time_base = CLOCK

    def __init__(self, pts: int) -> None:
        self.pts = pts
