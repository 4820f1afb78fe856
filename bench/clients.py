"""The load generator's peers: one per session, each sending the pre-encoded loop
(bench/loop.py) and logging what comes back, cheaply.

Two renders, as the app offers them:
- `server`: the server returns annotated video; the peer reads the loop position from
  the luma plane of each returned frame (no colour conversion) and matches it to its
  send, for the round-trip time.
- `browser`: the server returns no video, only one `detections` message per processed
  frame on the session's data channel (issue 11's format, `parse_detections`); the
  peer offers its video `sendonly` and logs each message's seq and age.

Every peer gathers on the loopback addresses set by the caller and uses an explicit,
empty ICE configuration.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from typing import Any, Optional

import httpx
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.sdp import SessionDescription

from bench.loop import CODECS, FPS, LoopTrack, answer_pli_with_keyframes, read_frame_position
from component.ice import IceConfig
from tests.support.client import ComponentServerOffer, StreamClient

RENDERS = ("server", "browser")
DETECTION_KEYS = {"type", "seq", "age_ms", "items"}
ITEM_KEYS = {"box", "label", "score"}
BOX_SLACK = 1e-3  # rounding at the frame's edge


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_detections(data: Any) -> Optional[tuple[int, float, int]]:
    """(seq, age_ms, number of items) of a well-formed `detections` message, else None.

    The format (issue 11), checked exactly: `{"type": "detections", "seq": int,
    "age_ms": float >= 0, "items": [{"box": [x1, y1, x2, y2] as fractions 0..1 with
    x1 <= x2 and y1 <= y2, "label": str, "score": float}]}`, no other keys."""
    if not isinstance(data, dict) or set(data) != DETECTION_KEYS or data["type"] != "detections":
        return None
    seq, age, items = data["seq"], data["age_ms"], data["items"]
    if not isinstance(seq, int) or isinstance(seq, bool) or not _number(age) or age < 0 or not isinstance(items, list):
        return None
    for item in items:
        if not isinstance(item, dict) or set(item) != ITEM_KEYS:
            return None
        box = item["box"]
        if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
            return None
        x1, y1, x2, y2 = box
        if min(box) < -BOX_SLACK or max(box) > 1 + BOX_SLACK or x1 > x2 or y1 > y2:
            return None
        if not isinstance(item["label"], str) or not _number(item["score"]):
            return None
    return seq, float(age), len(items)


def describe_answer(sdp: str) -> tuple[Optional[str], Optional[str]]:
    """(codec, direction) of the answer's first video section, e.g. ("VP8", "recvonly")."""
    for media in SessionDescription.parse(sdp).media:
        if media.kind == "video":
            codec = media.rtp.codecs[0].mimeType.split("/", 1)[1].upper() if media.rtp.codecs else None
            return codec, media.direction
    return None, None


