"""The reference: `gradio_webrtc` 0.0.31's object-detection demo, run in the reference's
own virtualenv (gradio 5.45) by bench/reference.py. Not importable from the main env.

Same code shape as the demo (`WebRTC` + a threshold `Slider`, `image.stream(fn=detection,
inputs=[image, conf_threshold], outputs=[image])`), with the SAME detector our app
serves: this project's model backends (`deployments/models`), loaded from the repo by
path, called on every frame inside `detection`, which draws the boxes and returns the
frame. Two deliberate departures, both to let the bench measure it at all:
- `concurrency_limit` is raised (the component's default of 1 admits one session);
- no `time_limit` (the demo's 10 s would end every step early).

Loopback only: aioice gathers on 127.0.0.1 alone, and every `RTCPeerConnection` built
without a configuration gets an empty one (aiortc would otherwise add Google's STUN).

    python bench/reference_app.py --repo ROOT --port P --model haar|onnx [--model-path F]

Adds `GET /bench/stats` -> {"calls", "connections", "pid"} for the load generator.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# --- loopback only, before anything creates a peer connection ----------------------
import aioice.ice  # noqa: E402
import aiortc  # noqa: E402
from aiortc import RTCConfiguration  # noqa: E402


def _loopback_only(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


aioice.ice.get_host_addresses = _loopback_only
_original_pc_init = aiortc.RTCPeerConnection.__init__


def _pc_init(self, configuration=None):  # type: ignore[no-untyped-def]
    _original_pc_init(self, configuration if configuration is not None else RTCConfiguration(iceServers=[]))


aiortc.RTCPeerConnection.__init__ = _pc_init  # gradio_webrtc calls RTCPeerConnection()

import argparse  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402


def load_project_models(repo: Path):
    """Import this project's model backends and box drawing from the repo. They need
    only numpy, OpenCV, pydantic and onnxruntime (tests/test_layering.py keeps it so),
    so they load beside this venv's Gradio 5 without touching our Gradio 6 component."""
    sys.path.insert(0, str(repo))
    from component.annotate import draw_detections
    from deployments.models import ModelSpec, build_preprocessor, load_backend

    return ModelSpec, build_preprocessor, load_backend, draw_detections


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", default="haar", choices=["haar", "onnx"])
    ap.add_argument("--model-path")
    ap.add_argument("--concurrency-limit", type=int, default=1000)
    args = ap.parse_args()

    ModelSpec, build_preprocessor, load_backend, draw_detections = load_project_models(args.repo)
    spec = ModelSpec(kind=args.model, path=args.model_path)
    preprocess = build_preprocessor(spec)
    backend = load_backend(spec)

    import gradio as gr
    import uvicorn
    from fastapi import FastAPI
    from gradio_webrtc import WebRTC

    calls = 0
    lock = threading.Lock()

    def detection(image, conf_threshold=0.3):
        nonlocal calls
        found = backend.infer([preprocess(image)])[0].above(float(conf_threshold))
        draw_detections(image, found)
        with lock:
            calls += 1
        return image

    css = """.my-group {max-width: 600px !important; max-height: 600px !important;}
             .my-column {display: flex !important; justify-content: center !important; align-items: center !important;}"""
    with gr.Blocks(css=css) as demo:
        gr.HTML("<h1 style='text-align: center'>Object detection (gradio_webrtc reference)</h1>")
        with gr.Column(elem_classes=["my-column"]):
            with gr.Group(elem_classes=["my-group"]):
                image = WebRTC(label="Stream", rtc_configuration=None)
                conf_threshold = gr.Slider(
                    label="Confidence Threshold", minimum=0.0, maximum=1.0, step=0.05, value=0.30
                )
            image.stream(
                fn=detection,
                inputs=[image, conf_threshold],
                outputs=[image],
                concurrency_limit=args.concurrency_limit,
            )

    app = FastAPI()

    @app.get("/bench/stats")
    def stats() -> dict:
        return {"calls": calls, "connections": len(image.connections), "pid": os.getpid(), "model": backend.name}

    app = gr.mount_gradio_app(app, demo, path="/", server_name="127.0.0.1", server_port=args.port, ssr_mode=False)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
