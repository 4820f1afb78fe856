"""ONNX detectors on onnxruntime: YOLOX-family and FastestDet-family output decoders.

onnxruntime runs these models ~2.5x faster than OpenCV's DNN module on CPU and can use
CUDA. Many public exports hard-code batch 1 inside Reshape nodes, which breaks (or, in
OpenCV, silently corrupts) a batched forward; so at load time the graph is rewritten
to take any batch size and the rewrite is checked against batch-1 forwards. When that
is impossible the backend runs the batch frame by frame and logs why.

The ingress-side preprocessor ships a uint8 CHW tensor (a quarter of float32's bytes);
the replica converts it to the float input the decoder's model expects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from deployments.models.base import (
    DEFAULT_MIN_SCORE, Detection, Detections, ModelInput, ModelLoadError, ScaledPreprocessor, score_floor,
)
from deployments.models.coco import COCO80
from deployments.models.spec import ModelSpec
from deployments.models.weights import resolve_weights

log = logging.getLogger("rayrtc.models")

Decoder = Literal["yolox", "fastestdet"]
DEFAULT_SIZE: dict[str, int] = {"yolox": 416, "fastestdet": 352}
YOLOX_STRIDES = (8, 16, 32)
LETTERBOX_PAD = 114
CONF_THRESHOLD = DEFAULT_MIN_SCORE
NMS_IOU = 0.45
MAX_DETECTIONS = 100


# ----------------------------------------------------------------------------- ingress


class OnnxPreprocessor(ScaledPreprocessor):
    """Frame -> uint8 CHW model input. YOLOX: aspect-preserving letterbox padded with 114
    at the bottom/right (YOLOX's own convention); FastestDet: plain resize."""

    def __init__(self, decoder: Decoder, size: int) -> None:
        self.decoder = decoder
        self.size = size

    def input_request(self, width: int, height: int) -> tuple[int, int, str]:
        s = self.size
        if self.decoder == "fastestdet":
            return s, s, "bgr24"
        r = min(s / width, s / height)
        return max(1, round(width * r)), max(1, round(height * r)), "bgr24"

    def from_scaled(self, image: np.ndarray, frame_size: tuple[int, int]) -> ModelInput:
        w, h = frame_size
        s = self.size
        nh, nw = image.shape[:2]
        tensor = np.empty((3, s, s), dtype=np.uint8)
        if (nw, nh) != (s, s):
            tensor.fill(LETTERBOX_PAD)
        # HWC -> CHW in one copy, straight into the (padded) model input.
        tensor[:, :nh, :nw] = image.transpose(2, 0, 1)
        return ModelInput(tensor=tensor, frame_size=(w, h), scale=(nw / w, nh / h))


@dataclass(frozen=True)
class GraphInfo:
    """What the graph declares, read without weights: decoder family and input size."""

    decoder: Optional[Decoder]
    input_dims: tuple[Optional[int], ...]  # declared (B, C, H, W); None where symbolic

    @property
    def input_size(self) -> Optional[int]:
        """The side of a declared square input, else None."""
        dims = self.input_dims
        return dims[2] if len(dims) == 4 and dims[2] and dims[2] == dims[3] else None


def _dims(value_info: onnx.ValueInfoProto) -> list[Optional[int]]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _image_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The graph's first real input (old exports also list initializers as inputs)."""
    weights = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in weights]
    if len(inputs) != 1:
        raise ModelLoadError(f"expected a model with one image input, got inputs {[vi.name for vi in inputs]}")
    return inputs[0]


def _graph_info(model: onnx.ModelProto) -> GraphInfo:
    out_rank = len(model.graph.output[0].type.tensor_type.shape.dim)
    decoder: Optional[Decoder] = {3: "yolox", 4: "fastestdet"}.get(out_rank)  # type: ignore[assignment]
    return GraphInfo(decoder, tuple(_dims(_image_input(model))))


def _read_model(path: Path, *, weights: bool) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path), load_external_data=weights)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise ModelLoadError(f"not an ONNX model file: {path} ({type(e).__name__}: {e})") from e
    if not model.graph.node or len(model.graph.input) == 0 or len(model.graph.output) == 0:
        raise ModelLoadError(f"not an ONNX model file (no graph inside): {path}")
    return model


def _choose(spec: ModelSpec, info: Optional[GraphInfo], path: object) -> tuple[Decoder, int]:
    """Decoder and input size, by one rule for the ingress and the replica: an explicit
    decoder takes `input_size` or its default (no file read); "auto" takes the decoder
    from the output rank (3: YOLOX, 4: FastestDet) and the size from `input_size`, the
    graph's square input, or the default, in that order."""
    if spec.decoder != "auto":
        return spec.decoder, spec.input_size or DEFAULT_SIZE[spec.decoder]
    if info is None or info.decoder is None:
        raise ModelLoadError(f"cannot tell the decoder of {path} from its output shape; set `decoder`")
    return info.decoder, spec.input_size or info.input_size or DEFAULT_SIZE[info.decoder]


