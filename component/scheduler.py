"""Feeding one session's frames to its stream fn.

Rules (they are what keeps many sessions fast together):
- the newest camera frame wins: frames that arrive while the fn is busy are skipped;
- at most one frame of a session is inside the fn at a time;
- no call starts sooner than `stream_every` seconds after the previous one started.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional, Protocol, Sequence, Union

import numpy as np
from av import VideoFrame

from component.box_hold import BoxHold
from component.detections import Detections
from component.fair_order import FairOrder
from component.metrics import StreamMetrics
from component.stream_context import StreamContext, enter_stream
from component.throttled_log import ThrottledLog
from component.tracks import CameraFrame, Closed, Latest, image_frame

log = logging.getLogger("rayrtc.scheduler")

StreamResult = Union[Detections, np.ndarray, None]
StreamFn = Callable[..., Union[StreamResult, Awaitable[StreamResult]]]


@dataclass
class StreamStats:
    """Per-session counters, read by the stats endpoint and tests."""

    calls: int = 0
    errors: int = 0
    skipped: int = 0
    last_error: str | None = None
    last_latency_s: float = 0.0


class FrameInput(Protocol):
    """What a fn takes instead of the full BGR frame (e.g. a model's preprocessor):
    the size and pixel format it wants, made by one scaled conversion straight from
    the decoded frame, then finished by `from_scaled` on the same worker thread."""

    def input_request(self, width: int, height: int) -> tuple[int, int, str]:
        """(width, height, PyAV pixel format, e.g. "gray" or "bgr24") for a frame of this size."""
        ...

    def from_scaled(self, image: np.ndarray, frame_size: tuple[int, int]) -> Any:
        """The fn's frame argument, from the scaled image and the original (width, height)."""
        ...


@dataclass(frozen=True)
class ScaledInputFn:
    """A stream fn that receives `frame_input.from_scaled(...)` where others get the
    full BGR frame: `webrtc_stream(ScaledInputFn(detect, preprocessor), ...)`."""

    fn: StreamFn
    frame_input: FrameInput

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


def _frame_arg(camera: CameraFrame, frame_input: Optional[FrameInput]) -> Any:
    """The fn's frame argument. A full-frame fn gets its own BGR pixels (it may draw
    on them, as the reference demo does), converted once per processed frame."""
    if frame_input is None:
        return camera.bgr()
    w, h = camera.size
    return frame_input.from_scaled(camera.scaled(*frame_input.input_request(w, h)), (w, h))


class FrameScheduler:
    """Runs `fn(frame_bgr, *inputs)` for one session and publishes what it returns."""

    def __init__(
        self,
        session_id: str,
        fn: StreamFn,
        stream_every: float,
        frame_index: int,
        camera: Latest[CameraFrame],
        detections: Latest[Detections],
        images: Latest[VideoFrame],
        inputs: Callable[[], Sequence[Any]],
        executor: Executor,
        metrics: StreamMetrics,
        on_result: Optional[Callable[[Any, float], None]] = None,
        fair_order: Optional[FairOrder] = None,
    ) -> None:
        """`on_result`, when given, takes every result instead of the detections and
        images slots (`render="browser"`: nothing is drawn here), with the monotonic
        time its camera frame arrived. `fair_order`: the server's, so the fn can ask
        for this session's queue key (`current_stream().queue_key`)."""
        self.session_id = session_id
        self._frame_input: Optional[FrameInput] = None
        if isinstance(fn, ScaledInputFn):
            fn, self._frame_input = fn.fn, fn.frame_input
        self._fn = fn
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)
        )
        self._stream_every = stream_every
        self._frame_index = frame_index
        self._camera = camera
        self._detections = detections
        self._images = images
        self._inputs = inputs
        self._executor = executor
        self._metrics = metrics
        self._on_result = on_result
        self._hold = BoxHold()
        self.stats = StreamStats()
        # What the fn can read through `current_stream()`.
        self.context = StreamContext(session_id, fair_order)
        # A fn that fails once usually fails on every frame: one traceback, then counts.
        self._errors_log = ThrottledLog(log, f"session {session_id}: stream fn failed")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        enter_stream(self.context)  # this task is the session's: its calls see it
        self.context.start()
        seen = 0
        next_start = 0.0
        try:
            while True:
                delay = next_start - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                newest, frame = await self._camera.newer_than(seen)
                if newest - seen > 1:
                    # Frames that arrived while the fn was busy never reach it: by design.
                    self.stats.skipped += newest - seen - 1
                    self._metrics.frames_dropped(newest - seen - 1)
                seen = newest
                arrived_at = self._camera.updated_at
                next_start = loop.time() + self._stream_every
                await self._call(frame, arrived_at)
        except Closed:
            return
        finally:
            self.context.stop()

    async def _call(self, camera: CameraFrame, arrived_at: float) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        self.context.call()
        ok = False
        try:
            extras = tuple(self._inputs())
            if self._is_async:
                # One hop for the pixels; the fn itself runs on the loop.
                frame_arg = await loop.run_in_executor(
                    self._executor, _frame_arg, camera, self._frame_input
                )
                result = await self._fn(*self._args(extras, frame_arg))
                if isinstance(result, np.ndarray) and self._on_result is None:
                    result = await loop.run_in_executor(self._executor, image_frame, result, camera)
            else:
                # A sync fn (e.g. a local model in a plain Gradio app) must not stall the
                # loop that carries every session's media: conversion, fn and the
                # returned image's frame all happen in one hop.
                context_run = contextvars.copy_context().run
                result = await loop.run_in_executor(
                    None, functools.partial(context_run, self._call_sync, camera, extras)
                )
            if self._on_result is not None:
                self._on_result(result, arrived_at)
            else:
                self._publish(result)
            ok = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the session survives a failing frame
            self.record_error(exc)
        finally:
            self.stats.calls += 1
            self.context.answered()
            self.stats.last_latency_s = time.perf_counter() - started
            self._metrics.fn_call(self.stats.last_latency_s, ok)

    def _args(self, extras: tuple[Any, ...], frame_arg: Any) -> tuple[Any, ...]:
        i = self._frame_index
        return (*extras[:i], frame_arg, *extras[i:])

    def _call_sync(self, camera: CameraFrame, extras: tuple[Any, ...]) -> Any:
        result = self._fn(*self._args(extras, _frame_arg(camera, self._frame_input)))
        # An image becomes the outgoing frame here, in the same hop; in browser render
        # it goes to `on_result` as is (which refuses it).
        if isinstance(result, np.ndarray) and self._on_result is None:
            return image_frame(result, camera)
        return result

    def _publish(self, result: Any) -> None:
        if result is None:
            return
        if isinstance(result, Detections):
            if self._hold.ignore_empty(bool(result), time.monotonic()) and self._detections.value:
                return  # a single miss: see `component.box_hold`
            self._detections.put(result)
        elif isinstance(result, VideoFrame):
            self._images.put(result)
        else:
            raise TypeError(
                f"stream fn returned {type(result).__name__}; expected Detections, "
                "a HxWx3 uint8 BGR image or None"
            )

    def record_error(self, exc: Exception) -> None:
        """Count and log a failed call (the first in full, then a count every 10 s);
        also used by the picture source of mode="receive", which shares these stats."""
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        self._errors_log.failure(exc)
