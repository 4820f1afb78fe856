"""Media in and out of one session, at the camera's pace.

`Latest` keeps only the newest decoded camera frame: a slow consumer skips frames
instead of queueing them, so lag can never build up. `OutgoingTrack` sends one frame
per new camera frame: the camera frame with the latest detections drawn into its
yuv420p planes (and encoded in the same worker-thread hop), or, when the stream fn
returns images, the newest image it returned.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Executor
from typing import Callable, Generic, Optional, TypeVar, Union

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from component.annotate import draw_detections_yuv
from component.detections import Detections
from component.encoding import Encoded, OutgoingEncoder
from component.throttled_log import ThrottledLog
from component.yuv import copy_yuv420p, planes

log = logging.getLogger("rayrtc.tracks")

T = TypeVar("T")


class CameraFrame:
    """A decoded camera frame, and every view of it the session needs.

    The scheduler (to feed the fn) and the outgoing track (to draw on it) both read
    the same frame from worker threads. PyAV deadlocks when one frame is converted
    from two threads at once: so one lock per frame guards every access to it, and
    each view is a new array or frame that its consumer owns.
    """

    __slots__ = ("frame", "size", "pts", "time_base", "_lock")

    def __init__(self, frame: VideoFrame) -> None:
        self.frame = frame
        # Read here, on the loop, once: worker threads never touch the frame unlocked.
        self.size = (frame.width, frame.height)
        self.pts, self.time_base = frame.pts, frame.time_base
        self._lock = threading.Lock()

    def bgr(self) -> np.ndarray:
        """The whole frame as a new HxWx3 uint8 BGR array (only for a fn that asks for
        an image; the caller owns it and may draw on it)."""
        with self._lock:
            return self.frame.to_ndarray(format="bgr24")

    def scaled(self, width: int, height: int, pix_fmt: str) -> np.ndarray:
        """One scaled conversion straight from the decoded frame (e.g. 320x240 "gray"
        for Haar): no full-size intermediate image."""
        with self._lock:
            small = self.frame.reformat(width=width, height=height, format=pix_fmt, interpolation="AREA")
        return small.to_ndarray()

    def outgoing(self, detections: Optional[Detections]) -> VideoFrame:
        """The frame to send: a plane copy (the encoder's own frame) with `detections`
        drawn into its Y, U and V planes; no colour conversion for yuv420p input."""
        with self._lock:
            out = copy_yuv420p(self.frame)
        if detections:
            draw_detections_yuv(planes(out), out.width, out.height, detections)
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


def _render(
    camera: CameraFrame, detections: Optional[Detections], encoder: Optional[OutgoingEncoder], keyframe: bool
) -> Union[VideoFrame, Encoded]:
    """Draw, and encode when the track drives the sender's encoder: one hop."""
    frame = camera.outgoing(detections)
    return encoder.encode(frame, keyframe) if encoder is not None else frame


def image_frame(image: np.ndarray, like: CameraFrame) -> VideoFrame:
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._on_frame = on_frame
        # A draw or encode that fails once tends to fail on every frame: one report,
        # then a count every 10 s (`clock` is for tests).
        self.render_errors = ThrottledLog(log, "outgoing frame dropped: drawing or encoding failed", clock=clock)
        self._camera = camera
        self._detections = detections
        self._images = images
        self._executor = executor
        self._sent_camera = 0
        self._sent_image = 0
        # Frames handed to the sender (the session's server-render upload cap reads it).
        self.sent = 0
        self._encoder: Optional[OutgoingEncoder] = None

    def use_encoder(self, encoder: Optional[OutgoingEncoder]) -> None:
        """Encode camera frames here, in the drawing hop, with the sender's encoder
        (see `component.encoding`); None: hand frames to the sender to encode."""
        self._encoder = encoder

    def stop(self) -> None:
        # Drop the encoder (and its codec context) with the track, not at the next GC.
        self._encoder = None
        super().stop()

    async def recv(self) -> Union[VideoFrame, Encoded]:
        """The next frame to send. A frame that cannot be drawn is skipped (logged,
        rate-limited): an exception escaping here would stop aiortc's sender for good,
        silently."""
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        while True:
            try:
                if self._images.seq > 0:
                    # The fn returns images: send each new one once.
                    self._sent_image, frame = await self._images.newer_than(self._sent_image)
                    self._on_frame()
                    self.sent += 1
                    return frame
                self._sent_camera, camera = await self._camera.newer_than(self._sent_camera)
            except Closed:
                self.stop()
                raise MediaStreamError from None
            encoder = self._encoder
            keyframe = encoder.keyframe_due() if encoder is not None else False
            try:
                out = await loop.run_in_executor(
                    self._executor, _render, camera, self._detections.value, encoder, keyframe
                )
            except Exception as exc:
                self.render_errors.failure(exc)
                if keyframe and encoder is not None:
                    encoder.keyframe_again()
                continue
            self._on_frame()
            self.sent += 1
            return out
