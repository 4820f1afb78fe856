"""Caffe SSD and user-callable backends, positive paths.

No MobileNet-SSD weights are available offline, so the Caffe test builds a weight-free
toy SSD: a prototxt of parameter-free layers (pooling, constant Power layers, PriorBox,
DetectionOutput) and a caffemodel that is an empty NetParameter. Its DetectionOutput
always reports a "person" prior in each quadrant of the frame, which exercises OpenCV's
Caffe import, the demo's blob parameters and our decoding end to end.
"""

from __future__ import annotations

import textwrap
import numpy as np
import pytest

from deployments.models import Detection, Detections, ModelInput, ModelSpec, build_preprocessor, load_backend
from deployments.models.caffe import VOC21, decode_ssd
from deployments.models.user import ImageResultError, to_result

# channel 15 of the 21 class scores ("person") is 12, every other is 0
TOY_SSD = textwrap.dedent(
    """\
    name: "toy_ssd"
    input: "data"
    input_shape { dim: 1 dim: 3 dim: 300 dim: 300 }
    layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
            pooling_param { pool: AVE kernel_size: 150 stride: 150 } }
    layer { name: "zero" type: "Power" bottom: "pool" top: "zero" power_param { scale: 0 shift: 0 } }
    layer { name: "high" type: "Power" bottom: "pool" top: "high" power_param { scale: 0 shift: 12 } }
    layer { name: "z1" type: "Slice" bottom: "zero" top: "z1" top: "z1rest" slice_param { axis: 1 slice_point: 1 } }
    layer { name: "h1" type: "Slice" bottom: "high" top: "h1" top: "h1rest" slice_param { axis: 1 slice_point: 1 } }
    layer { name: "loc4" type: "Concat" bottom: "zero" bottom: "z1" top: "loc4" }
    layer { name: "locp" type: "Permute" bottom: "loc4" top: "locp" permute_param { order: 0 order: 2 order: 3 order: 1 } }
    layer { name: "loc" type: "Flatten" bottom: "locp" top: "loc" }
    layer { name: "conf21" type: "Concat" top: "conf21"
            bottom: "zero" bottom: "zero" bottom: "zero" bottom: "zero" bottom: "zero"
            bottom: "h1" bottom: "zero" bottom: "z1" bottom: "z1" }
    layer { name: "confp" type: "Permute" bottom: "conf21" top: "confp" permute_param { order: 0 order: 2 order: 3 order: 1 } }
    layer { name: "confr" type: "Reshape" bottom: "confp" top: "confr" reshape_param { shape { dim: 0 dim: -1 dim: 21 } } }
    layer { name: "confs" type: "Softmax" bottom: "confr" top: "confs" softmax_param { axis: 2 } }
    layer { name: "conf" type: "Flatten" bottom: "confs" top: "conf" }
    layer { name: "prior" type: "PriorBox" bottom: "pool" bottom: "data" top: "prior"
            prior_box_param { min_size: 150 clip: true offset: 0.5
                              variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
    layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" top: "det"
            detection_output_param { num_classes: 21 share_location: true background_label_id: 0
                                     nms_param { nms_threshold: 0.45 top_k: 10 } code_type: CENTER_SIZE
                                     keep_top_k: 10 confidence_threshold: 0.1 } }
    """
)


@pytest.fixture
def toy_ssd(tmp_path) -> ModelSpec:
    proto, weights = tmp_path / "toy.prototxt", tmp_path / "toy.caffemodel"
    proto.write_text(TOY_SSD)
    weights.write_bytes(b'\x0a\x07toy_ssd')  # NetParameter { name: "toy_ssd" }: no layers, no weights
    return ModelSpec(kind="caffe", config=str(proto), path=str(weights))


def test_models_caffe_toy_ssd_end_to_end(toy_ssd):
    backend = load_backend(toy_ssd)
    pre = build_preprocessor(toy_ssd)
    frame = np.full((480, 640, 3), 90, np.uint8)
    item = pre(frame)
    assert item.tensor.shape == (300, 300, 3)
    found = backend.infer([item, item])
    assert len(found) == 2 and found[0] == found[1]
    assert [d.label for d in found[0]] == ["person"] * 4
    boxes = sorted(tuple(round(v, 3) for v in d.box) for d in found[0])
    assert boxes == [(0, 0, 0.5, 0.5), (0, 0.5, 0.5, 1), (0.5, 0, 1, 0.5), (0.5, 0.5, 1, 1)]
    assert all(d.score > 0.99 for d in found[0])


