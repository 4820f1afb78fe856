"""The `WebRTC` component in Python: the reference's constructor, its config for the
page, events, and the server function the page posts its offer to. No browser, no Ray."""

from __future__ import annotations

import re
import warnings

import gradio as gr
import pytest

from component import Detections, IceConfig, IceServer, WebRTC


def _every_parameter() -> dict:
    return dict(
        value=None,
        height=360,
        width="80%",
        label="Camera",
        every=None,
        inputs=None,
        show_label=False,
        container=False,
        scale=2,
        min_width=320,
        interactive=True,
        visible=True,
        elem_id="cam",
        elem_classes=["one", "two"],
        render=True,
        key="cam-key",
        mirror_webcam=False,
        show_share_button=True,
        show_download_button=True,
        min_length=1,
        max_length=60,
        streaming=True,
        rtc_configuration={
            "iceServers": [{"urls": "turn:turn.example.org:3478", "username": "u", "credential": "c"}],
            "iceTransportPolicy": "relay",
        },
        mode="send-receive",
        track_constraints={"width": 1280, "height": 720, "frameRate": 30},
        show_stats=False,
    )


def test_constructor_takes_every_reference_parameter():
    with gr.Blocks():
        webrtc = WebRTC(**_every_parameter())
    config = webrtc.get_config()
    props = config["props"]
    # Block-level parameters go where Gradio reads them.
    assert config["label"] == "Camera"
    assert config["show_label"] is False
    assert config["container"] is False
    assert config["scale"] == 2
    assert config["min_width"] == 320
    assert config["visible"] is True
    assert config["elem_id"] == "cam"
    assert config["elem_classes"] == ["one", "two"]
    assert config["key"] == "cam-key"
    # Stream parameters reach the page's JS as props.
    assert props["height"] == 360 and props["width"] == "80%"
    assert props["mirror_webcam"] is False
    assert props["mode"] == "send-receive"
    assert props["track_constraints"] == {"width": 1280, "height": 720, "frameRate": 30}
    assert props["show_stats"] is False
    assert props["rtc_configuration"] == {
        "iceServers": [{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "c"}],
        "iceTransportPolicy": "relay",
    }
    # ...and the same ICE servers are what the server's aiortc uses.
    assert webrtc.ice.transport_policy == "relay"
    assert webrtc.ice.servers[0].urls == ["turn:turn.example.org:3478"]
    # Static credentials: nothing to mint, the page uses the config as is.
    assert props["ice_minted"] is False
    assert sorted(config["server_fns"]) == ["ice_configuration", "offer"]


def test_defaults_match_the_reference():
    with gr.Blocks():
        webrtc = WebRTC()
    config = webrtc.get_config()
    assert config["show_label"] is True
    assert config["container"] is True
    assert config["props"]["mirror_webcam"] is True
    assert config["props"]["mode"] == "send-receive"
    assert config["props"]["show_stats"] is True
    # No ICE servers unless configured: nothing is ever sent to a public STUN server.
    assert config["props"]["rtc_configuration"] == {"iceServers": [], "iceTransportPolicy": "all"}
    assert webrtc.ice.rtc_configuration().iceServers == []


def test_ice_config_object_is_accepted():
    ice = IceConfig(servers=(IceServer(urls=["stun:stun.example.org"]),), host_addresses=("127.0.0.1",))
    with gr.Blocks():
        webrtc = WebRTC(rtc_configuration=ice)
    assert webrtc.ice is ice
    assert webrtc.props["rtc_configuration"]["iceServers"] == [{"urls": ["stun:stun.example.org"]}]


def test_bad_mode_and_interactive_false():
    with pytest.raises(ValueError, match="mode"):
        WebRTC(mode="sideways")  # type: ignore[arg-type]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gr.Blocks():
            WebRTC(interactive=False)
    assert any("interactive=False" in str(w.message) for w in caught)


