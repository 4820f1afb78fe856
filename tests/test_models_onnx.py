"""ONNX backends on the real FastestDet and YOLOX-nano weights in ../shared/models, plus
the batch rewrite on tiny synthetic graphs (those need no weights and always run)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from deployments.models import ModelLoadError, ModelSpec, build_preprocessor, load_backend
from deployments.models.onnx import (
    BATCH_TOLERANCE,
    OnnxBackend,
    OnnxPreprocessor,
    batch_error,
    make_batch_dynamic,
)

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
needs_models = pytest.mark.skipif(
    not (MODELS / "yolox_nano.onnx").exists(), reason="../shared/models absent (real ONNX weights)"
)
REAL = {"fastestdet": "fastestdet.onnx", "yolox_nano": "yolox_nano.onnx"}
PHOTOS = {"astronaut": "person", "chelsea": "cat", "coffee": "cup"}


def photo(name: str) -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(getattr(data, name)(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module", params=sorted(REAL))
def real(request) -> tuple[OnnxBackend, OnnxPreprocessor]:
    if not (MODELS / REAL[request.param]).exists():
        pytest.skip("../shared/models absent (real ONNX weights)")
    spec = ModelSpec(kind="onnx", path=str(MODELS / REAL[request.param]))
    return load_backend(spec), build_preprocessor(spec)


@needs_models
@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_models_real_photo_top_detection(real, name):
    backend, pre = real
    [found] = backend.infer([pre(photo(name))])
    assert len(found), f"{backend.name} found nothing on {name}"
    top = max(found, key=lambda d: d.score)
    assert top.label == PHOTOS[name] and top.score >= 0.3, (backend.name, name, found)
    x1, y1, x2, y2 = top.box
    assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 and (x2 - x1) * (y2 - y1) > 0.1


@needs_models
def test_models_real_batch8_equals_batch1(real):
    backend, pre = real
    assert backend.batched, f"{backend.name} should have been made batch-dynamic"
    frames = [photo(n) for n in sorted(PHOTOS)]
    frames += [cv2.flip(f, 1) for f in frames] + [frames[0][:300, :400], frames[1][::2, ::2]]
    items = [pre(f) for f in frames]
    x = np.stack([i.tensor for i in items])
    assert x.shape[0] == 8
    eight = backend.forward(x)
    ones = np.concatenate([backend.forward(x[i : i + 1]) for i in range(8)])
    assert eight.shape == ones.shape and eight.shape[0] == 8
    assert np.allclose(eight, ones, rtol=1e-4, atol=1e-5)
    batched = backend.infer(items)
    single = [backend.infer([i])[0] for i in items]
    for a, b in zip(batched, single):
        assert [d.label for d in a] == [d.label for d in b]
        assert np.allclose([d.box + (d.score,) for d in a], [d.box + (d.score,) for d in b], atol=1e-5)


@needs_models
def test_models_preprocessor_reads_shape_only():
    # explicit decoder + no input_size: the file is never opened
    assert build_preprocessor(ModelSpec(kind="onnx", path="/nowhere.onnx", decoder="yolox")).size == 416
    assert build_preprocessor(ModelSpec(kind="onnx", path="/nowhere.onnx", decoder="fastestdet")).size == 352
    pre = build_preprocessor(ModelSpec(kind="onnx", path=str(MODELS / "yolox_nano.onnx")))
    assert (pre.decoder, pre.size) == ("yolox", 416)
    pre = build_preprocessor(ModelSpec(kind="onnx", path=str(MODELS / "fastestdet.onnx")))
    assert (pre.decoder, pre.size) == ("fastestdet", 352)
    item = pre(np.zeros((480, 640, 3), np.uint8))
    assert item.tensor.shape == (3, 352, 352) and item.tensor.dtype == np.uint8


@needs_models
def test_models_names_file_and_provider_logged(caplog):
    with caplog.at_level(logging.INFO, logger="rayrtc.models"):
        spec = ModelSpec(kind="onnx", path=str(MODELS / "fastestdet.onnx"), names=str(MODELS / "coco.names"))
        backend = load_backend(spec)
    assert backend.names[4] == "aeroplane" and len(backend.names) == 80
    assert backend.provider == "CPUExecutionProvider"
    assert any("provider CPUExecutionProvider" in r.getMessage() for r in caplog.records)


@needs_models
def test_models_output_batch_is_checked(real):
    backend, _ = real

    class Wrong:
        def run(self, _outputs, feed):
            return [np.zeros((1, 3))]

    real_session = backend._session
    backend._session = Wrong()
    try:
        with pytest.raises(RuntimeError, match="output batch 1 for an input batch of 2"):
            backend.forward(np.zeros((2, 3, backend.size, backend.size), np.uint8))
    finally:
        backend._session = real_session


@pytest.mark.gpu
@needs_models
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu on a CUDA host)",
)
@pytest.mark.parametrize("name", sorted(REAL))
def test_models_gpu_provider(name):
    """On CUDA both real models load batched (with TF32 on, FastestDet failed the batch
    check and ran frame by frame) and still find the astronaut."""
    spec = ModelSpec(kind="onnx", path=str(MODELS / REAL[name]), num_gpus=1)
    backend = load_backend(spec)
    assert backend.provider == "CUDAExecutionProvider"
    assert backend._session.get_provider_options()["CUDAExecutionProvider"]["use_tf32"] == "0"
    assert backend.batched
    [found] = backend.infer([build_preprocessor(spec)(photo("astronaut"))])
    assert max(found, key=lambda d: d.score).label == "person"


# --------------------------------------------------------------------------- synthetic graphs

SIZE = 32
ROWS = sum((SIZE // s) ** 2 for s in (8, 16, 32))  # 21 YOLOX grid cells at 32x32


def tiny_yolox(path: Path, *, computed_shape: bool) -> Path:
    """A YOLOX-shaped toy: 1x3x32x32 -> 1x21x85, with batch 1 baked into its Reshapes.

    `computed_shape` builds the last Reshape's target with a Concat, which the rewrite
    cannot see through, so the model stays batch-1 and must run frame by frame.
    """
    n = ROWS * 85
    nodes = [
        helper.make_node("Reshape", ["images", "flat_shape"], ["flat"]),
        helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["sliced"]),
        helper.make_node("Mul", ["sliced", "tiny"], ["scaled"]),
        helper.make_node("Sigmoid", ["scaled"], ["act"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 3 * SIZE * SIZE], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([0], np.int64), "starts"),
        numpy_helper.from_array(np.array([n], np.int64), "ends"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        numpy_helper.from_array(np.array(1e-3, np.float32), "tiny"),
    ]
    if computed_shape:
        nodes.append(helper.make_node("Concat", ["one", "rest"], ["out_shape"], axis=0))
        inits += [
            numpy_helper.from_array(np.array([1], np.int64), "one"),
            numpy_helper.from_array(np.array([ROWS, 85], np.int64), "rest"),
        ]
    else:
        inits.append(numpy_helper.from_array(np.array([1, ROWS, 85], np.int64), "out_shape"))
    nodes.append(helper.make_node("Reshape", ["act", "out_shape"], ["output"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, ROWS, 85])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.save(model, path)
    return path


def test_models_rewrite_makes_batch_dynamic(tmp_path):
    model = onnx.load(tiny_yolox(tmp_path / "t.onnx", computed_shape=False))
    dynamic, changed = make_batch_dynamic(model)
    assert changed == 2
    assert dynamic.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.random.default_rng(1).random((5, 3, SIZE, SIZE), dtype=np.float32)
    sess = ort.InferenceSession(dynamic.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"images": x})[0]
    assert out.shape == (5, ROWS, 85)
    assert np.allclose(out, np.concatenate([sess.run(None, {"images": x[i : i + 1]})[0] for i in range(5)]))


def test_models_tiny_batched_backend(tmp_path):
    backend = OnnxBackend(ModelSpec(kind="onnx", path=str(tiny_yolox(tmp_path / "t.onnx", computed_shape=False))))
    assert backend.batched and backend.decoder == "yolox" and backend.size == SIZE
    pre = build_preprocessor(ModelSpec(kind="onnx", path=str(tmp_path / "t.onnx")))
    assert len(backend.infer([pre(np.zeros((48, 64, 3), np.uint8))] * 3)) == 3


def test_models_unrewritable_falls_back_frame_by_frame(tmp_path, caplog):
    path = tiny_yolox(tmp_path / "t.onnx", computed_shape=True)
    with caplog.at_level(logging.WARNING, logger="rayrtc.models"):
        backend = OnnxBackend(ModelSpec(kind="onnx", path=str(path)))
    assert not backend.batched
    assert any("frame by frame" in r.getMessage() for r in caplog.records)
    x = np.random.default_rng(2).integers(0, 256, (4, 3, SIZE, SIZE), dtype=np.uint8)
    out = backend.forward(x)
    assert out.shape == (4, ROWS, 85)
    assert np.allclose(out[2:3], backend.forward(x[2:3]))


def test_models_batch_check_tolerates_kernel_noise_not_mixed_frames():
    """The rewrite's check: GPU kernels that round differently per batch size pass
    (before, an element-wise 1e-2 bound sent every real model frame by frame on CUDA);
    a batched output that swaps or blends frames fails."""
    rng = np.random.default_rng(3)
    single = np.stack([rng.normal(0, 50, (85, 22, 22)), rng.normal(5, 10, (85, 22, 22))]).astype(np.float32)
    assert batch_error(single.copy(), single) == 0.0
    noisy = single * (1 + rng.normal(0, 1e-3, single.shape)).astype(np.float32)
    noisy[0, 0, 0, :5] += 0.5  # a few elements far past any element-wise bound
    assert not np.allclose(noisy, single, rtol=1e-2, atol=1e-2)
    assert batch_error(noisy, single) < BATCH_TOLERANCE
    assert batch_error(single[::-1], single) > BATCH_TOLERANCE
    blended = np.stack([0.9 * single[0] + 0.1 * single[1], single[1]])
    assert batch_error(blended, single) > BATCH_TOLERANCE


# --------------------------------------------------------------------------- load-time errors on toys


@pytest.fixture
def tiny(tmp_path) -> Path:
    return tiny_yolox(tmp_path / "tiny.onnx", computed_shape=False)


def test_models_onnx_input_size_mismatch(tiny):
    with pytest.raises(ModelLoadError, match=f"set input_size={SIZE}"):
        load_backend(ModelSpec(kind="onnx", path=str(tiny), input_size=64))
    # an explicit decoder with no input_size means the decoder's default (416)
    with pytest.raises(ModelLoadError, match=f"1x3x{SIZE}x{SIZE} input .* 1x3x416x416; set input_size={SIZE}"):
        load_backend(ModelSpec(kind="onnx", path=str(tiny), decoder="yolox"))
    assert load_backend(ModelSpec(kind="onnx", path=str(tiny), decoder="yolox", input_size=SIZE)).batched


def test_models_onnx_wrong_decoder(tiny):
    with pytest.raises(ModelLoadError, match=r"FastestDet output should be \(B, 5\+classes, H, W\)"):
        load_backend(ModelSpec(kind="onnx", path=str(tiny), decoder="fastestdet", input_size=SIZE))


def test_models_onnx_names_count_mismatch(tiny, tmp_path):
    names = tmp_path / "voc.names"
    names.write_text("cat\ndog\n")
    with pytest.raises(ModelLoadError, match="80 classes but .*voc.names names 2"):
        load_backend(ModelSpec(kind="onnx", path=str(tiny), names=str(names)))
    with pytest.raises(ModelLoadError, match="class names file not found"):
        load_backend(ModelSpec(kind="onnx", path=str(tiny), names=str(tmp_path / "none.names")))
