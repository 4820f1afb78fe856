"""The contract between the ingress, the detector replicas and any model backend.

Preprocessing runs in the ingress (next to the decoded camera frame) so that only a
model-sized tensor crosses the wire; inference runs batched in the detector replica.
Boxes travel normalised to the original frame so that drawing never needs to know the
model's input size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from component.detections import Detection, Detections

__all__ = [
    "Backend", "Detection", "Detections", "FrameFailure", "ModelInput", "ModelLoadError", "Preprocessor",
    "ScaledPreprocessor", "scale_bgr", "score_floor",
]

# Backends keep detections scoring at least this when the caller sets no `min_score`.
DEFAULT_MIN_SCORE = 0.25
# The lowest filter a caller may ask for: below it a detector returns mostly noise, and
# decoding and NMS cost grows with every extra candidate box.
LOWEST_MIN_SCORE = 0.01


@dataclass(frozen=True)
class ModelInput:
    """A frame already shaped for the model, plus what is needed to map boxes back.

    `scale` and `pad` describe a letterbox: model pixel = frame pixel * scale + pad.
    """

    tensor: np.ndarray
    frame_size: tuple[int, int]  # (width, height) of the original frame
    scale: tuple[float, float] = (1.0, 1.0)
    pad: tuple[float, float] = (0.0, 0.0)
    extras: dict = field(default_factory=dict)
    # The session's threshold: the backend keeps detections scoring at least this
    # (frames in one batch may differ). None: the backend's default filter.
    min_score: Optional[float] = None
    # Queue order in the detector replica, lowest first (`deployments.fair_batch`):
    # the ingress sets the session's fair-queueing key in wall-clock seconds
    # (`component.fair_order`). Equal values keep arrival order (0.0 for every
    # frame: first in, first out).
    priority: float = 0.0

    def to_frame_box(
        self, x1: float, y1: float, x2: float, y2: float
    ) -> tuple[float, float, float, float]:
        """Map a box in model pixels to fractions of the original frame, clipped to [0, 1]."""
        sx, sy = self.scale
        px, py = self.pad
        w, h = self.frame_size
        fx1 = (x1 - px) / sx / w
        fy1 = (y1 - py) / sy / h
        fx2 = (x2 - px) / sx / w
        fy2 = (y2 - py) / sy / h
        return (
            float(min(max(fx1, 0.0), 1.0)),
            float(min(max(fy1, 0.0), 1.0)),
            float(min(max(fx2, 0.0), 1.0)),
            float(min(max(fy2, 0.0), 1.0)),
        )


def score_floor(item: ModelInput, default: float = DEFAULT_MIN_SCORE) -> float:
    """The score filter for one input: the session's threshold when it set one
    (never below `LOWEST_MIN_SCORE`), else the backend's default."""
    if item.min_score is None:
        return default
    return max(float(item.min_score), LOWEST_MIN_SCORE)


@dataclass(frozen=True)
class FrameFailure:
    """Returned in place of `Detections` for one input of a batch that could not be
    processed, so the other frames of that batch still get their results."""

    error: str


@runtime_checkable
class Preprocessor(Protocol):
    """Cheap and pure: runs in the ingress for every frame sent to the detector.

    The live path never makes a full-size BGR image for it: the ingress asks
    `input_request` for the size and pixel format the model wants, scales the decoded
    frame straight to it (one conversion; that is the ingress's job, so this package
    needs no video library) and hands the array to `from_scaled`. `__call__` does the
    same from a BGR image, for tests, benchmarks and plain Python callers.
    """

    def input_request(self, width: int, height: int) -> tuple[int, int, str]:
        """(width, height, pixel format) to scale a `width` x `height` frame to; formats
        are FFmpeg's names: "gray", "bgr24"."""
        ...

    def from_scaled(self, image: np.ndarray, frame_size: tuple[int, int]) -> ModelInput:
        """The model input from an image made per `input_request` for a frame of
        `frame_size` (width, height)."""
        ...

    def __call__(self, frame_bgr: np.ndarray) -> ModelInput: ...


def scale_bgr(frame_bgr: np.ndarray, request: tuple[int, int, str]) -> np.ndarray:
    """What the ingress's scaled conversion makes, from a BGR image (OpenCV)."""
    width, height, pix_fmt = request
    h, w = frame_bgr.shape[:2]
    img = frame_bgr
    if (w, h) != (width, height):
        shrink = width <= w and height <= h
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if pix_fmt == "gray":
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if pix_fmt == "bgr24":
        return img
    if pix_fmt == "rgb24":
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    raise ValueError(f"unsupported pixel format {pix_fmt!r}")


class ScaledPreprocessor:
    """Base for preprocessors: `__call__` is `from_scaled` of `scale_bgr`, so the BGR path
    and the live path share one definition of the model's input."""

    def input_request(self, width: int, height: int) -> tuple[int, int, str]:
        raise NotImplementedError

    def from_scaled(self, image: np.ndarray, frame_size: tuple[int, int]) -> ModelInput:
        raise NotImplementedError

    def __call__(self, frame_bgr: np.ndarray) -> ModelInput:
        h, w = frame_bgr.shape[:2]
        return self.from_scaled(scale_bgr(frame_bgr, self.input_request(w, h)), (w, h))


@runtime_checkable
class Backend(Protocol):
    """A loaded model inside a detector replica.

    `infer` receives the whole batch the replica formed across sessions and must
    return exactly one `Detections` per input, in order. `batched`: whether it runs
    a batch as one forward pass; a backend that runs frames one by one says False,
    and the replica then hands it one frame at a time (a batch would only hold every
    frame's answer until the last one's is done, and let the queue's fair order act
    once per batch instead of once per frame).
    """

    name: str
    batched: bool

    def infer(self, batch: Sequence[ModelInput]) -> list[Detections]: ...


class ModelLoadError(RuntimeError):
    """A model cannot be loaded: the message tells the user what to pass instead."""
