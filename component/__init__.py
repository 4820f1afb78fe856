"""The `WebRTC` Gradio component: browser code plus its server side.

Data path: browser -> offer (`protocol`, `server`) -> session (`session`) -> frame
scheduler (`scheduler`) -> your fn -> annotate (`annotate`) -> outgoing track (`tracks`),
or with render="browser" the data channel (`overlay_channel`). mode="receive": the fn
makes the picture (`source`).
"""

from component.detections import Detection, Detections
from component.encoding import VideoEncoding
from component.ice import IceConfig, IceServer
from component.protocol import ErrorCode, OfferAnswer, OfferError, OfferRequest
from component.routes import mount_offer_routes, offer_router
from component.scheduler import FrameInput, ScaledInputFn
from component.server import StreamConfig, StreamServer
from component.webrtc import WebRTC

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
    "StreamServer",
    "VideoEncoding",
    "WebRTC",
    "mount_offer_routes",
    "offer_router",
]
