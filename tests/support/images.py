"""Test pictures: real photos to stream, and the annotation colour to look for in what
comes back."""

from __future__ import annotations

import cv2
import numpy as np


def photo(name: str) -> np.ndarray:
    """A scikit-image bundled photo as BGR (astronaut: a face/person, chelsea: cat, coffee: cup)."""
    import skimage.data

    return cv2.cvtColor(getattr(skimage.data, name)(), cv2.COLOR_RGB2BGR)


def green_mask(image_bgr: np.ndarray) -> np.ndarray:
    """Pixels of the annotation colour, with room for video compression."""
    b, g, r = (image_bgr[..., i].astype(int) for i in range(3))
    return (g > 170) & (r < 110) & (b < 110)
