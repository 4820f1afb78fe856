"""A Python peer that speaks the offer protocol: for tests, benchmarks and load
generation. It streams an image (optionally with a moving patch and the frame number
coded in its pixels) and reads back what the server sends.

Every peer connection here is built with an explicit ICE configuration, so nothing
is ever sent to a public STUN server.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from component.ice import IceConfig
from tests.support.pacing import TIME_BASE, FramePacer

ID_BITS = 20
ID_BLOCK = 16  # px per bit; survives VP8 at any sane bitrate


def stamp_frame_id(image: np.ndarray, frame_id: int) -> None:
    """Write `frame_id` as black/white blocks along the bottom-left edge."""
    h = image.shape[0]
    for bit in range(ID_BITS):
        value = 255 if (frame_id >> bit) & 1 else 0
        image[h - ID_BLOCK : h, bit * ID_BLOCK : (bit + 1) * ID_BLOCK] = value


def read_frame_id(image: np.ndarray) -> int:
    h = image.shape[0]
    frame_id = 0
    c = ID_BLOCK // 2
    for bit in range(ID_BITS):
        patch = image[h - ID_BLOCK + c - 3 : h - ID_BLOCK + c + 3, bit * ID_BLOCK + c - 3 : bit * ID_BLOCK + c + 3]
        if patch.mean() > 127:
            frame_id |= 1 << bit
    return frame_id


class ImageTrack(MediaStreamTrack):
    """Sends `image` (BGR) at `fps`; each frame may carry its number in its pixels."""

    kind = "video"

    def __init__(self, image: np.ndarray, fps: float = 30.0, stamp_ids: bool = False) -> None:
        super().__init__()
        self.image = image
        self.fps = fps
        self.stamp_ids = stamp_ids
        self.sent = 0
        self.sent_at: dict[int, float] = {}
        self.pacer = FramePacer(fps)

    def compose(self, index: int) -> np.ndarray:
        """The pixels of frame `index`; override to animate (keep the id stamp)."""
        if not self.stamp_ids:
            return self.image
        image = self.image.copy()
        stamp_frame_id(image, index)
        return image

    def on_sent(self, index: int, at: float) -> None:
        """Remember when frame `index` left (the last 1000, for round-trip times)."""
        if self.stamp_ids:
            self.sent_at[index] = at
            if len(self.sent_at) > 1000:
                self.sent_at.pop(next(iter(self.sent_at)))

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self.pacer.wait(self.sent)
        index = self.sent
        frame = VideoFrame.from_ndarray(self.compose(index), format="bgr24")
        frame.pts, frame.time_base = self.pacer.pts(index), TIME_BASE
        self.on_sent(index, time.monotonic())
        self.sent += 1
        return frame


class OfferRejected(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"offer rejected with HTTP {status}: {body}")
        self.status = status
        self.body = body


@dataclass
class Received:
    count: int = 0
    first_at: Optional[float] = None
    last_at: Optional[float] = None
    latest: Optional[VideoFrame] = None
    latencies: list[float] = field(default_factory=list)

    def fps(self) -> float:
        if self.count < 2 or self.first_at is None or self.last_at is None:
            return 0.0
        return (self.count - 1) / max(self.last_at - self.first_at, 1e-6)


class StreamClient:
    """One browser-like session against `base_url`."""

    def __init__(
        self,
        base_url: str,
        image: np.ndarray,
        fps: float = 30.0,
        ice: Optional[IceConfig] = None,
        webrtc_id: Optional[str] = None,
        measure_latency: bool = False,
        offer_path: str = "/webrtc/offer",
        headers: Optional[dict[str, str]] = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.offer_path = offer_path
        # e.g. {"x-session-id": webrtc_id} for sticky routing, or an Authorization header.
        self.headers = dict(headers or {})
        # Applied to the answer SDP before aiortc sees it, e.g. to drop candidates a
        # test must never contact.
        self.answer_filter: Optional[Callable[[str], str]] = None
        # Of the offer's HTTP answer (e.g. which replica served it), once connect() ran.
        self.offer_response_headers: httpx.Headers = httpx.Headers()
        self.webrtc_id = webrtc_id or uuid.uuid4().hex
        self.ice = ice or IceConfig()
        self.track = ImageTrack(image, fps, stamp_ids=measure_latency)
        self.measure_latency = measure_latency
        self.pc = RTCPeerConnection(configuration=self.ice.rtc_configuration(role="client"))
        self.channel = self.pc.createDataChannel("control")
        self.messages: list[dict] = []
        self.ended = asyncio.Event()
        self.received = Received()
        self._new_frame = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    def _on_message(self, message: Any) -> None:
        try:
            data = json.loads(message)
        except (TypeError, ValueError):
            return
        self.messages.append(data)
        if data.get("type") == "end":
            self.ended.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        r = self.received
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                self.on_frame(track, frame, now)
                r.count += 1
                r.first_at = r.first_at or now
                r.last_at = now
                r.latest = frame
                event, self._new_frame = self._new_frame, asyncio.Event()
                event.set()
        except MediaStreamError:
            pass

    def on_frame(self, track: MediaStreamTrack, frame: VideoFrame, now: float) -> None:
        """A returned frame arrived (before it is counted): the round trip of its stamped
        id, when measuring. Subclasses log what they need here."""
        if self.measure_latency:
            sent = self.track.sent_at.get(read_frame_id(frame.to_ndarray(format="gray")))
            if sent is not None:
                self.received.latencies.append(now - sent)

    # -- offer / answer: the steps a subclass may replace (another offer endpoint, a
    # -- pre-encoded track) while `connect` stays one sequence ------------------------
    async def offer_sdp(self) -> str:
        """Add the outgoing track and return the local offer."""
        self.pc.addTrack(self.track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    def offer_request(self, sdp: str) -> tuple[str, dict[str, Any]]:
        """(path, JSON body) of the offer's POST."""
        return self.offer_path, {"sdp": sdp, "type": "offer", "webrtc_id": self.webrtc_id}

    def is_answer(self, status: int, data: Any) -> bool:
        return status == 200 and isinstance(data, dict) and "sdp" in data

    async def apply_answer(self, answer: dict) -> None:
        sdp = self.answer_filter(answer["sdp"]) if self.answer_filter else answer["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=answer["type"]))

    async def connect(self, timeout: float = 20.0) -> dict:
        """Post the offer and apply the answer; raises `OfferRejected` (after closing the
        peer connection) on anything but an answer."""
        path, body = self.offer_request(await self.offer_sdp())
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            resp = await http.post(self.base_url + path, json=body, headers=self.headers)
        self.offer_response_headers = resp.headers
        data = resp.json() if resp.content else None
        if not self.is_answer(resp.status_code, data):
            await self.close()
            raise OfferRejected(resp.status_code, data)
        await self.apply_answer(data)
        return data

    async def wait_connected(self, timeout: float = 20.0) -> None:
        """Until media flows and the control channel is open (as the page waits)."""
        deadline = time.monotonic() + timeout
        while self.pc.connectionState != "connected" or self.channel.readyState != "open":
            if self.pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
                raise TimeoutError(f"connection state {self.pc.connectionState}")
            await asyncio.sleep(0.05)

    async def wait_frames(self, count: int, timeout: float = 20.0) -> None:
        """Wait until `count` more frames arrived."""
        await self._wait_count(lambda: self.received.count, lambda: self._new_frame, count, timeout, "frames")

    @staticmethod
    async def _wait_count(
        current: Callable[[], int], event: Callable[[], asyncio.Event], count: int, timeout: float, what: str
    ) -> None:
        """Until `current()` grew by `count`, woken by `event()` (re-read each time: the
        readers swap in a fresh event after setting the old one)."""
        target = current() + count
        deadline = time.monotonic() + timeout
        while current() < target:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"got {current()} of {target} {what}")
            try:
                await asyncio.wait_for(event().wait(), left)
            except asyncio.TimeoutError:
                pass

    def latest_image(self) -> np.ndarray:
        if self.received.latest is None:
            raise RuntimeError("no frame received yet")
        return self.received.latest.to_ndarray(format="bgr24")

    def send(self, message: dict) -> None:
        self.channel.send(json.dumps(message))

    async def close(self) -> None:
        self.track.stop()
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class ComponentServerOffer:
    """Mixin for a `StreamClient`: post the offer as a Gradio page does, through Gradio's
    server-function endpoint to the component's `offer` function (our component in a
    plain Gradio app, and the `gradio_webrtc` reference alike). The class sets
    `component_id` and `session_hash`."""

    component_id: int
    session_hash: str

    def offer_request(self, sdp: str) -> tuple[str, dict[str, Any]]:
        _, offer = super().offer_request(sdp)  # type: ignore[misc]
        return "/gradio_api/component_server", {
            "session_hash": self.session_hash,
            "component_id": self.component_id,
            "fn_name": "offer",
            "data": offer,
        }

    def is_answer(self, status: int, data: Any) -> bool:
        # A refused offer still answers HTTP 200 here, with the protocol's failure body.
        return super().is_answer(status, data) and data.get("status") != "failed"  # type: ignore[misc]


class ComponentServerClient(ComponentServerOffer, StreamClient):
    """A `StreamClient` whose offer goes through the component's `offer` server function."""

    def __init__(self, base_url: str, component_id: int, image: np.ndarray, **kwargs: Any) -> None:
        super().__init__(base_url, image, **kwargs)
        self.component_id = component_id
        self.session_hash = uuid.uuid4().hex[:12]
