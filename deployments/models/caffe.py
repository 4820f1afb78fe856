"""MobileNet-SSD (Caffe prototxt + caffemodel) on OpenCV's DNN module.

This is the model family of the classic OpenCV "real-time object detection" demo, so
users can bring the same two files. OpenCV 4.x still reads Caffe (5.x dropped it).
The blob parameters are the demo's: 300x300 plain resize, scale 0.007843 (1/127.5),
mean 127.5, BGR order kept. A batch runs frame by frame: OpenCV's DNN module is known
to return wrongly shaped batched outputs silently for some graphs, and there are no
weights here to prove a batched SSD forward right; on CPU batching gains little anyway.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from deployments.models.base import (
    DEFAULT_MIN_SCORE, Detection, Detections, ModelInput, ModelLoadError, ScaledPreprocessor, score_floor,
)
from deployments.models.spec import ModelSpec
from deployments.models.weights import resolve_weights

log = logging.getLogger("rayrtc.models")

SSD_SIZE = 300
SSD_SCALE = 0.007843
SSD_MEAN = 127.5
VOC21: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
CONF_THRESHOLD = DEFAULT_MIN_SCORE


class SsdPreprocessor(ScaledPreprocessor):
    """Frame -> uint8 300x300 BGR (the float blob is made in the replica: 4x fewer bytes)."""

    def __init__(self, size: int = SSD_SIZE) -> None:
        self.size = size

    def input_request(self, width: int, height: int) -> tuple[int, int, str]:
        return self.size, self.size, "bgr24"

    def from_scaled(self, image: np.ndarray, frame_size: tuple[int, int]) -> ModelInput:
        w, h = frame_size
        return ModelInput(tensor=image, frame_size=(w, h), scale=(self.size / w, self.size / h))


class CaffeSsdBackend:
    """A loaded SSD; `decode` reads DetectionOutput rows (image, label, conf, x1, y1, x2, y2)."""

    batched = False  # one blob per frame (the prototxt's input is batch 1)

    def __init__(self, spec: ModelSpec, *, conf_threshold: float = CONF_THRESHOLD) -> None:
        if not spec.config:
            raise ModelLoadError("a Caffe model needs `config` (the .prototxt) and `path` (the .caffemodel)")
        prototxt = resolve_weights(spec.config, what="Caffe prototxt")
        weights = resolve_weights(spec.path, spec.url, spec.sha256, what="Caffe caffemodel")
        try:
            self._net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
        except cv2.error as e:
            raise ModelLoadError(
                f"OpenCV cannot read the Caffe model {prototxt} + {weights}: {str(e).strip()}"
            ) from e
        if self._net.empty():
            raise ModelLoadError(f"OpenCV read an empty network from {prototxt} + {weights}")
        if spec.num_gpus > 0:
            log.warning("caffe: opencv-python-headless has no CUDA DNN backend; running on CPU")
        self.size = spec.input_size or SSD_SIZE
        self.conf_threshold = conf_threshold
        self.names = _names(spec.names)
        self.name = f"caffe:{weights.name}"
        log.info("%s: loaded on OpenCV DNN (CPU)", self.name)

    def infer(self, batch: Sequence[ModelInput]) -> list[Detections]:
        return [self._infer_one(item) for item in batch]

    def _infer_one(self, item: ModelInput) -> Detections:
        if item.tensor.shape != (self.size, self.size, 3):
            raise ValueError(f"{self.name} expects {self.size}x{self.size}x3 images, got {item.tensor.shape}")
        blob = cv2.dnn.blobFromImage(item.tensor, SSD_SCALE, (self.size, self.size), SSD_MEAN, swapRB=False)
        self._net.setInput(blob)
        # The session's threshold filters here; the prototxt's DetectionOutput layer
        # (`confidence_threshold`) is a floor this cannot go under.
        return decode_ssd(self._net.forward(), item, self.names, score_floor(item, self.conf_threshold), self.size)


def decode_ssd(
    out: np.ndarray, item: ModelInput, names: Sequence[str], conf_threshold: float, size: int
) -> Detections:
    """DetectionOutput (1, 1, N, 7) for one image, boxes as fractions of the model input."""
    rows = np.asarray(out, dtype=np.float32).reshape(-1, 7)
    rows = rows[rows[:, 2] >= conf_threshold]
    found = []
    for _image, label, conf, x1, y1, x2, y2 in rows[np.argsort(-rows[:, 2])]:
        idx = int(label)
        name = names[idx] if 0 <= idx < len(names) else str(idx)
        box = item.to_frame_box(x1 * size, y1 * size, x2 * size, y2 * size)
        found.append(Detection(box, name, float(conf)))
    return Detections(tuple(found))


def _names(names_file: Optional[str]) -> tuple[str, ...]:
    if names_file is None:
        return VOC21
    path = Path(names_file).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"class names file not found: {path}")
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
