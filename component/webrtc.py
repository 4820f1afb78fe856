"""`WebRTC`: a Gradio 6 component that streams the user's camera to a Python fn and
plays back what the server sends, with the reference `gradio_webrtc` API.

It is a `gr.HTML` subclass (Gradio 6 custom HTML components need no Node build): the
browser code lives in `static/webrtc.js`, the offer travels through a Gradio server
function (so it works under any root path and in a plain `demo.launch()`), and the
same `StreamServer` can also be mounted as FastRTC's `POST /webrtc/offer`.
"""

from __future__ import annotations

import warnings
from importlib import resources
from typing import Any, Literal, Optional, Sequence, Union

import gradio as gr
from gradio.components.base import server

from component.ice import IceConfig, IceServer, claim_process_ice
from component.metrics import StreamMetrics
from component.overlay_channel import returns_only_images
from component.policy import StreamPolicy
from component.protocol import ErrorCode, OfferError
from component.scheduler import StreamFn
from component.server import StreamConfig, StreamServer

_JS = resources.files("component").joinpath("static/webrtc.js").read_text(encoding="utf-8")
_CSS = resources.files("component").joinpath("static/webrtc.css").read_text(encoding="utf-8")

# Keep this structure stable: Gradio re-renders it on every prop change and diffs it
# against the live DOM by position (see webrtc.js). The label is Gradio's own block
# label (`label`, `show_label`), drawn by the HTML block around this template. The
# overlay canvas (render="browser") is always there, hidden in server render: a node
# added by JS would be removed by the next re-render.
_TEMPLATE = """
<div class="rtc-root">
  <div class="rtc-stage" style="${height ? 'height: ' + (typeof height === 'number' ? height + 'px' : height) : 'aspect-ratio: 4 / 3'}; ${width ? 'width: ' + (typeof width === 'number' ? width + 'px' : width) : 'width: 100%'};">
    <video class="rtc-remote ${mode === 'send' || render_mode === 'browser' ? 'rtc-hidden' : ''}" autoplay playsinline muted></video>
    <video class="rtc-local ${mirror_webcam ? 'rtc-mirror' : ''} ${mode === 'receive' ? 'rtc-hidden' : ''} ${mode === 'send' || render_mode === 'browser' ? 'rtc-local-only' : ''}" autoplay playsinline muted></video>
    <canvas class="rtc-overlay ${render_mode === 'browser' ? '' : 'rtc-hidden'}"></canvas>
  </div>
  <div class="rtc-bar">
    <button class="rtc-toggle" type="button">Start</button>
    <span class="rtc-status" data-state="idle" role="status" aria-live="polite"></span>
    <span class="rtc-countdown"></span>
    <span class="rtc-stats ${show_stats ? '' : 'rtc-hidden'}"></span>
  </div>
</div>
"""

# Parameters of the reference's video component that mean nothing for a live stream.
_NO_EFFECT = ("show_share_button", "show_download_button", "min_length", "max_length", "streaming")


def _ice_config(rtc_configuration: Union[IceConfig, dict, None]) -> IceConfig:
    if rtc_configuration is None:
        return IceConfig()
    if isinstance(rtc_configuration, IceConfig):
        return rtc_configuration
    servers = rtc_configuration.get("iceServers", [])
    return IceConfig(
        servers=tuple(IceServer.model_validate(s) for s in servers),
        transport_policy=rtc_configuration.get("iceTransportPolicy", "all"),
    )


# Runs in the browser when a stream input changes, before the Python handler: hands
# the values to this page's WebRTC components (each picks its own session by id) so
# they go to the server on the session's data channel. Returns the values unchanged
# for the Python handler.
_INPUTS_RELAY_JS = """(...args) => {
  window.dispatchEvent(new CustomEvent('rayrtc-inputs', { detail: { index: FRAME_INDEX, args } }));
  return args;
}"""


def _stream_policy(policy: Optional[StreamPolicy], arguments: dict[str, Any]) -> StreamPolicy:
    """The policy `webrtc_stream` runs under: the one given whole, or one made from
    its keyword arguments; both at once would leave one of them silently unused."""
    if policy is None:
        return StreamPolicy(**arguments)
    overridden = [name for name, value in arguments.items() if value != StreamPolicy.default_of(name)]
    if overridden:
        raise TypeError(
            f"webrtc_stream got policy= and also {', '.join(overridden)}: set them on the policy instead"
        )
    return policy