def test_tick_and_change_events_are_registered():
    with gr.Blocks() as demo:
        webrtc = WebRTC()
        out = gr.Number()
        webrtc.tick(lambda: 1, outputs=[out])
        webrtc.change(lambda v: 2, inputs=[webrtc], outputs=[out])
    triggers = {
        t[1] for dep in demo.config["dependencies"] for t in dep["targets"] if t[0] == webrtc._id
    }
    assert {"tick", "change"} <= triggers
    # The page fires tick (once a second while connected).
    assert re.search(r"trigger\('tick'\)", webrtc.js_on_load)


def test_webrtc_stream_sets_the_page_limits_and_checks_inputs():
    with gr.Blocks():
        webrtc = WebRTC()
        slider = gr.Slider(0, 1, value=0.4)
        with pytest.raises(ValueError, match="must include the WebRTC component"):
            webrtc.webrtc_stream(lambda f, t: None, inputs=[slider])
        server = webrtc.webrtc_stream(
            lambda f, t: Detections(), inputs=[webrtc, slider], time_limit=30, connect_timeout=7,
            concurrency_limit=3,
        )
        with pytest.raises(RuntimeError, match="already"):
            webrtc.webrtc_stream(lambda f, t: None, inputs=[webrtc, slider])
    assert webrtc.props["time_limit"] == 30
    assert webrtc.props["connect_timeout"] == 7
    # The page's prop names are real attributes (not gr.HTML's made-up event listeners).
    for name in ("time_limit", "connect_timeout", "rtc_configuration"):
        assert not callable(getattr(webrtc, name)), name
    assert server.default_inputs == (0.4,)
    assert server.policy.concurrency_limit == 3


def test_webrtc_stream_takes_a_whole_policy():
    from component.policy import StreamPolicy

    policy = StreamPolicy(time_limit=20, connect_timeout=6, concurrency_limit=2, offer_rate=1.0)
    with gr.Blocks():
        webrtc = WebRTC()
        server = webrtc.webrtc_stream(lambda f: Detections(), inputs=[webrtc], policy=policy)
        other = WebRTC()
        with pytest.raises(TypeError, match="time_limit"):
            other.webrtc_stream(lambda f: None, inputs=[other], policy=policy, time_limit=5)
    assert server.policy is policy
    assert (webrtc.props["time_limit"], webrtc.props["connect_timeout"]) == (20, 6)
    assert other.stream_server is None


def test_keyword_defaults_are_the_policys():
    from component.policy import StreamPolicy

    with gr.Blocks():
        webrtc = WebRTC()
        server = webrtc.webrtc_stream(lambda f: None, inputs=[webrtc])
    assert server.policy == StreamPolicy()
    with pytest.raises(ValueError, match="stream_every"):
        StreamPolicy(stream_every=-1)


async def test_offer_server_function_answers_failures_in_the_protocol_shape():
    with gr.Blocks():
        bare = WebRTC()
        webrtc = WebRTC()
        webrtc.webrtc_stream(lambda f: None, inputs=[webrtc], concurrency_limit=1)
    no_stream = await bare.offer({"sdp": "v=0", "type": "offer", "webrtc_id": "a"})
    assert no_stream["status"] == "failed" and no_stream["meta"]["error"] == "invalid_offer"
    bad = await webrtc.offer({"sdp": "v=0\r\n", "type": "offer", "webrtc_id": "a b"})
    assert bad == {"status": "failed", "meta": {"error": "invalid_offer", "message": bad["meta"]["message"]}}
    too_big = await webrtc.offer("x" * (70 * 1024))
    assert too_big["meta"]["error"] == "offer_too_large"


def test_page_js_has_no_bare_quoted_attribute_names():
    """Gradio turns a quoted word in js_on_load into an event name on the component
    when Python code looks that name up and it is no attribute; the media kind was
    one such word. Keep this list of known traps out of the JS."""
    js = WebRTC().js_on_load
    for word in ("video", "audio", "canvas"):
        assert not re.search(rf"['\"`]{word}['\"`]", js), word


