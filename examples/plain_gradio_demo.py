"""The reference gradio_webrtc demo, on plain Gradio 6: no Ray, one process.

    python examples/plain_gradio_demo.py        # then open http://127.0.0.1:7860
    python examples/plain_gradio_demo.py --render browser   # the page draws the boxes

Same shape as the reference's object-detection demo: a `WebRTC` component, a
confidence slider and `image.stream(fn=detection, inputs=[image, conf_threshold],
outputs=[image], time_limit=...)`, ending in `demo.launch()`. Only the import changes.

`detection` is an ordinary sync function with a local model (OpenCV's bundled Haar face
detector, nothing to download). It runs on a worker thread, never on the event loop
that carries every session's media, and only on the newest camera frame: while it is
busy, newer frames replace older ones instead of queueing, so the video never lags.
It returns the faces it found (`Detections`), which are drawn on every camera frame,
so the video keeps the camera's frame rate however slow the model is; returning a
BGR image (like the reference) works too, at the model's rate. With `--render browser`
no video comes back at all: the faces travel on the data channel and the page draws
them over its own camera picture.

Browsers give the camera only to secure pages: open it on localhost, or serve it over
https. Across networks (NAT, firewalls) pass a TURN server as `rtc_configuration`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Literal, Optional, Union

import gradio as gr
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from component import Detections, IceConfig, WebRTC  # noqa: E402
from deployments.models import ModelSpec, build_preprocessor, load_backend  # noqa: E402

# The model: loaded once, used from worker threads (cv2 releases the GIL).
spec = ModelSpec(kind="haar")
preprocess = build_preprocessor(spec)
model = load_backend(spec)


def detection(image: np.ndarray, conf_threshold: float = 0.3) -> Detections:
    """`image` is the newest camera frame (BGR uint8); the slider's value arrives too."""
    found = model.infer([preprocess(image)])[0]
    return found.above(float(conf_threshold))


css = """.my-group {max-width: 640px !important; margin: 0 auto;}
.my-column {display: flex !important; justify-content: center !important; align-items: center !important;}"""


def build_demo(
    rtc_configuration: Union[IceConfig, dict, None] = None,
    time_limit: Optional[float] = 60,
    render: Literal["server", "browser"] = "server",
) -> gr.Blocks:
    with gr.Blocks(title="Face detection over WebRTC") as demo:
        gr.HTML("<h1 style='text-align: center'>Webcam face detection (WebRTC, plain Gradio)</h1>")
        with gr.Column(elem_classes=["my-column"]):
            with gr.Group(elem_classes=["my-group"]):
                image = WebRTC(
                    label="Stream", rtc_configuration=rtc_configuration, elem_id="webrtc", render=render
                )
                conf_threshold = gr.Slider(
                    label="Confidence Threshold",
                    minimum=0.0,
                    maximum=1.0,
                    step=0.05,
                    value=0.30,
                    elem_id="threshold",
                )
        image.stream(fn=detection, inputs=[image, conf_threshold], outputs=[image], time_limit=time_limit)
    return demo


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", choices=("server", "browser"), default="server")
    build_demo(render=parser.parse_args().render).launch(css=css)
else:
    demo = build_demo()
