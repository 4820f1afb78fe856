"""Model backends behind one interface (see `base`): pick one with a `ModelSpec`."""

from __future__ import annotations

from deployments.models.base import (
    Backend,
    Detection,
    Detections,
    FrameFailure,
    ModelInput,
    ModelLoadError,
    Preprocessor,
)
from deployments.models.spec import ModelSpec

__all__ = [
    "Backend",
    "Detection",
    "Detections",
    "FrameFailure",
    "ModelInput",
    "ModelLoadError",
    "ModelSpec",
    "Preprocessor",
    "build_preprocessor",
    "load_backend",
]


def build_preprocessor(spec: ModelSpec) -> Preprocessor:
    """The ingress-side half of a model: cheap, loads no weights.

    An `onnx` spec with `decoder="auto"` or no `input_size` reads the graph's declared
    shapes (not its weights) to learn the input size.
    """
    if spec.kind == "haar":
        from deployments.models.haar import HaarPreprocessor

        return HaarPreprocessor()
    if spec.kind == "onnx":
        from deployments.models.onnx import preprocessor_for

        return preprocessor_for(spec)
    if spec.kind == "caffe":
        from deployments.models.caffe import SsdPreprocessor

        return SsdPreprocessor(spec.input_size or 300)
    if spec.kind == "callable":
        from deployments.models.user import CallablePreprocessor

        return CallablePreprocessor()
    raise ModelLoadError(f"model kind {spec.kind!r} is not available in this build")


def load_backend(spec: ModelSpec) -> Backend:
    """The replica-side half: loads weights once per detector replica.

    `spec.num_threads` bounds OpenCV's threads for the whole process (a replica runs
    one backend) and onnxruntime's intra-op pool."""
    if spec.num_threads is not None:
        import cv2

        cv2.setNumThreads(spec.num_threads)
    if spec.kind == "haar":
        from deployments.models.haar import HaarBackend

        return HaarBackend(spec.path)
    if spec.kind == "onnx":
        from deployments.models.onnx import OnnxBackend

        return OnnxBackend(spec)
    if spec.kind == "caffe":
        from deployments.models.caffe import CaffeSsdBackend

        return CaffeSsdBackend(spec)
    if spec.kind == "callable":
        from deployments.models.user import CallableBackend

        return CallableBackend(spec)
    raise ModelLoadError(f"model kind {spec.kind!r} is not available in this build")