class BenchClient(StreamClient):
    """A session of the load generator (see the module docstring).

    Logs, all bounded by the run's length: `recv_log` (arrival, global index of the
    matched send or None, round trip s or None) for returned frames, `detections_log`
    (arrival, seq, age_ms, items) for detection messages, `malformed_log` (arrival) for
    messages that break the format."""

    def __init__(self, base_url: str, fps: float = FPS, render: str = "server", **kwargs: Any) -> None:
        if render not in RENDERS:
            raise ValueError(f"render must be one of {RENDERS}, not {render!r}")
        # StreamClient's own image track is replaced by the pre-encoded loop.
        super().__init__(base_url, np.zeros((2, 2, 3), np.uint8), fps=fps, ice=IceConfig(), **kwargs)
        self.render = render
        self.track = LoopTrack(fps)
        self.answer_codec: Optional[str] = None
        self.answer_direction: Optional[str] = None
        self.recv_log: list[tuple[float, Optional[int], Optional[float]]] = []
        self.detections_log: list[tuple[float, int, float, int]] = []
        self.malformed_log: list[float] = []
        # (time, decoded frames waiting for us, encoded frames waiting for the decoder):
        # frames queued on the load generator's side, i.e. lag that is the bench's own.
        self.queue_log: list[tuple[float, int, int]] = []
        self.error: Optional[str] = None
        self._new_detection = asyncio.Event()

    # -- offer / answer ----------------------------------------------------------------
    async def offer_sdp(self) -> str:
        """Add the loop's transceiver (sendonly in browser render), route PLI to it, and
        return the local offer."""
        direction = "sendonly" if self.render == "browser" else "sendrecv"
        transceiver = self.pc.addTransceiver(self.track, direction=direction)
        answer_pli_with_keyframes(transceiver.sender, self.track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def apply_answer(self, answer: dict) -> None:
        """Pick the loop's codec from the answer and apply it. In browser render a
        `recvonly` answer is what the server should give; `inactive` means no video
        flows at all, which fails the session."""
        self.answer_codec, self.answer_direction = describe_answer(answer["sdp"])
        if self.answer_codec not in CODECS:
            raise RuntimeError(f"answer picked video codec {self.answer_codec!r}; the loop exists in {CODECS}")
        if self.answer_direction not in ("recvonly", "sendrecv"):
            raise RuntimeError(f"answer's video direction is {self.answer_direction!r}: the server would receive nothing")
        self.track.use(self.answer_codec)
        await super().apply_answer(answer)

    # -- what comes back -------------------------------------------------------------------
    def _on_message(self, message: Any) -> None:
        now = time.monotonic()
        try:
            data = json.loads(message)
        except (TypeError, ValueError):
            self.malformed_log.append(now)
            return
        if isinstance(data, dict) and data.get("type") == "detections":
            parsed = parse_detections(data)
            if parsed is None:
                self.malformed_log.append(now)
            else:
                self.detections_log.append((now, *parsed))
                event, self._new_detection = self._new_detection, asyncio.Event()
                event.set()
            return
        if isinstance(data, dict) and data.get("type") == "upload_cap" and isinstance(data.get("max_fps"), (int, float)):
            self.track.cap(float(data["max_fps"]))  # what the page does (component/upload_rate.py)
        super()._on_message(message)

    def _queues(self, track: MediaStreamTrack) -> tuple[int, int]:
        """Sizes of aiortc's receive queues for `track` (private attributes; -1 if absent)."""
        decoded = getattr(getattr(track, "_queue", None), "qsize", lambda: -1)()
        encoded = -1
        for receiver in self.pc.getReceivers():
            if receiver.track is track:
                q = getattr(receiver, "_RTCRtpReceiver__decoder_queue", None)
                encoded = q.qsize() if q is not None else -1
        return decoded, encoded

    def on_frame(self, track: MediaStreamTrack, frame: Any, now: float) -> None:
        """Log the returned frame's round trip (its loop position read from the luma
        plane, matched to its send) and, every 10th frame, our own receive queues."""
        if self.received.count % 10 == 0:
            self.queue_log.append((now, *self._queues(track)))
        match = self.track.log.match(read_frame_position(frame), now)
        self.recv_log.append((now, None, None) if match is None else (now, match[0], now - match[1]))

    async def wait_detections(self, count: int, timeout: float = 20.0) -> None:
        """Wait until `count` more detection messages arrived."""
        await self._wait_count(
            lambda: len(self.detections_log), lambda: self._new_detection, count, timeout, "detection messages"
        )

    async def wait_flowing(self, timeout: float = 20.0) -> None:
        """Until the session works: frames back (server render) or detections (browser)."""
        if self.render == "browser":
            await self.wait_detections(3, timeout)
        else:
            await self.wait_frames(3, timeout)

    async def start(self) -> None:
        """Anything the server needs after the connection is up (ours: nothing)."""

    async def close(self) -> None:
        try:
            self.send({"type": "stop"})
        except Exception:  # the channel may never have opened; closing goes on
            pass
        await super().close()


class ReferenceClient(ComponentServerOffer, BenchClient):
    """A browser of the `gradio_webrtc` 0.0.31 reference, as its compiled frontend does it:
    the offer through Gradio's `component_server` (`fn_name: "offer"`), then, once
    connected, the component's `tick` event through `queue/join` with
    `[webrtc_id, threshold]`, which hands the session its arguments (until then the
    reference returns the camera frames untouched)."""

    def __init__(self, base_url: str, component_id: int, tick_fn_index: int, threshold: float = 0.3,
                 fps: float = FPS) -> None:
        super().__init__(base_url, fps=fps)
        self.component_id = component_id
        self.tick_fn_index = tick_fn_index
        self.threshold = threshold
        self.session_hash = uuid.uuid4().hex[:11]
        self._sse: Optional[asyncio.Task] = None
        self.started = asyncio.Event()

    async def start(self, timeout: float = 20.0) -> None:
        body = {
            "data": [self.webrtc_id, self.threshold],
            "event_data": None,
            "fn_index": self.tick_fn_index,
            "trigger_id": self.component_id,
            "session_hash": self.session_hash,
        }
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            resp = await http.post(self.base_url + "/gradio_api/queue/join", json=body)
            resp.raise_for_status()
        self._sse = asyncio.ensure_future(self._listen())
        await asyncio.wait_for(self.started.wait(), timeout)

    async def _listen(self) -> None:
        url = f"{self.base_url}/gradio_api/queue/data?session_hash={self.session_hash}"
        async with httpx.AsyncClient(timeout=None, trust_env=False) as http:
            async with http.stream("GET", url) as resp:
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    try:
                        msg = json.loads(line[5:])
                    except ValueError:
                        continue
                    if msg.get("msg") == "process_completed":
                        if not msg.get("success", True):
                            self.error = f"tick event failed: {msg.get('output')}"
                        self.started.set()
                    elif msg.get("msg") == "close_stream":
                        return

    async def close(self) -> None:
        if self._sse is not None:
            self._sse.cancel()
            await asyncio.gather(self._sse, return_exceptions=True)
        await super().close()


def make_client(spec: dict, fps: float) -> BenchClient:
    """A client from a picklable description (for load-generator worker processes)."""
    if spec["kind"] == "reference":
        return ReferenceClient(spec["url"], spec["component_id"], spec["tick_fn_index"], spec["threshold"], fps)
    return BenchClient(spec["url"], fps=fps, render=spec.get("render", "server"))