def test_models_caffe_decode_rows():
    item = ModelInput(tensor=np.zeros((300, 300, 3), np.uint8), frame_size=(640, 480), scale=(300 / 640, 300 / 480))
    rows = np.array(
        [[0, 8, 0.9, 0.1, 0.2, 0.3, 0.4], [0, 12, 0.2, 0, 0, 1, 1], [0, 99, 0.5, 0, 0, 1, 1]], np.float32
    ).reshape(1, 1, 3, 7)
    found = decode_ssd(rows, item, VOC21, 0.25, 300)
    assert [d.label for d in found] == ["cat", "99"]
    assert np.allclose(found.items[0].box, (0.1, 0.2, 0.3, 0.4), atol=1e-6)


# --------------------------------------------------------------------------- user callables

USER_MODULE = '''
import numpy as np
from deployments.models import Detection, Detections

def rows(frame):
    h, w = frame.shape[:2]
    return [(0, 0, w / 2, h / 2, "thing", 0.9)]

def batch(frames):
    assert isinstance(frames, list)
    return [rows(f) for f in frames]

def normalised(frame):
    return Detections((Detection((0.1, 0.2, 0.3, 0.4), "n", 0.5),))

def nothing(frame):
    return None

def painter(frame):
    out = frame.copy()
    out[:10] = 255
    return out

def short_batch(frames):
    return []
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "rayrtc_user_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "rayrtc_user_models"


def run(spec: ModelSpec, frames: list[np.ndarray]) -> list[Detections]:
    pre = build_preprocessor(spec)
    return load_backend(spec).infer([pre(f) for f in frames])


def test_models_callable_per_frame_rows(user_module):
    big = np.zeros((720, 1280, 3), np.uint8)
    item = build_preprocessor(ModelSpec(kind="callable", callable=f"{user_module}:rows"))(big)
    assert item.tensor.shape == (360, 640, 3)  # shipped at most 640 wide, no JPEG
    [found] = run(ModelSpec(kind="callable", callable=f"{user_module}:rows"), [big])
    assert found.items == (Detection((0.0, 0.0, 0.5, 0.5), "thing", 0.9),)


def test_models_callable_batched(user_module):
    frames = [np.zeros((240, 320, 3), np.uint8)] * 3
    found = run(ModelSpec(kind="callable", callable=f"{user_module}:batch", batched=True), frames)
    assert [len(d) for d in found] == [1, 1, 1]
    with pytest.raises(ValueError, match="returned 0 results for 3 frames"):
        run(ModelSpec(kind="callable", callable=f"{user_module}:short_batch", batched=True), frames)


def test_models_callable_detections_and_none(user_module):
    frame = np.zeros((240, 320, 3), np.uint8)
    [found] = run(ModelSpec(kind="callable", callable=f"{user_module}:normalised"), [frame])
    assert found.items[0].box == (0.1, 0.2, 0.3, 0.4)
    assert run(ModelSpec(kind="callable", callable=f"{user_module}:nothing"), [frame]) == [Detections()]


def test_models_callable_image_result_is_refused_by_detector(user_module):
    frame = np.zeros((240, 320, 3), np.uint8)
    with pytest.raises(ImageResultError, match="plain Gradio path"):
        run(ModelSpec(kind="callable", callable=f"{user_module}:painter"), [frame])
    # the plain Gradio path can take the image through `to_result`
    item = ModelInput(tensor=frame, frame_size=(320, 240))
    image = to_result(frame + 1, item)
    assert isinstance(image, np.ndarray) and image.shape == frame.shape
    with pytest.raises(ValueError, match="rows must be"):
        to_result([(1, 2, 3)], item)
    with pytest.raises(TypeError, match="expected Detections"):
        to_result("cat", item)


def test_models_spec_kinds_all_build_preprocessors():
    """The ingress builds every kind's preprocessor without touching weights or imports."""
    for spec in (
        ModelSpec(),
        ModelSpec(kind="onnx", decoder="fastestdet"),
        ModelSpec(kind="caffe"),
        ModelSpec(kind="callable", callable="x:y"),
    ):
        assert callable(build_preprocessor(spec))
