"""A Python peer that speaks the offer protocol: for tests, benchmarks and load
generation. It streams an image (optionally with a moving patch and the frame number
coded in its pixels) and reads back what the server sends.

Every peer connection here is built with an explicit ICE configuration, so nothing
is ever sent to a public STUN server.
"""

from __future__ import annotations

import asyncio
import fractions
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
        self._start: Optional[float] = None

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
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self.sent / self.fps
        if due > now:
            await asyncio.sleep(due - now)
        index = self.sent
        frame = VideoFrame.from_ndarray(self.compose(index), format="bgr24")
        frame.pts = int(index * 90000 / self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
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
                r.count += 1
                r.first_at = r.first_at or now
                r.last_at = now
                r.latest = frame
                if self.measure_latency:
                    image = frame.to_ndarray(format="gray")
                    sent = self.track.sent_at.get(read_frame_id(image))
                    if sent is not None:
                        r.latencies.append(now - sent)
                event, self._new_frame = self._new_frame, asyncio.Event()
                event.set()
        except MediaStreamError:
            pass

    async def connect(self, timeout: float = 20.0) -> dict:
        """Post the offer and apply the answer; raises `OfferRejected` on a failure body."""
        self.pc.addTrack(self.track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", "webrtc_id": self.webrtc_id}
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            resp = await http.post(self.base_url + self.offer_path, json=body, headers=self.headers)
        self.offer_response_headers = resp.headers
        data = resp.json()
        if resp.status_code != 200:
            await self.close()
            raise OfferRejected(resp.status_code, data)
        sdp = self.answer_filter(data["sdp"]) if self.answer_filter else data["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=data["type"]))
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
