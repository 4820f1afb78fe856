"""The ingress deployment: the page, the offer endpoint, and every session's peer
connection. Frames go out to the detector deployment as model-sized inputs and come
back as detections, which the session draws on its own outgoing track.

It is given one `IngressSettings` (built by `serve_app` from `AppArgs`) and imports
nothing from `serve_app`; the page it serves is `deployments/page.py`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import time
from typing import Any

import gradio as gr
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from component import Detections, ScaledInputFn, WebRTC, current_stream, mount_offer_routes
from component.gradio_queue import slow_idle_polling
from component.ice import claim_process_ice
from deployments.frame_packer import FramePacker
from deployments.ingress_settings import IngressSettings
from deployments.metrics import ServeStreamMetrics
from deployments.models import FrameFailure, ModelInput, build_preprocessor
from deployments.page import build_ui
from deployments.priority import media_priority

log = logging.getLogger("ray.serve")


def _log_through_serve() -> None:
    """Send the component's `rayrtc.*` logs to this replica's Serve log handlers, so
    session events land in Serve's per-replica logs (and its JSON format, if set)."""
    ours, serve_logger = logging.getLogger("rayrtc"), logging.getLogger("ray.serve")
    for handler in serve_logger.handlers:
        if handler not in ours.handlers:
            ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False


class ReplicaHeader:
    """ASGI middleware: every HTTP response names the replica that served it
    (`x-rayrtc-replica`), so sticky routing across ingress replicas can be checked."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app = app
        self.header = (b"x-rayrtc-replica", replica.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_marked(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_marked)


def _replica_id() -> str | None:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # not inside a Serve replica
        return None


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    def __init__(self, settings: IngressSettings, detector: DeploymentHandle) -> None:
        self.settings = settings
        # Host addresses, UDP port range and advertised address hold for the whole
        # replica process (aioice offers no per-connection option): the replica owns them.
        claim_process_ice(settings.ice, owner=f"Ingress replica {_replica_id()}")
        # Video first: this process carries the media, not Ray's worker niceness
        # (see `deployments.priority`).
        media_priority()
        self.preprocess = build_preprocessor(settings.model)
        # One detector call carries the frames sessions send within a few ms.
        self.packer: FramePacker[ModelInput, Detections | FrameFailure] = FramePacker(
            detector.detect_pack.remote, max_frames=settings.pack_max_frames, wait_s=settings.pack_wait_s
        )
        self.webrtc: WebRTC | None = None
        _log_through_serve()

    async def detect(self, model_input: ModelInput, threshold: float) -> Detections:
        """The stream fn: infer in a batched detector replica. `model_input` was made on
        a media thread by one scaled conversion of the decoded frame (`ScaledInputFn`);
        the session's threshold travels with it, so the model filters at it, and so
        does the session's queue key, so the detector serves sessions in a fair order
        (`component.fair_order`, `deployments.fair_batch`)."""
        threshold = float(threshold)
        stream = current_stream()
        priority = stream.queue_key if stream is not None else time.time()
        model_input = dataclasses.replace(model_input, min_score=threshold, priority=priority)
        timeout = self.settings.detector_timeout_s
        try:
            detections = await asyncio.wait_for(self.packer.submit(model_input), timeout)
        except asyncio.TimeoutError:
            # The packer cancels the call once every frame in it was given up on.
            raise TimeoutError(f"detector did not answer within {timeout} s") from None
        if isinstance(detections, FrameFailure):
            raise RuntimeError(f"detector could not process this frame: {detections.error}")
        return detections.above(threshold)

    def __serve_build_asgi_app__(self) -> Any:
        # Gradio objects hold locks and threads: they are built here, in the replica.
        demo, self.webrtc = build_ui(
            ScaledInputFn(self.detect, self.preprocess), self.settings, metrics=ServeStreamMetrics()
        )
        # The queue shares the media loop: see `component.gradio_queue`.
        slow_idle_polling(demo)
        server = self.webrtc.stream_server
        assert server is not None
        token, admin_token = self.settings.secret("auth_token"), self.settings.secret("admin_token")

        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI):
            yield
            await server.close_all("server_shutdown")
            await self.packer.close()

        app = FastAPI(lifespan=lifespan)
        replica = _replica_id()
        if replica is not None:
            app.add_middleware(ReplicaHeader, replica=replica)
        mount_offer_routes(app, server, auth_token=token, admin_token=admin_token)
        auth = (lambda _user, password: hmac.compare_digest(password, token)) if token else None
        return gr.mount_gradio_app(app, demo, path="/", auth=auth)