def test_every_error_code_has_a_message_in_the_page():
    from component.protocol import ErrorCode

    js = WebRTC().js_on_load
    messages = js[js.index("const MESSAGES") : js.index("};", js.index("const MESSAGES"))]
    for code in ErrorCode:
        assert re.search(rf"^\s*{code.value}:", messages, re.M), f"no page message for {code.value}"
    for reason in ("time_limit", "connect_timeout", "permission_denied", "ice_failed", "server_shutdown"):
        assert re.search(rf"^\s*{reason}:", messages, re.M), reason


def test_reference_stream_signature_runs_the_stream():
    with gr.Blocks():
        image = WebRTC(label="Stream")
        threshold = gr.Slider(0, 1, value=0.3)
        other = gr.Number()
        with pytest.raises(ValueError, match="outputs"):
            image.stream(fn=lambda f, t: None, inputs=[image, threshold], outputs=[other])
        server = image.stream(
            fn=lambda f, t: None, inputs=[image, threshold], outputs=[image], time_limit=10,
            concurrency_limit="default",
        )
    assert image.stream_server is server
    assert server.policy.time_limit == 10 and server.policy.concurrency_limit is None
    assert image.props["time_limit"] == 10


def test_input_changes_also_go_through_the_page():
    with gr.Blocks() as demo:
        webrtc = WebRTC()
        slider = gr.Slider(0, 1, value=0.4)
        webrtc.webrtc_stream(lambda f, t: None, inputs=[webrtc, slider])
    dep = next(d for d in demo.config["dependencies"] if d["js"] and "rayrtc-inputs" in d["js"])
    # No output: an update to the component would make Gradio rebuild it per session.
    assert dep["outputs"] == []
    # Browser-only: no server handler, so no public API that could change a session.
    assert not dep["backend_fn"] and dep["api_visibility"] == "private"
    assert "rayrtc-inputs" in dep["js"] and "index: 0" in dep["js"]
    assert "rayrtc-inputs" in webrtc.js_on_load


def test_render_choice_reaches_the_page_and_keeps_gradios_render_flag():
    browser = WebRTC(render="browser")
    assert browser.render_mode == "browser" and browser.props["render_mode"] == "browser"
    assert callable(browser.render)  # Gradio's own method is untouched
    assert "rtc-overlay" in browser.html_template
    assert WebRTC().props["render_mode"] == "server"
    # A bool keeps Gradio's meaning: place the component now or later.
    with gr.Blocks() as demo:
        later = WebRTC(render=False)
    assert later.render_mode == "server" and later._id not in demo.blocks
    assert "render" not in WebRTC(render="browser").get_config()
    with pytest.raises(ValueError, match="render must be"):
        WebRTC(render="gpu")  # type: ignore[arg-type]
    for mode in ("send", "receive"):
        with pytest.raises(ValueError, match="send-receive"):
            WebRTC(render="browser", mode=mode)


def test_browser_render_refuses_a_fn_that_returns_images_at_setup():
    import numpy as np
    from numpy.typing import NDArray

    def flip(frame: np.ndarray) -> np.ndarray:
        return frame[:, ::-1]

    def maybe(frame: np.ndarray) -> "NDArray[np.uint8] | None":
        return None

    def faces(frame: np.ndarray) -> Detections:
        return Detections()

    for fn in (flip, maybe):
        with gr.Blocks():
            webrtc = WebRTC(render="browser")
            with pytest.raises(ValueError, match="returns images.*render='server'"):
                webrtc.webrtc_stream(fn, inputs=[webrtc])
    # Detections, or no annotation at all (caught by its first result instead), pass.
    for fn in (faces, lambda frame: None):
        with gr.Blocks():
            webrtc = WebRTC(render="browser")
            assert webrtc.webrtc_stream(fn, inputs=[webrtc]).config.render == "browser"
    # Server render takes images as before.
    with gr.Blocks():
        webrtc = WebRTC()
        assert webrtc.webrtc_stream(flip, inputs=[webrtc]).config.render == "server"


def test_the_page_explains_an_image_fn_in_browser_render():
    from component.overlay_channel import IMAGES_IN_BROWSER_RENDER

    js = WebRTC().js_on_load
    assert re.search(rf"^\s*{IMAGES_IN_BROWSER_RENDER}: 'Session ended: .*render=\"server\"", js, re.M)
