"""The `WebRTC` Gradio component: browser code plus its server side.

Data path: browser -> offer (`protocol`, `server`) -> session (`session`) -> frame
scheduler (`scheduler`) -> your fn -> annotate (`annotate`) -> outgoing track (`tracks`),
or with render="browser" the data channel (`overlay_channel`). mode="receive": the fn
makes the picture (`source`).

The names below load on first use (PEP 562), not on `import component`: the value
types (`component.detections`) need nothing beyond the standard library, and a process
that only uses them (a detector replica, a model backend) must not pay for Gradio,
aiortc and PyAV. `from component import WebRTC` imports the web stack as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from component.detections import Detection, Detections
    from component.encoding import VideoEncoding
    from component.ice import IceConfig, IceServer
    from component.protocol import ErrorCode, OfferAnswer, OfferError, OfferRequest
    from component.routes import mount_offer_routes, offer_router
    from component.scheduler import FrameInput, ScaledInputFn
    from component.policy import StreamPolicy
    from component.server import StreamConfig, StreamServer
    from component.stream_context import StreamContext, current_stream
    from component.webrtc import WebRTC

# Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "Detection": "component.detections",
    "Detections": "component.detections",
    "VideoEncoding": "component.encoding",
    "IceConfig": "component.ice",
    "IceServer": "component.ice",
    "ErrorCode": "component.protocol",
    "OfferAnswer": "component.protocol",
    "OfferError": "component.protocol",
    "OfferRequest": "component.protocol",
    "mount_offer_routes": "component.routes",
    "offer_router": "component.routes",
    "FrameInput": "component.scheduler",
    "ScaledInputFn": "component.scheduler",
    "StreamConfig": "component.server",
    "StreamPolicy": "component.policy",
    "StreamServer": "component.server",
    "StreamContext": "component.stream_context",
    "current_stream": "component.stream_context",
    "WebRTC": "component.webrtc",
}

__all__ = [
    "Detection",
    "Detections",
    "ErrorCode",
    "FrameInput",
    "IceConfig",
    "IceServer",
    "OfferAnswer",
    "OfferError",
    "OfferRequest",
    "ScaledInputFn",
    "StreamConfig",
    "StreamContext",
    "StreamPolicy",
    "StreamServer",
    "VideoEncoding",
    "WebRTC",
    "current_stream",
    "mount_offer_routes",
    "offer_router",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines `name` and cache the value on the package."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
