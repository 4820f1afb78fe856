"""Boxes drawn straight into yuv420p planes land on exactly the right pixels: Y at full
resolution, U and V on every chroma sample whose 2x2 block the box touches; odd frame
sizes and boxes on the frame's edges included. Checked against a per-pixel oracle."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from av import VideoFrame

from component.annotate import (
    BOX_COLOR_YUV,
    TEXT_LUMA,
    box_ring,
    box_style,
    draw_detections_yuv,
    fill_yuv,
    text_mask,
)
from component.detections import Detection, Detections
from component.yuv import copy_yuv420p, planes

SIZES = [(640, 480), (641, 481), (33, 17), (7, 5)]
BOXES = [
    (0.2, 0.3, 0.6, 0.7),
    (0.0, 0.0, 1.0, 1.0),  # the whole frame: every edge row and column
    (0.9, 0.9, 1.0, 1.0),  # bottom-right corner, odd last row/column
    (0.0, 0.5, 0.05, 0.52),  # thinner than the line: filled
    (0.5, 0.5, 0.5, 0.5),  # a point
]


def _blank(width: int, height: int, seed: int = 0) -> VideoFrame:
    frame = VideoFrame(width, height, "yuv420p")
    rng = np.random.default_rng(seed)
    for p in planes(frame):
        p[...] = rng.integers(60, 200, size=p.shape, dtype=np.uint8)
    return frame


def _ring_oracle(box, width: int, height: int, t: int) -> np.ndarray:
    """Luma pixels on the box's border, one pixel at a time."""
    x1, y1, x2, y2 = box
    c0, c1 = sorted((int(x1 * (width - 1)), int(x2 * (width - 1))))
    r0, r1 = sorted((int(y1 * (height - 1)), int(y2 * (height - 1))))
    mask = np.zeros((height, width), dtype=bool)
    for r in range(height):
        for c in range(width):
            inside = r0 <= r <= r1 and c0 <= c <= c1
            hole = r0 + t <= r <= r1 - t and c0 + t <= c <= c1 - t
            mask[r, c] = inside and not hole
    return mask


def _chroma_of(mask: np.ndarray) -> np.ndarray:
    """A chroma sample is coloured when any luma pixel of its 2x2 block is."""
    h, w = mask.shape
    padded = np.zeros((h + h % 2, w + w % 2), dtype=bool)
    padded[:h, :w] = mask
    return padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2).any(axis=(1, 3))


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("box", BOXES)
def test_box_lands_on_the_right_pixels_in_all_three_planes(width, height, box):
    frame = _blank(width, height)
    before = [p.copy() for p in planes(frame)]
    t, _ = box_style(width, height)
    fill_yuv(planes(frame), box_ring(box, width, height, t), BOX_COLOR_YUV)

    luma = _ring_oracle(box, width, height, t)
    chroma = _chroma_of(luma)
    assert chroma.shape == planes(frame)[1].shape
    for plane, old, mask, value in zip(planes(frame), before, (luma, chroma, chroma), BOX_COLOR_YUV):
        assert (plane[mask] == value).all()
        assert (plane[~mask] == old[~mask]).all(), "pixels off the box changed"


@pytest.mark.parametrize("width,height", [(640, 480), (641, 481), (101, 75)])
def test_labelled_boxes_touch_only_box_and_label_pixels(width, height):
    frame = _blank(width, height, seed=1)
    before = [p.copy() for p in planes(frame)]
    dets = Detections((Detection((0.3, 0.4, 0.7, 0.9), "face", 0.87), Detection((0.0, 0.0, 0.2, 0.3), "cat", 0.5)))
    draw_detections_yuv(planes(frame), width, height, dets)

    t, scale = box_style(width, height)
    touched = np.zeros((height, width), dtype=bool)
    label_text = np.zeros((height, width), dtype=bool)
    for det in dets:
        touched |= _ring_oracle(det.box, width, height, t)
        mask = text_mask(f"{det.label} {det.score:.2f}", scale)
        left = int(det.box[0] * (width - 1))
        top = max(int(det.box[1] * (height - 1)) - mask.shape[0], 0)
        bottom, right = min(top + mask.shape[0], height), min(left + mask.shape[1], width)
        touched[top:bottom, left:right] = True
        label_text[top:bottom, left:right] |= mask[: bottom - top, : right - left]
    y, u, v = planes(frame)
    assert label_text.any(), "no label text drawn"
    assert (y[label_text] == TEXT_LUMA).all()
    assert (y[touched & ~label_text] == BOX_COLOR_YUV[0]).all()
    assert (y[~touched] == before[0][~touched]).all()
    chroma = _chroma_of(touched)
    assert (u[chroma] == BOX_COLOR_YUV[1]).all() and (v[chroma] == BOX_COLOR_YUV[2]).all()
    assert (u[~chroma] == before[1][~chroma]).all() and (v[~chroma] == before[2][~chroma]).all()


def test_box_colour_decodes_to_green_and_copy_keeps_source_and_timing():
    src = _blank(641, 481, seed=2)
    src.pts = 1234
    src.time_base = Fraction(1, 90000)
    out = copy_yuv420p(src)
    assert out.pts == 1234 and out.time_base == src.time_base
    draw_detections_yuv(planes(out), out.width, out.height, Detections((Detection((0.1, 0.3, 0.9, 0.9), "x", 1.0),)))
    # The source is untouched: the outgoing frame is the encoder's own copy.
    assert not (planes(src)[0] == BOX_COLOR_YUV[0]).all(axis=1).any()
    rgb = out.to_ndarray(format="rgb24")
    # The middle row of the bottom line (swscale blends chroma with the rows around it).
    bottom_row = rgb[int(0.9 * 480) - 1, 100:500].astype(int)
    assert (bottom_row[:, 1] > 200).all() and (bottom_row[:, 0] < 80).all() and (bottom_row[:, 2] < 80).all()
