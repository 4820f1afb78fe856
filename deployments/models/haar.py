"""The offline default: OpenCV's bundled Haar frontal-face cascade.

It ships inside opencv-python-headless, so a fresh install detects faces with
nothing to download. The cascade has no batched forward; a batch runs frame by frame.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from deployments.models.base import Detection, Detections, ModelInput, ModelLoadError, ScaledPreprocessor

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"
# Haar on a 2-core CPU costs ~45 ms at 320 px wide; faces stay findable down to here.
HAAR_INPUT_WIDTH = 320


class HaarPreprocessor(ScaledPreprocessor):
    """Grey, downscaled to a fixed width: a quarter of the bytes of a 640x480 BGR frame
    (from a yuv420p frame: its luma plane, scaled)."""

    def __init__(self, width: int = HAAR_INPUT_WIDTH) -> None:
        self.width = width

    def input_request(self, width: int, height: int) -> tuple[int, int, str]:
        return self.width, max(1, round(height * self.width / width)), "gray"

    def from_scaled(self, image: np.ndarray, frame_size: tuple[int, int]) -> ModelInput:
        w, h = frame_size
        out_h, out_w = image.shape[:2]
        return ModelInput(tensor=image, frame_size=(w, h), scale=(out_w / w, out_h / h))


class HaarBackend:
    """Face detector; `score` maps the cascade's level weight into [0, 1)."""

    def __init__(self, cascade_path: str | None = None, label: str = "face") -> None:
        path = cascade_path or str(Path(cv2.data.haarcascades) / DEFAULT_CASCADE)
        if not Path(path).is_file():
            raise ModelLoadError(f"Haar cascade file not found: {path}")
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise ModelLoadError(f"not a Haar cascade XML file: {path}")
        self.name = f"haar:{Path(path).name}"
        self.label = label

    def infer(self, batch: Sequence[ModelInput]) -> list[Detections]:
        return [self._infer_one(item) for item in batch]

    def _infer_one(self, item: ModelInput) -> Detections:
        grey = item.tensor
        if grey.ndim != 2:
            raise ValueError(f"Haar expects a grey image, got shape {grey.shape}")
        boxes, _levels, weights = self._cascade.detectMultiScale3(
            grey, scaleFactor=1.15, minNeighbors=4, minSize=(24, 24), outputRejectLevels=True
        )
        found = []
        for (x, y, w, h), weight in zip(np.asarray(boxes).reshape(-1, 4), np.ravel(weights)):
            score = 1.0 - math.exp(-max(float(weight), 0.0) / 4.0)
            found.append(Detection(item.to_frame_box(x, y, x + w, y + h), self.label, score))
        return Detections(tuple(found))