class WebRTC(gr.HTML):
    """Live camera in, processed video out. Its value is the session's `webrtc_id`.

    Events: every `gr.HTML` event, among them `change` (a new session started: the
    value is its id) and `tick`, which the page fires once a second while a session
    is connected (as the reference component did), e.g.
    `webrtc.tick(poll_fn, inputs=[webrtc], outputs=[...])`.
    """

    # EVENTS are gr.HTML's (every Gradio event, "tick" among them). Not redefined here:
    # a class that defines EVENTS makes Gradio write a 2,000-line .pyi beside it.

    def __init__(
        self,
        value: Optional[str] = None,
        height: Union[int, str, None] = None,
        width: Union[int, str, None] = None,
        label: Optional[str] = None,
        every: Optional[float] = None,
        inputs: Any = None,
        show_label: Optional[bool] = None,
        container: bool = True,
        scale: Optional[int] = None,
        min_width: int = 160,
        interactive: Optional[bool] = None,
        visible: bool = True,
        elem_id: Optional[str] = None,
        elem_classes: Union[list[str], str, None] = None,
        render: Union[Literal["server", "browser"], bool] = "server",
        key: Union[int, str, None] = None,
        mirror_webcam: bool = True,
        show_share_button: Optional[bool] = None,
        show_download_button: Optional[bool] = None,
        min_length: Optional[int] = None,
        max_length: Optional[int] = None,
        streaming: bool = True,
        rtc_configuration: Union[IceConfig, dict, None] = None,
        mode: Literal["send-receive", "receive", "send"] = "send-receive",
        track_constraints: Optional[dict] = None,
        show_stats: bool = True,
    ) -> None:
        """
        Parameters:
            value: the session id (`webrtc_id`); set by the page when a session starts.
                Leave it None.
            height, width: size of the video area, in px (int) or any CSS length (str).
            label: the block's label; show_label: whether to show it (default True).
            every, inputs: passed to Gradio (they re-run a callable `value`); a stream
                has no use for them.
            render: where detections are drawn. "server" (the default): on the video
                the server sends back. "browser": the server sends only the detections,
                on the session's data channel, and the page draws them over its own
                camera picture: no video is encoded or sent back, and the picture has no
                network delay. Needs mode="send-receive" and a fn that returns
                `Detections`. A bool keeps Gradio's meaning of `render` (whether to place
                the component in the enclosing Blocks now), with "server" drawing.
            container, scale, min_width, visible, elem_id, elem_classes, key:
                as for every Gradio component (layout, CSS hooks, re-render identity).
            interactive: accepted; a stream is always interactive (False warns).
            mirror_webcam: mirror the local camera preview, as people expect of a
                selfie view. The processed video from the server is never mirrored (its
                labels would read backwards).
            show_share_button, show_download_button, min_length, max_length, streaming:
                accepted for compatibility with the reference video component; no effect
                on a live stream.
            rtc_configuration: ICE servers (STUN/TURN) and transport policy, as an
                `IceConfig` or the browser's RTCConfiguration dict; used by both ends.
                An `IceConfig` may also pin the server's host addresses, UDP port range
                and advertised address; those hold for the whole process, so
                `webrtc_stream` claims them and refuses a component whose settings
                differ from an earlier one's (see `component.ice.claim_process_ice`).
            mode: "send-receive" (camera in, video out), "receive" (server-made video
                only) or "send" (camera in, nothing back).
            track_constraints: getUserMedia video constraints, e.g.
                {"width": 1280, "height": 720, "frameRate": 30}.
            show_stats: show the live line under the video (received fps, round trip on
                the data channel, detections in the latest result).
        """
        if mode not in ("send-receive", "receive", "send"):
            raise ValueError(f"mode must be 'send-receive', 'receive' or 'send', not {mode!r}")
        render_mode = "server" if isinstance(render, bool) else render
        if render_mode not in ("server", "browser"):
            raise ValueError(f"render must be 'server' or 'browser' (or a bool), not {render!r}")
        if render_mode == "browser" and mode != "send-receive":
            raise ValueError(
                f"render='browser' draws on the page's own camera picture: it needs "
                f"mode='send-receive', not {mode!r}"
            )
        if interactive is False:
            warnings.warn("WebRTC(interactive=False) has no effect: a stream is always interactive")
        self.ice = _ice_config(rtc_configuration)
        self.mode = mode
        self.render_mode = render_mode
        self.mirror_webcam = mirror_webcam
        self.height = height
        self.width = width
        self.track_constraints = track_constraints
        self.show_stats = show_stats
        self.stream_server: Optional[StreamServer] = None
        super().__init__(
            value=value,
            label=label,
            html_template=_TEMPLATE,
            css_template=_CSS,
            js_on_load=_JS,
            apply_default_css=False,
            every=every,
            inputs=inputs,
            show_label=True if show_label is None else show_label,
            scale=scale,
            min_width=min_width,
            visible=visible,
            elem_id=elem_id,
            elem_classes=elem_classes,
            render=render if isinstance(render, bool) else True,
            key=key,
            container=container,
            height=height,
            width=width,
            mirror_webcam=mirror_webcam,
            mode=mode,
            render_mode=render_mode,
            track_constraints=track_constraints,
            show_stats=show_stats,
            # Never minted TURN credentials here: the page config lives for hours.
            rtc_configuration=self.ice.browser_configuration(mint=False),
            # True: the page fetches fresh TURN credentials (`ice_configuration`) per Start.
            ice_minted=self.ice.mints_credentials,
            # Set by webrtc_stream: the page shows a countdown and gives up connecting.
            time_limit=None,
            connect_timeout=None,
        )
        # Every prop the page's JS names also exists as an attribute: gr.HTML turns a
        # quoted name in js_on_load that is no attribute into an event listener.
        self.rtc_configuration = self.props["rtc_configuration"]
        self.ice_minted = self.props["ice_minted"]
        # Gradio builds the page config from the __init__ parameters' attributes; a
        # missing one would resolve to an event listener bound to this component, and
        # every page load would deep-copy the component, its stream server and the fn.
        self.inputs = None
        self.time_limit: Optional[float] = None
        self.connect_timeout: Optional[float] = None

    def webrtc_stream(
        self,
        fn: StreamFn,
        inputs: Sequence[gr.components.Component],
        stream_every: float = StreamPolicy.default_of("stream_every"),
        time_limit: Optional[float] = StreamPolicy.default_of("time_limit"),
        concurrency_limit: Optional[int] = StreamPolicy.default_of("concurrency_limit"),
        connect_timeout: float = StreamPolicy.default_of("connect_timeout"),
        *,
        policy: Optional[StreamPolicy] = None,
        metrics: Optional[StreamMetrics] = None,
    ) -> StreamServer:
        """Run `fn` on this component's live frames.

        `inputs` lists this component (its position is where `fn` receives the frame,
        a BGR uint8 array) and any other components whose current values `fn` receives
        for that session, e.g. a threshold slider. `fn` may be async (awaited on the
        media loop: it must not block) or sync (run in a worker thread). It returns
        `Detections` (drawn on every new camera frame, so output keeps the camera's
        rate), a BGR image (sent as is), or None.

        With `render="browser"` the fn must return `Detections` (or None): a fn
        annotated to return only images is refused here, and one that returns an image
        anyway ends its session with a message on the page.

        `stream_every` is the least time between two calls for one session;
        `time_limit` ends each session that many seconds after it connects;
        `concurrency_limit` caps sessions in this process (offers beyond it are
        answered `concurrency_limit_reached`); `connect_timeout` gives up on a session
        that has not connected by then. Their defaults are `StreamPolicy`'s.

        `policy` instead sets all of these and the rest a host may choose (idle timeout,
        offer rate limit, trusted proxies, outgoing video encoding), as one
        `StreamPolicy`; give it or those keyword arguments, not both. `metrics`
        receives the stream's counters (e.g. Ray Serve's, in the ingress).
        """
        policy = _stream_policy(
            policy,
            {"stream_every": stream_every, "time_limit": time_limit,
             "concurrency_limit": concurrency_limit, "connect_timeout": connect_timeout},
        )
        inputs = list(inputs)
        if self not in inputs:
            raise ValueError("webrtc_stream inputs must include the WebRTC component itself")
        if self.stream_server is not None:
            raise RuntimeError("webrtc_stream was already called on this component")
        if self.render_mode == "browser" and returns_only_images(fn):
            raise ValueError(
                f"{getattr(fn, '__name__', fn)!r} returns images, but render='browser' only "
                "sends detections (the page draws them on its own camera picture): return "
                "Detections, or use render='server'"
            )
        if self.ice.sets_process_settings:
            # aioice takes these per process: in plain Gradio the first component that sets
            # them owns them, and a different setting fails here, before launch.
            claim_process_ice(self.ice, owner=f"WebRTC(label={self.label!r}, elem_id={self.elem_id!r})")
        frame_index = inputs.index(self)
        others = [c for c in inputs if c is not self]
        self.stream_server = StreamServer(
            StreamConfig(fn=fn, policy=policy, frame_index=frame_index, render=self.render_mode),
            ice=self.ice,
            default_inputs=[getattr(c, "value", None) for c in others],
            metrics=metrics,
        )
        self.props["time_limit"] = self.time_limit = policy.time_limit
        self.props["connect_timeout"] = self.connect_timeout = policy.connect_timeout
        # The stream's extra inputs reach the session only on its own data channel
        # (DTLS ties it to the browser that opened it): this event runs in the page
        # alone, handing the values to the component's JS. A server-side handler would
        # be a public API that lets anyone who knows an id change someone's session.
        relay = _INPUTS_RELAY_JS.replace("FRAME_INDEX", str(frame_index))
        gr.on(
            triggers=[c.change for c in inputs],
            fn=None,
            inputs=inputs,
            outputs=None,
            js=relay,
            queue=False,
            show_progress="hidden",
            api_visibility="private",
        )
        return self.stream_server

    def stream(  # type: ignore[override]
        self,
        fn: StreamFn,
        inputs: Sequence[gr.components.Component],
        outputs: Optional[Sequence[gr.components.Component]] = None,
        js: Optional[str] = None,
        concurrency_limit: Union[int, None, Literal["default"]] = "default",
        concurrency_id: Optional[str] = None,
        time_limit: Optional[float] = StreamPolicy.default_of("time_limit"),
        trigger: Any = None,
        stream_every: float = StreamPolicy.default_of("stream_every"),
    ) -> StreamServer:
        """The reference's `image.stream(fn=..., inputs=[image, ...], outputs=[image],
        time_limit=...)`, so its demos run unchanged: the same as `webrtc_stream`.

        `outputs` may only name this component (the processed video always comes back
        on it); `js`, `concurrency_id` and `trigger` are accepted and ignored.
        """
        if outputs is not None and any(o is not self for o in outputs):
            raise ValueError("WebRTC.stream outputs can only be the WebRTC component itself")
        return self.webrtc_stream(
            fn,
            inputs,
            stream_every=stream_every,
            time_limit=time_limit,
            concurrency_limit=(
                StreamPolicy.default_of("concurrency_limit") if concurrency_limit == "default" else concurrency_limit
            ),
        )

    @server
    async def offer(self, body: Any, request: gr.Request = None) -> dict:  # type: ignore[assignment]
        """The browser's offer, through Gradio's component_server API. Gradio fills in
        `request`; its client address keys the server's per-client offer rate limit,
        as on `POST /webrtc/offer`."""
        if self.stream_server is None:
            return OfferError(ErrorCode.INVALID_OFFER, "this component has no webrtc_stream").body()
        peer = getattr(getattr(request, "client", None), "host", None)
        headers = getattr(request, "headers", None) or {}
        client = self.stream_server.client_address.resolve(peer, headers)
        try:
            answer = await self.stream_server.offer(body, client=client)
        except OfferError as err:
            return err.body()
        return answer.model_dump()

    @server
    async def ice_configuration(self, body: Any = None) -> dict:  # type: ignore[assignment]
        """The RTCConfiguration for one Start, with TURN credentials minted now (the
        TURN REST scheme): short-lived, never in the page config, fresh even on a page
        left open longer than their lifetime."""
        return self.ice.browser_configuration()

    def api_info(self) -> dict[str, Any]:
        return {"type": "string", "title": "webrtc_id"}
