"""The page: the reference demo's layout (a title, the WebRTC component, a
confidence-threshold slider), wired to whatever detect fn the ingress provides.

Built inside the ingress replica (Gradio objects hold locks and threads) from the
ingress's own `IngressSettings`; the stream's `StreamPolicy` goes to the component
whole.
"""

from __future__ import annotations

from typing import Optional

import gradio as gr

from component import WebRTC
from component.metrics import StreamMetrics
from component.scheduler import StreamFn
from deployments.ingress_settings import IngressSettings


def build_ui(
    detect: StreamFn, settings: IngressSettings, metrics: Optional[StreamMetrics] = None
) -> tuple[gr.Blocks, WebRTC]:
    title = settings.title
    with gr.Blocks(title=title) as demo:
        gr.HTML(f"<h1 style='text-align: center'>{title}</h1>", js_on_load=None)
        with gr.Column():
            webrtc = WebRTC(label="Stream", rtc_configuration=settings.ice, elem_id="webrtc", render=settings.render)
            threshold = gr.Slider(
                label="Confidence threshold",
                minimum=0.0,
                maximum=1.0,
                step=0.05,
                value=settings.default_threshold,
                elem_id="threshold",
            )
        webrtc.webrtc_stream(fn=detect, inputs=[webrtc, threshold], policy=settings.policy, metrics=metrics)
    return demo, webrtc
