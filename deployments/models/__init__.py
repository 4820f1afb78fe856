"""Model backends behind one interface (see `base`): pick one with a `ModelSpec`."""

from __future__ import annotations

from deployments.models.base import (
    Backend,
    Detection,
    Detections,
    ModelInput,
    ModelLoadError,
    Preprocessor,
)
from deployments.models.spec import ModelSpec

__all__ = [
    "Backend",
    "Detection",
    "Detections",
    "ModelInput",
    "ModelLoadError",
    "ModelSpec",
    "Preprocessor",
    "build_preprocessor",
    "load_backend",
]


def build_preprocessor(spec: ModelSpec) -> Preprocessor:
    """The ingress-side half of a model: cheap, loads no weights."""
    if spec.kind == "haar":
        from deployments.models.haar import HaarPreprocessor

        return HaarPreprocessor()
    raise ModelLoadError(f"model kind {spec.kind!r} is not available in this build")


def load_backend(spec: ModelSpec) -> Backend:
    """The replica-side half: loads weights once per detector replica."""
    if spec.kind == "haar":
        from deployments.models.haar import HaarBackend

        return HaarBackend(spec.path)
    raise ModelLoadError(f"model kind {spec.kind!r} is not available in this build")