def preprocessor_for(spec: ModelSpec) -> OnnxPreprocessor:
    """Cheap: with `decoder` set no file is read; with "auto" only the graph's declared
    shapes are (external weight data is not loaded)."""
    info, path = None, spec.path or spec.url
    if spec.decoder == "auto":
        path = resolve_weights(spec.path, spec.url, spec.sha256, what="ONNX model")
        info = _graph_info(_read_model(path, weights=False))
    return OnnxPreprocessor(*_choose(spec, info, path))


# ----------------------------------------------------------------------------- graph rewrite


class RewriteError(Exception):
    """The graph cannot be made batch-dynamic by this rewrite."""


# Largest relative error (per frame, L2) of a batch-2 forward against two batch-1
# forwards for which the rewrite still counts as right. Element-wise closeness was too
# strict: on CUDA (TF32 convolutions, algorithms chosen per batch size) a few of
# YOLOX's or FastestDet's outputs move past 1e-2 although the frame's output as a whole
# is within 2e-3 to 5e-3 of batch 1 (measured on an H200, BENCHMARKS.md); every model ran
# frame by frame on GPU. A rewrite that mixes frames is off by the distance between the
# two probe frames' outputs, O(0.1-1).
BATCH_TOLERANCE = 1e-2


def batch_error(batched: np.ndarray, single: np.ndarray) -> float:
    """The worst frame's relative L2 distance between a batched output and the same
    frames' outputs one at a time (both stacked on dim 0)."""
    worst = 0.0
    for b, s in zip(batched, single):
        scale = float(np.linalg.norm(s)) or 1.0
        worst = max(worst, float(np.linalg.norm(b.astype(np.float64) - s)) / scale)
    return worst


