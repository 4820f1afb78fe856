"""Drawing detections onto a camera frame (in place, on the media worker threads).

The outgoing video is drawn in the decoded frame's own colour space: boxes and labels
go straight into the Y, U and V planes of a yuv420p frame, so a frame with detections
costs one plane copy (the encoder's own frame) and a few slice fills, instead of a
round trip through BGR. `draw_detections` (BGR) stays for callers that hold an image.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable

import cv2
import numpy as np

from component.detections import Detections

BOX_COLOR_BGR = (0, 255, 0)
# The same green in BT.601 limited range (what browsers and libvpx assume for yuv420p).
BOX_COLOR_YUV = (145, 54, 34)
# Label text: dark luma over the box colour's chroma (chroma is shared by 2x2 pixels,
# so text is drawn in luma only and stays sharp).
TEXT_LUMA = 16
FONT = cv2.FONT_HERSHEY_SIMPLEX

# A box as inclusive pixel rectangles: (row0, row1, col0, col1).
Rect = tuple[int, int, int, int]


def box_style(width: int, height: int) -> tuple[int, float]:
    """Line width and label font scale: both grow with the frame so boxes survive
    video compression at any resolution."""
    thickness = max(2, round(min(width, height) / 160))
    font_scale = max(0.4, min(width, height) / 800)
    return thickness, font_scale


def draw_detections(frame_bgr: np.ndarray, detections: Detections) -> np.ndarray:
    """Draw each box with its label and score on a BGR image (in place)."""
    h, w = frame_bgr.shape[:2]
    thickness, font_scale = box_style(w, h)
    for det in detections:
        x1, y1, x2, y2 = det.box
        p1 = (int(x1 * (w - 1)), int(y1 * (h - 1)))
        p2 = (int(x2 * (w - 1)), int(y2 * (h - 1)))
        cv2.rectangle(frame_bgr, p1, p2, BOX_COLOR_BGR, thickness)
        text = f"{det.label} {det.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, FONT, font_scale, 1)
        ty = max(p1[1], th + base)
        cv2.rectangle(frame_bgr, (p1[0], ty - th - base), (p1[0] + tw, ty), BOX_COLOR_BGR, -1)
        cv2.putText(frame_bgr, text, (p1[0], ty - base), FONT, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    return frame_bgr


# ----------------------------------------------------------------------------- yuv420p


def box_ring(box: tuple[float, float, float, float], width: int, height: int, thickness: int) -> list[Rect]:
    """The luma rectangles that make a box's border: drawn inward from the box's edge,
    so a box at the frame's edge stays inside the frame."""
    x1, y1, x2, y2 = box
    c0, r0 = int(x1 * (width - 1)), int(y1 * (height - 1))
    c1, r1 = int(x2 * (width - 1)), int(y2 * (height - 1))
    c0, c1 = sorted((c0, c1))
    r0, r1 = sorted((r0, r1))
    t = thickness
    return [
        (r0, min(r0 + t - 1, r1), c0, c1),  # top
        (max(r1 - t + 1, r0), r1, c0, c1),  # bottom
        (r0, r1, c0, min(c0 + t - 1, c1)),  # left
        (r0, r1, max(c1 - t + 1, c0), c1),  # right
    ]


def chroma_rect(rect: Rect) -> Rect:
    """The chroma samples whose 2x2 luma block touches `rect` (yuv420p subsampling)."""
    r0, r1, c0, c1 = rect
    return r0 // 2, r1 // 2, c0 // 2, c1 // 2


def _fill(plane: np.ndarray, rect: Rect, value: int) -> None:
    r0, r1, c0, c1 = rect
    plane[max(r0, 0) : r1 + 1, max(c0, 0) : c1 + 1] = value


def fill_yuv(planes: tuple[np.ndarray, np.ndarray, np.ndarray], rects: Iterable[Rect], color: tuple[int, int, int]) -> None:
    """Fill luma rectangles (inclusive, clipped by slicing) in Y and their chroma in U, V."""
    y, u, v = planes
    for rect in rects:
        _fill(y, rect, color[0])
        crect = chroma_rect(rect)
        _fill(u, crect, color[1])
        _fill(v, crect, color[2])


@lru_cache(maxsize=1024)
def text_mask(text: str, font_scale: float) -> np.ndarray:
    """The label's pixels as a boolean mask (rendered once per distinct text), with the
    baseline gap below it: stamping it costs one masked assignment per frame."""
    (tw, th), base = cv2.getTextSize(text, FONT, font_scale, 1)
    canvas = np.zeros((th + base, tw), dtype=np.uint8)
    cv2.putText(canvas, text, (0, th), FONT, font_scale, 255, 1, cv2.LINE_8)
    mask = canvas > 0
    mask.flags.writeable = False
    return mask


def draw_detections_yuv(
    planes: tuple[np.ndarray, np.ndarray, np.ndarray], width: int, height: int, detections: Detections
) -> None:
    """Draw boxes and labels into the planes of a yuv420p frame, in place.

    `planes` are (Y, U, V) views of `height` x `width` luma and ceil-halved chroma.
    """
    thickness, font_scale = box_style(width, height)
    y_plane = planes[0]
    for det in detections:
        ring = box_ring(det.box, width, height, thickness)
        fill_yuv(planes, ring, BOX_COLOR_YUV)
        mask = text_mask(f"{det.label} {det.score:.2f}", font_scale)
        mh, mw = mask.shape
        left = ring[0][2]
        # Above the box when there is room, else inside it from the top.
        top = max(ring[0][0] - mh, 0)
        bottom, right = min(top + mh, height), min(left + mw, width)
        if bottom <= top or right <= left:
            continue
        fill_yuv(planes, [(top, bottom - 1, left, right - 1)], BOX_COLOR_YUV)
        region = y_plane[top:bottom, left:right]
        region[mask[: bottom - top, : right - left]] = TEXT_LUMA
