"""yuv420p frames as numpy planes: the copy the encoder needs, and nothing more.

Decoders hand us yuv420p and encoders take yuv420p, so the outgoing frame is a plane
copy of the decoded one (a new frame: the encoder runs in another thread, and PyAV
must never see one frame from two threads), with detections drawn into its planes.
Odd sizes work too: chroma planes are ceil(width / 2) x ceil(height / 2).
"""

from __future__ import annotations

import numpy as np
from av import VideoFrame

Planes = tuple[np.ndarray, np.ndarray, np.ndarray]


def planes(frame: VideoFrame) -> Planes:
    """Writable (Y, U, V) views of a yuv420p frame, cropped to each plane's width
    (rows are padded to `line_size`)."""
    if frame.format.name != "yuv420p":
        raise ValueError(f"expected a yuv420p frame, got {frame.format.name}")
    views = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
        views.append(rows[:, : plane.width])
    return views[0], views[1], views[2]


def copy_yuv420p(frame: VideoFrame) -> VideoFrame:
    """A new yuv420p frame with `frame`'s pixels and timing. A yuv420p source costs a
    plane copy; any other format one conversion (which makes a new frame anyway)."""
    if frame.format.name == "yuv420p":
        out = VideoFrame(frame.width, frame.height, "yuv420p")
        for dst, src in zip(planes(out), planes(frame)):
            dst[...] = src
    else:
        out = frame.reformat(format="yuv420p")
    out.pts = frame.pts
    if frame.time_base is not None:
        out.time_base = frame.time_base
    return out
