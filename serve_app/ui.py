"""The page: the reference demo's layout (a title, the WebRTC component, a
confidence-threshold slider), wired to whatever detect fn the caller provides."""

from __future__ import annotations

from typing import Literal, Optional

import gradio as gr

from component import WebRTC
from component.ice import IceConfig
from component.scheduler import StreamFn


def build_ui(
    detect: StreamFn,
    *,
    title: str,
    ice: IceConfig,
    time_limit: Optional[float],
    stream_every: float,
    max_sessions: int,
    connect_timeout: float,
    default_threshold: float,
    render: Literal["server", "browser"] = "server",
) -> tuple[gr.Blocks, WebRTC]:
    with gr.Blocks(title=title) as demo:
        gr.HTML(f"<h1 style='text-align: center'>{title}</h1>", js_on_load=None)
        with gr.Column():
            webrtc = WebRTC(label="Stream", rtc_configuration=ice, elem_id="webrtc", render=render)
            threshold = gr.Slider(
                label="Confidence threshold",
                minimum=0.0,
                maximum=1.0,
                step=0.05,
                value=default_threshold,
                elem_id="threshold",
            )
        webrtc.webrtc_stream(
            fn=detect,
            inputs=[webrtc, threshold],
            stream_every=stream_every,
            time_limit=time_limit,
            concurrency_limit=max_sessions,
            connect_timeout=connect_timeout,
        )
    return demo, webrtc
