"""Which model a detector runs, as one typed value shared by the app arguments,
the ingress (to preprocess) and the detector replicas (to load)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class ModelSpec(BaseModel):
    """Everything needed to build a preprocessor and load a backend.

    `kind` picks the backend: `haar` (embedded, offline default), `onnx`
    (onnxruntime, YOLOX/FastestDet decoders), `caffe` (OpenCV DNN MobileNet-SSD) or
    `callable` (`package.module:function`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["haar", "onnx", "caffe", "callable"] = "haar"
    path: Optional[str] = Field(None, description="weights file (onnx, caffemodel, haar xml)")
    url: Optional[str] = Field(None, description="download weights from here when `path` is unset")
    sha256: Optional[str] = Field(None, description="expected sha256 of downloaded weights")
    config: Optional[str] = Field(None, description="Caffe prototxt")
    names: Optional[str] = Field(None, description="class names file, one per line")
    decoder: Literal["auto", "yolox", "fastestdet"] = "auto"
    input_size: Optional[int] = Field(None, gt=0, description="square model input side")
    callable: Optional[str] = Field(None, description="import path `pkg.mod:fn`")
    batched: bool = Field(False, description="the callable takes a list of frames")
    num_gpus: float = Field(0.0, ge=0)
    num_threads: Optional[int] = Field(
        None, ge=1, description="CPU threads for inference (OpenCV, onnxruntime intra-op); None: one per core"
    )

    @property
    def one_pass_per_batch(self) -> bool:
        """Whether the backend runs a batch of frames in one forward pass (ONNX, a
        batched callable) rather than frame by frame (Haar, Caffe SSD, a per-frame
        callable): only the former get packed detector calls (why: the docstring of
        `deployments.frame_packer`). An ONNX graph whose batched forward fails its
        load-time check also runs frame by frame; that is rare, and costs only latency."""
        return self.kind == "onnx" or (self.kind == "callable" and self.batched)