def _probe_pair(size: int) -> np.ndarray:
    """Two (3, size, size) uint8 frames unlike each other (full-range noise, and dim grey
    with mild noise), so a rewrite that mixes frames changes each one's output."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (3, size, size), dtype=np.uint8)
    grey = np.clip(96 + rng.normal(0, 12, (3, size, size)), 0, 255).astype(np.uint8)
    return np.stack([noise, grey])


def make_batch_dynamic(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` whose input batch dim is symbolic and whose constant Reshape
    targets no longer pin the batch; returns it and the number of Reshapes changed.

    A Reshape target with no -1 gets -1 in position 0 (the same shape for a batch of
    one, and it covers batch-folded targets such as ShuffleNet's (B*C/2, 2, H*W)); a
    target (1, ..., -1, ...) gets 0 ("copy the input's dim 0") where the input's dim 0
    is known to be 1. The caller must verify the result numerically.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    image = _image_input(m)
    inferred = onnx.shape_inference.infer_shapes(model)
    dim0 = {vi.name: (_dims(vi) or [None])[0] for vi in list(inferred.graph.value_info) + list(g.input)}
    inits = {t.name: t for t in g.initializer}
    const_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
    changed = 0
    for node in g.node:
        if node.op_type != "Reshape":
            continue
        shape = _const_value(node.input[1], inits, const_nodes)
        if shape is None:  # computed at run time from Shape ops: already follows the batch
            continue
        allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
        new = shape.copy()
        if -1 not in shape:
            new[0] = -1
        elif shape[0] == 1 and dim0.get(node.input[0]) == 1 and not allowzero:
            new[0] = 0
        else:
            continue
        name = f"{node.input[1]}__batch_dynamic_{changed}"
        g.initializer.append(numpy_helper.from_array(new.astype(np.int64), name))
        node.input[1] = name
        changed += 1
    for vi in [image, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    del g.value_info[:]  # stale batch-1 shapes would contradict the new ones
    return m, changed


def _const_value(name: str, inits: dict, const_nodes: dict) -> Optional[np.ndarray]:
    if name in inits:
        return numpy_helper.to_array(inits[name]).astype(np.int64)
    node = const_nodes.get(name)
    if node is not None and node.attribute and node.attribute[0].name == "value":
        return numpy_helper.to_array(node.attribute[0].t).astype(np.int64)
    return None


# ----------------------------------------------------------------------------- replica


class OnnxBackend:
    """A loaded ONNX detector: batched forward, decode, per-class NMS."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        conf_threshold: float = CONF_THRESHOLD,
        nms_iou: float = NMS_IOU,
    ) -> None:
        path = resolve_weights(spec.path, spec.url, spec.sha256, what="ONNX model")
        model = _read_model(path, weights=True)
        try:
            onnx.checker.check_model(model)
        except Exception as e:
            raise ModelLoadError(f"invalid ONNX model {path}: {e}") from e
        info = _graph_info(model)
        self.decoder, self.size = _choose(spec, info, path)
        _check_input(info.input_dims, self.size, self.decoder, path)
        self.conf_threshold = conf_threshold
        self.nms_iou = nms_iou
        self.name = f"onnx:{self.decoder}:{path.name}"
        self._providers = _providers(spec.num_gpus)
        self._threads = spec.num_threads
        self._input_name = _image_input(model).name
        self.batched, reason = self._open(model, path)
        if not self.batched:
            log.warning("%s: batched forward unavailable (%s); running frame by frame", self.name, reason)
        self.provider = self._session.get_providers()[0]
        wanted = [p if isinstance(p, str) else p[0] for p in self._providers]
        level = logging.WARNING if self.provider != wanted[0] else logging.INFO
        log.log(level, "%s: provider %s (asked for %s)", self.name, self.provider, wanted)
        try:
            probe = self.forward(np.zeros((1, 3, self.size, self.size), np.uint8))
        except Exception as e:
            raise ModelLoadError(f"{path} fails a {self.size}x{self.size} forward: {e}") from e
        self.num_classes = self._check_output(probe, path)
        self.names = _names(spec.names, self.num_classes)
        if self.decoder == "yolox":
            self._grid, self._strides = _yolox_grid(self.size)

    # -- loading

    def _session_for(self, model: onnx.ModelProto) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self._threads is not None:
            opts.intra_op_num_threads = self._threads
            opts.inter_op_num_threads = 1
        return ort.InferenceSession(model.SerializeToString(), opts, providers=self._providers)

    def _open(self, model: onnx.ModelProto, path: Path) -> tuple[bool, str]:
        """Open the batch-dynamic rewrite if it checks out, else the model as it is."""
        try:
            dynamic, changed = make_batch_dynamic(model)
            session = self._session_for(dynamic)
            feed = self._to_float(_probe_pair(self.size))
            both = session.run(None, {self._input_name: feed})[0]
            one = np.concatenate([session.run(None, {self._input_name: feed[i : i + 1]})[0] for i in range(2)])
            if both.shape != one.shape:
                raise RewriteError(f"batch-2 forward gave shape {both.shape}, two batch-1 forwards {one.shape}")
            error = batch_error(both, one)
            if error > BATCH_TOLERANCE:
                raise RewriteError(f"batch-2 forward differs from two batch-1 forwards (relative error {error:.2g})")
            self._session = session
            log.info("%s: batch-dynamic after rewriting %d Reshape(s)", self.name, changed)
            return True, ""
        except Exception as e:  # any failure of the rewrite means: run frame by frame
            reason = f"{type(e).__name__}: {e}"
        try:
            self._session = self._session_for(model)
        except Exception as e:
            raise ModelLoadError(f"onnxruntime cannot load {path}: {e}") from e
        return False, reason

    def _check_output(self, out: np.ndarray, path: Path) -> int:
        if self.decoder == "yolox":
            expected = sum((self.size // s) ** 2 for s in YOLOX_STRIDES)
            if out.ndim != 3 or out.shape[1] != expected or out.shape[2] <= 5:
                raise ModelLoadError(
                    f"{path}: YOLOX output should be (B, {expected}, 5+classes) for input "
                    f"{self.size}, got {out.shape}"
                )
            return out.shape[2] - 5
        if out.ndim != 4 or out.shape[1] <= 5:
            raise ModelLoadError(f"{path}: FastestDet output should be (B, 5+classes, H, W), got {out.shape}")
        return out.shape[1] - 5

    # -- inference

    def _to_float(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32)
        return x / np.float32(255.0) if self.decoder == "fastestdet" else x

    def forward(self, tensors: np.ndarray) -> np.ndarray:
        """Raw model output for a uint8 (B, 3, S, S) batch; its batch dim is checked."""
        feed = self._to_float(tensors)
        n = feed.shape[0]
        if self.batched:
            out = self._session.run(None, {self._input_name: feed})[0]
        else:
            out = np.concatenate(
                [self._session.run(None, {self._input_name: feed[i : i + 1]})[0] for i in range(n)]
            )
        if out.shape[0] != n:
            raise RuntimeError(f"{self.name}: output batch {out.shape[0]} for an input batch of {n}")
        return out

    def infer(self, batch: Sequence[ModelInput]) -> list[Detections]:
        if not batch:
            return []
        shape = (3, self.size, self.size)
        for item in batch:
            if item.tensor.shape != shape:
                raise ValueError(f"{self.name} expects tensors of shape {shape}, got {item.tensor.shape}")
        out = self.forward(np.stack([item.tensor for item in batch]))
        return [self.decode(o, item) for o, item in zip(out, batch)]

    def decode(self, out: np.ndarray, item: ModelInput) -> Detections:
        """One image's raw output -> detections after per-class NMS, keeping those
        scoring at least the input's own `min_score` (the session's threshold)."""
        threshold = score_floor(item, self.conf_threshold)
        if self.decoder == "yolox":
            boxes, scores, classes = self._decode_yolox(out, threshold)
        else:
            boxes, scores, classes = self._decode_fastestdet(out, threshold)
        if len(scores) == 0:
            return Detections()
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        keep = cv2.dnn.NMSBoxesBatched(
            xywh.tolist(), scores.tolist(), classes.tolist(), threshold, self.nms_iou
        )
        keep = sorted(np.ravel(keep).astype(int), key=lambda i: -scores[i])[:MAX_DETECTIONS]
        return Detections(
            tuple(
                Detection(item.to_frame_box(*boxes[i]), self.names[classes[i]], float(scores[i]))
                for i in keep
            )
        )

    def _decode_yolox(self, out: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows (dx, dy, log w, log h, obj, cls...) per grid cell of strides 8/16/32."""
        cls_scores = out[:, 5:] * out[:, 4:5]
        classes = cls_scores.argmax(axis=1)
        scores = cls_scores[np.arange(len(out)), classes]
        keep = scores >= threshold
        rows, stride = out[keep], self._strides[keep]
        centre = (rows[:, :2] + self._grid[keep]) * stride
        half = np.exp(np.minimum(rows[:, 2:4], 20.0)) * stride / 2
        return np.concatenate([centre - half, centre + half], 1), scores[keep], classes[keep]

    def _decode_fastestdet(self, out: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(obj, tx, ty, tw, th, cls...) per cell: centre = cell + tanh offset, size =
        sigmoid as a fraction of the input; score = obj * best class probability."""
        _, gh, gw = out.shape
        classes = out[5:].argmax(axis=0)
        scores = out[0] * np.take_along_axis(out[5:], classes[None], 0)[0]
        ys, xs = np.nonzero(scores >= threshold)
        cell = out[:, ys, xs]
        cx = (xs + np.tanh(cell[1])) / gw
        cy = (ys + np.tanh(cell[2])) / gh
        bw, bh = _sigmoid(cell[3]), _sigmoid(cell[4])
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * self.size
        return boxes, scores[ys, xs], classes[ys, xs]


def _check_input(dims: tuple[Optional[int], ...], size: int, decoder: str, path: Path) -> None:
    want = (3, size, size)
    if len(dims) != 4 or any(d is not None and d != w for d, w in zip(dims[1:], want)):
        hint = f"; set input_size={dims[2]}" if len(dims) == 4 and dims[2] and dims[2] == dims[3] else ""
        shown = "x".join("?" if d is None else str(d) for d in dims)
        raise ModelLoadError(
            f"{path} takes a {shown} input but the {decoder} preprocessor makes 1x3x{size}x{size}{hint}"
        )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _yolox_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    grids, strides = [], []
    for s in YOLOX_STRIDES:
        n = size // s
        ys, xs = np.mgrid[0:n, 0:n]
        grids.append(np.stack([xs.ravel(), ys.ravel()], 1))
        strides.append(np.full((n * n, 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


# onnxruntime's CUDA provider rounds convolutions through TF32 by default, and picks
# kernels per batch size, so a frame's output depended on its batch (relative error
# 2e-3 to 1e-2 on an H200) and failed the rewrite's check. In full FP32 a batch-2
# forward equals two batch-1 forwards exactly there (measured, BENCHMARKS.md); models of
# this size are not bound by the GPU's arithmetic.
CUDA_OPTIONS = {"use_tf32": "0"}


def _providers(num_gpus: float) -> list[str | tuple[str, dict[str, str]]]:
    available = ort.get_available_providers()
    if num_gpus > 0:
        if "CUDAExecutionProvider" in available:
            return [("CUDAExecutionProvider", CUDA_OPTIONS), "CPUExecutionProvider"]
        log.warning("num_gpus=%s but onnxruntime has no CUDAExecutionProvider (%s); using CPU", num_gpus, available)
    return ["CPUExecutionProvider"]


def _names(names_file: Optional[str], num_classes: int) -> tuple[str, ...]:
    if names_file is None:
        names = COCO80
    else:
        path = Path(names_file).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"class names file not found: {path}")
        names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(names) != num_classes:
        source = names_file or "the built-in COCO-80 list"
        raise ModelLoadError(f"the model has {num_classes} classes but {source} names {len(names)}")
    return names
