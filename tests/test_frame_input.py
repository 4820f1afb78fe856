"""The detector's input on the live path: one scaled conversion straight from the
decoded yuv420p frame (`CameraFrame.scaled`) then the model's `from_scaled`, matches
what the same preprocessor makes from a BGR image (`__call__`): same shape, same
box mapping, nearly the same pixels (the two scalers round differently)."""

from __future__ import annotations

import numpy as np
import pytest
from av import VideoFrame

from component.scheduler import _frame_arg
from component.tracks import CameraFrame
from deployments.models.caffe import SsdPreprocessor
from deployments.models.haar import HaarPreprocessor
from deployments.models.onnx import OnnxPreprocessor
from deployments.models.user import CallablePreprocessor
from tests.support.images import photo

PREPROCESSORS = {
    "haar": HaarPreprocessor(),
    "yolox": OnnxPreprocessor("yolox", 416),
    "fastestdet": OnnxPreprocessor("fastestdet", 352),
    "ssd": SsdPreprocessor(300),
    "callable": CallablePreprocessor(320),
}


@pytest.mark.parametrize("name", sorted(PREPROCESSORS))
@pytest.mark.parametrize("size", [(640, 480), (642, 362)])
def test_live_input_matches_the_bgr_path(name, size):
    pre = PREPROCESSORS[name]
    decoded = VideoFrame.from_ndarray(photo("astronaut")[:480, :512].copy(), format="bgr24").reformat(
        width=size[0], height=size[1], format="yuv420p"
    )
    bgr = decoded.to_ndarray(format="bgr24")
    live = _frame_arg(CameraFrame(decoded), pre)
    reference = pre(bgr)
    assert live.tensor.shape == reference.tensor.shape and live.tensor.dtype == np.uint8
    assert live.frame_size == reference.frame_size == size
    assert np.allclose(live.scale, reference.scale) and live.pad == reference.pad
    diff = np.abs(live.tensor.astype(int) - reference.tensor.astype(int))
    assert diff.mean() < 6, f"{name}: mean abs difference {diff.mean():.2f}"


def test_a_full_frame_fn_gets_its_own_bgr_pixels():
    decoded = VideoFrame.from_ndarray(photo("coffee")[:400, :600].copy(), format="bgr24").reformat(format="yuv420p")
    camera = CameraFrame(decoded)
    first, second = _frame_arg(camera, None), _frame_arg(camera, None)
    assert first.shape == (400, 600, 3) and first.flags.writeable
    first[:] = 0  # the fn may draw on it: nobody else sees that
    assert second.any()
