"""What a stream fn may return instead of an image: the objects it found.

Returning detections (not a drawn image) lets the outgoing track keep the camera's
frame rate: every new camera frame goes out with the latest detections drawn on it,
however slow the detector is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Detection:
    """One object found in a frame.

    `box` is (x1, y1, x2, y2) as fractions of the original frame's width and height,
    so the same detection can be drawn on any later frame of the same camera.
    """

    box: tuple[float, float, float, float]
    label: str
    score: float


@dataclass(frozen=True)
class Detections:
    """All objects found in one frame; a distinct type so a stream fn can return it
    and the outgoing track knows to draw it on every new camera frame."""

    items: tuple[Detection, ...] = ()

    def above(self, threshold: float) -> "Detections":
        return Detections(tuple(d for d in self.items if d.score >= threshold))

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)
