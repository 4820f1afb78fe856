"""Models used by the fault tests, loaded by import path inside detector replicas."""

from __future__ import annotations

import itertools

import numpy as np

_calls = itertools.count()


def flaky_box(frame: np.ndarray) -> list[tuple]:
    """Finds one fixed box, but raises on every other call: a model that fails on some
    frames, for real, inside a real replica."""
    if next(_calls) % 2 == 1:
        raise RuntimeError("flaky model failed on this frame")
    h, w = frame.shape[:2]
    return [(w * 0.25, h * 0.25, w * 0.75, h * 0.75, "thing", 0.9)]
