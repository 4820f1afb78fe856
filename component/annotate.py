"""Drawing detections onto a camera frame (in place, on the media worker threads)."""

from __future__ import annotations

import cv2
import numpy as np

from component.detections import Detections

BOX_COLOR_BGR = (0, 255, 0)


def draw_detections(frame_bgr: np.ndarray, detections: Detections) -> np.ndarray:
    """Draw each box with its label and score; line width grows with the frame so
    boxes survive video compression at any resolution."""
    h, w = frame_bgr.shape[:2]
    thickness = max(2, round(min(w, h) / 160))
    font_scale = max(0.4, min(w, h) / 800)
    for det in detections:
        x1, y1, x2, y2 = det.box
        p1 = (int(x1 * (w - 1)), int(y1 * (h - 1)))
        p2 = (int(x2 * (w - 1)), int(y2 * (h - 1)))
        cv2.rectangle(frame_bgr, p1, p2, BOX_COLOR_BGR, thickness)
        text = f"{det.label} {det.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = max(p1[1], th + base)
        cv2.rectangle(frame_bgr, (p1[0], ty - th - base), (p1[0] + tw, ty), BOX_COLOR_BGR, -1)
        cv2.putText(
            frame_bgr, text, (p1[0], ty - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
            cv2.LINE_AA,
        )
    return frame_bgr
