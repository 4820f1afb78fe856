"""A user's own Python function as the model: `ModelSpec.callable = "pkg.mod:fn"`.

`fn(frame_bgr)` runs per frame, or `fn([frame_bgr, ...])` once per batch when
`spec.batched` is set. It may return:

- `Detections` (boxes as fractions of the frame it was given),
- a list of `(x1, y1, x2, y2, label, score)` in pixels of the frame it was given,
- `None` (nothing found), or
- an annotated image (an ndarray the frame's shape).

Detections travel from the replica as boxes that the outgoing track draws on every
camera frame, so an image cannot: `CallableBackend` (the detector path) raises
`ImageResultError` for it. Image-returning functions are only usable through the plain
Gradio path, which can call `load_callable` and `to_result` itself.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Sequence, Union

import numpy as np

from deployments.models.base import Detection, Detections, ModelInput, ModelLoadError, ScaledPreprocessor
from deployments.models.spec import ModelSpec

MAX_WIDTH = 640


class ImageResultError(TypeError):
    """A callable returned an image where detections were required."""


def load_callable(target: str) -> Callable[..., Any]:
    """Import `pkg.mod:fn` (dots after the colon walk attributes, e.g. `mod:Cls.method`)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ModelLoadError(f"callable must look like 'package.module:function', got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:
        raise ModelLoadError(f"cannot import module {module_name!r} for callable {target!r}: {e}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise ModelLoadError(f"{module_name!r} has no attribute {attr!r} (callable {target!r})") from e
    if not callable(obj):
        raise ModelLoadError(f"{target!r} is a {type(obj).__name__}, not a callable")
    return obj


def to_result(result: Any, item: ModelInput) -> Union[Detections, np.ndarray]:
    """Normalise one return value; pixel boxes are in the frame `item.tensor`."""
    if result is None:
        return Detections()
    if isinstance(result, Detections):
        return result
    if isinstance(result, np.ndarray):
        if result.shape != item.tensor.shape:
            raise ValueError(f"callable returned an array of shape {result.shape}; images must be {item.tensor.shape}")
        return result
    if isinstance(result, (list, tuple)):
        found = []
        for row in result:
            try:
                x1, y1, x2, y2, label, score = row
                box = item.to_frame_box(float(x1), float(y1), float(x2), float(y2))
                found.append(Detection(box, str(label), float(score)))
            except (TypeError, ValueError) as e:
                raise ValueError(f"callable rows must be (x1, y1, x2, y2, label, score), got {row!r}") from e
        return Detections(tuple(found))
    raise TypeError(
        f"callable returned {type(result).__name__}; expected Detections, a list of "
        "(x1, y1, x2, y2, label, score), None, or an image"
    )


class CallablePreprocessor(ScaledPreprocessor):
    """Ships the BGR frame itself (no JPEG round trip), shrunk to at most 640 wide."""

    def __init__(self, max_width: int = MAX_WIDTH) -> None:
        self.max_width = max_width

    def input_request(self, width: int, height: int) -> tuple[int, int, str]:
        if width <= self.max_width:
            return width, height, "bgr24"
        return self.max_width, max(1, round(height * self.max_width / width)), "bgr24"

    def from_scaled(self, image: np.ndarray, frame_size: tuple[int, int]) -> ModelInput:
        w, h = frame_size
        out_h, out_w = image.shape[:2]
        return ModelInput(tensor=image, frame_size=(w, h), scale=(out_w / w, out_h / h))


class CallableBackend:
    """Runs the user's function in the replica; the result must be detections."""

    def __init__(self, spec: ModelSpec) -> None:
        if not spec.callable:
            raise ModelLoadError("kind 'callable' needs `callable` = 'package.module:function'")
        self._fn = load_callable(spec.callable)
        self.batched = spec.batched
        self.name = f"callable:{spec.callable}"

    def infer(self, batch: Sequence[ModelInput]) -> list[Detections]:
        if self.batched:
            results = list(self._fn([item.tensor for item in batch]))
            if len(results) != len(batch):
                raise ValueError(f"{self.name} returned {len(results)} results for {len(batch)} frames")
        else:
            results = [self._fn(item.tensor) for item in batch]
        out = []
        for result, item in zip(results, batch):
            converted = to_result(result, item)
            if isinstance(converted, np.ndarray):
                raise ImageResultError(
                    f"{self.name} returned an image; the detector path carries detections only. "
                    "Use an image-returning function through the plain Gradio path, or return "
                    "(x1, y1, x2, y2, label, score) rows instead"
                )
            out.append(converted)
        return out
