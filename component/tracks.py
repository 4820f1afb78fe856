"""Media in and out of one session, at the camera's pace.

`LatestFrame` keeps only the newest decoded camera frame: a slow consumer skips
frames instead of queueing them, so lag can never build up. `OutgoingTrack` sends
one frame per new camera frame: the camera frame with the latest detections drawn on
it, or, when the stream fn returns images, the newest image it returned.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Executor
from typing import Callable, Generic, Optional, TypeVar

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from component.annotate import draw_detections
from component.detections import Detections

log = logging.getLogger("rayrtc.tracks")

T = TypeVar("T")


class CameraFrame:
    """A decoded camera frame whose BGR pixels are computed once, on first use.

    The scheduler (to feed the fn) and the outgoing track (to draw on it) both need
    the pixels of the same frame, from worker threads. PyAV deadlocks when one frame
    is converted from two threads at once, and converting twice is waste: so one
    lock per frame, one conversion, and consumers that need to write take a copy.
    """

    __slots__ = ("frame", "_bgr", "_lock")

    def __init__(self, frame: VideoFrame) -> None:
        self.frame = frame
        self._bgr: Optional[np.ndarray] = None
        self._lock = threading.Lock()

    def bgr(self) -> np.ndarray:
        """The frame as HxWx3 uint8 BGR; read-only, shared: copy before writing."""
        with self._lock:
            return self._bgr_locked()

    def _bgr_locked(self) -> np.ndarray:
        if self._bgr is None:
            self._bgr = self.frame.to_ndarray(format="bgr24")
            self._bgr.flags.writeable = False
        return self._bgr

    def passthrough(self) -> VideoFrame:
        """A new frame with the same pixels, for the encoder: the decoded frame itself
        is never handed to another thread while ours may still convert it."""
        frame = self.frame
        with self._lock:
            if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
                # A plane copy: no colour conversion.
                out = VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")
            else:  # odd sizes (PyAV refuses yuv420p arrays for them) and other formats
                out = VideoFrame.from_ndarray(self._bgr_locked(), format="bgr24")
        out.pts, out.time_base = self.frame.pts, self.frame.time_base
        return out


class Closed(Exception):
    """The source behind a `Latest` has ended."""


class Latest(Generic[T]):
    """A single slot holding the newest value and a sequence number.

    Writers never wait and never queue; readers wait for a value newer than the one
    they last saw. That is the whole backpressure story for media.
    """

    def __init__(self) -> None:
        self._seq = 0
        self._value: Optional[T] = None
        # When the newest value was put (time.monotonic()): a camera frame's arrival.
        self.updated_at = 0.0
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def value(self) -> Optional[T]:
        return self._value

    def put(self, value: T) -> None:
        self._seq += 1
        self._value = value
        self.updated_at = time.monotonic()
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def newer_than(self, seq: int) -> tuple[int, T]:
        while self._seq <= seq:
            if self._closed:
                raise Closed()
            await self._changed.wait()
        assert self._value is not None
        return self._seq, self._value


async def pump_latest(
    track: MediaStreamTrack, slot: Latest[CameraFrame], on_frame: Callable[[], None] = lambda: None
) -> None:
    """Read the browser's track as fast as it decodes, keeping only the newest frame."""
    try:
        while True:
            slot.put(CameraFrame(await track.recv()))
            on_frame()
    except MediaStreamError:
        pass
    finally:
        slot.close()


def _annotate(camera: CameraFrame, detections: Optional[Detections]) -> VideoFrame:
    if not detections:
        return camera.passthrough()
    image = camera.bgr().copy()
    draw_detections(image, detections)
    out = VideoFrame.from_ndarray(image, format="bgr24")
    out.pts, out.time_base = camera.frame.pts, camera.frame.time_base
    return out


def image_frame(image: np.ndarray, like: VideoFrame) -> VideoFrame:
    """Wrap a fn's BGR image as a frame timed like the camera frame it came from."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise TypeError(f"stream fn must return a HxWx3 uint8 BGR image, got {image.dtype} {image.shape}")
    out = VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
    out.pts, out.time_base = like.pts, like.time_base
    return out


class OutgoingTrack(MediaStreamTrack):
    """The annotated video a session sends back.

    Paced by the camera: `recv` waits for a camera frame newer than the last one it
    sent. Drawing runs on `executor` so the media event loop never does pixel work.
    """

    kind = "video"

    def __init__(
        self,
        camera: Latest[CameraFrame],
        detections: Latest[Detections],
        images: Latest[VideoFrame],
        executor: Executor,
        on_frame: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__()
        self._on_frame = on_frame
        self._camera = camera
        self._detections = detections
        self._images = images
        self._executor = executor
        self._sent_camera = 0
        self._sent_image = 0

    async def recv(self) -> VideoFrame:
        """The next frame to send. A frame that cannot be drawn is skipped (logged):
        an exception escaping here would stop aiortc's sender for good, silently."""
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        while True:
            try:
                if self._images.seq > 0:
                    # The fn returns images: send each new one once.
                    self._sent_image, frame = await self._images.newer_than(self._sent_image)
                    self._on_frame()
                    return frame
                self._sent_camera, camera = await self._camera.newer_than(self._sent_camera)
            except Closed:
                self.stop()
                raise MediaStreamError from None
            try:
                out = await loop.run_in_executor(
                    self._executor, _annotate, camera, self._detections.value
                )
            except Exception:
                log.exception("outgoing frame dropped: drawing failed")
                continue
            self._on_frame()
            return out
