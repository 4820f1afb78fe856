"""`render="browser"`: detections go to the page on the session's data channel, and
the page draws them over its own camera picture. The server encodes no video.

One message per processed frame, exactly (other tools and the benchmarks read it):

    {"type": "detections", "seq": <int, increasing per session>,
     "age_ms": <float, from the frame's arrival at the server to this message>,
     "items": [{"box": [x1, y1, x2, y2], "label": <str>, "score": <float>}]}

Boxes are fractions (0..1) of the camera frame, origin top-left, in the camera's own
orientation (never mirrored). A gap in `seq` is a message skipped under backpressure.
The session also sends `upload_cap` messages on the same channel (`component.upload_rate`).
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import re
import time
import types
import typing
from typing import Any, Callable, Optional

import numpy as np
from aiortc import RTCDataChannel

from component.detections import Detections

# Above this many bytes waiting on the channel a message is skipped, not queued: a
# stalled page must not make the server hold an ever-growing backlog of stale boxes.
MAX_BUFFERED_BYTES = 64 * 1024

# The end reason (sent to the page) when a browser-render stream's fn returns images.
IMAGES_IN_BROWSER_RENDER = "fn_returns_images"


class ImagesNotDrawable(TypeError):
    """The stream fn returned an image, which only `render="server"` can send."""


def detections_message(seq: int, age_ms: float, detections: Detections) -> dict[str, Any]:
    return {
        "type": "detections",
        "seq": seq,
        "age_ms": round(age_ms, 2),
        "items": [
            {"box": [round(float(v), 5) for v in d.box], "label": str(d.label), "score": round(float(d.score), 4)}
            for d in detections
        ],
    }


class OverlayChannel:
    """Sends one session's results as `detections` messages, never queueing without
    bound: while the channel holds more than `max_buffered` bytes, results are skipped
    and counted."""

    def __init__(
        self,
        channel: Callable[[], Optional[RTCDataChannel]],
        max_buffered: int = MAX_BUFFERED_BYTES,
    ) -> None:
        self._channel = channel
        self._max_buffered = max_buffered
        self._seq = 0
        self.sent = 0
        self.skipped = 0

    def publish(self, result: Any, arrived_at: float) -> bool:
        """Send `result` (the fn's return for a frame that arrived at `arrived_at`,
        `time.monotonic()`); returns whether it left. None sends nothing (as in server
        render, where None leaves the picture as it is). Raises `ImagesNotDrawable` for
        an image and TypeError for anything else that is not `Detections`."""
        if result is None:
            return False
        if isinstance(result, np.ndarray):
            raise ImagesNotDrawable(
                "the stream fn returned an image, but render='browser' only sends detections "
                "(the page draws them on its own camera picture): return Detections, or use "
                "render='server'"
            )
        if not isinstance(result, Detections):
            raise TypeError(f"stream fn returned {type(result).__name__}; expected Detections or None")
        self._seq += 1
        channel = self._channel()
        if channel is None or channel.readyState != "open" or channel.bufferedAmount > self._max_buffered:
            self.skipped += 1
            return False
        age_ms = (time.monotonic() - arrived_at) * 1000.0
        channel.send(json.dumps(detections_message(self._seq, age_ms, result), separators=(",", ":")))
        self.sent += 1
        return True


def returns_only_images(fn: Callable[..., Any]) -> bool:
    """Whether `fn`'s return annotation says it returns images and never `Detections`
    (e.g. `-> np.ndarray` or `-> Optional[NDArray[np.uint8]]`). Unannotated fns give
    False: their first image result ends the session instead."""
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else getattr(fn, "__call__", fn)
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # a string annotation naming something not importable from here
        return _names_only_images(getattr(target, "__annotations__", {}).get("return"))
    if "return" not in hints:
        return False
    kinds = _leaf_types(hints["return"])
    return np.ndarray in kinds and not any(isinstance(k, type) and issubclass(k, Detections) for k in kinds)


def _names_only_images(annotation: Any) -> bool:
    """For a string annotation that cannot be resolved: does it name an array type and
    not Detections?"""
    if not isinstance(annotation, str):
        return False
    return bool(re.search(r"\b(ndarray|NDArray)\b", annotation)) and "Detections" not in annotation


def _leaf_types(annotation: Any) -> set[Any]:
    """The plain types a return annotation names: unions, Optional, Annotated and
    Awaitable unwrapped, generics reduced to their origin (NDArray -> np.ndarray)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_leaf_types(a) for a in typing.get_args(annotation)))
    if origin is typing.Annotated or origin is collections.abc.Awaitable:
        return _leaf_types(typing.get_args(annotation)[0])
    return {origin if origin is not None else annotation}
