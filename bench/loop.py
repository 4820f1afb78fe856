"""A pre-encoded camera loop: what each load-generator session sends.

Encoding VP8 in every session cost the old load generator about as much CPU as the
server spent on the same session, so on a small machine it measured mostly itself.
Here a process encodes `LOOP_FRAMES` webcam-like frames once (scikit-image's astronaut
at 640x480, a textured patch moving across the lower right, per-frame luma noise of
sigma 2.5 like a real sensor, the loop position stamped in the pixels; VP8 with
aiortc's own encoder at 1 Mbps, or H.264 baseline with libx264 when the server's
answer picks H.264) and every session replays those packets.

aiortc senders accept encoded `av.Packet`s from a track's `recv()`: the sender then
only packetizes them (`Encoder.pack`, RTP timestamp from the packet's pts), no
encoding (checked against aiortc 1.16's `RTCRtpSender._next_encoded_frame`). So the
track gives every packet a new, monotonic pts, across loop repeats too.

Keyframes: the loop is encoded as one keyframe followed by `LOOP_FRAMES - 1` delta
frames, so each repeat starts on a keyframe. A PLI from the server (it lost frames,
or dropped queued ones to catch up) cannot make a pre-encoded stream produce a new
keyframe, and aiortc's sender ignores PLI for packets (it only sets a flag its
encoder reads): `LoopTrack.request_keyframe()` is wired to the sender's PLI handler
instead, and the next packet sent is the loop's first frame, the keyframe, right
away, as a browser would answer a PLI. The frame ids read back stay unambiguous
because every send is logged with its own global index (`SendLog`).
"""

from __future__ import annotations

import asyncio
import fractions
import functools
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from tests.support.client import read_frame_id, stamp_frame_id
from tests.support.pacing import TIME_BASE, VIDEO_CLOCK, FramePacer

WIDTH, HEIGHT = 640, 480
FPS = 30
LOOP_FRAMES = 150  # 5 s: the round trip a loop position can be told apart over, before unwrapping
BITRATE = 1_000_000  # a webcam's VP8 in a browser at 640x480: 0.5-1.5 Mbps
NOISE_SIGMA = 2.5
POSITION_BITS = 10  # loop positions < 1024; the other 10 of the 20 stamped bits check them
POSITION_MASK = (1 << POSITION_BITS) - 1


# --------------------------------------------------------------------------- pixels
def bench_image() -> np.ndarray:
    """scikit-image's astronaut (a face, a person) at 640x480 BGR; noise without skimage."""
    import cv2

    try:
        from skimage import data

        img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    except ImportError:
        img = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    return cv2.resize(img, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


def patch_image(size: int = 112) -> np.ndarray:
    """The moving patch: scikit-image's cat (textured, so the encoder has work to do)."""
    import cv2

    try:
        from skimage import data

        img = cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR)
    except ImportError:
        img = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def stamp_position(image: np.ndarray, position: int) -> None:
    """The loop position plus its complement as a check (a misread id is rejected, not
    matched to the wrong send)."""
    stamp_frame_id(image, position | ((position ^ POSITION_MASK) << POSITION_BITS))


def read_position(luma: np.ndarray) -> Optional[int]:
    """The loop position stamped in a frame (its luma plane, or any greyscale image),
    or None when the check bits disagree."""
    value = read_frame_id(luma)
    position = value & POSITION_MASK
    return position if value >> POSITION_BITS == position ^ POSITION_MASK else None


def read_frame_position(frame: av.VideoFrame) -> Optional[int]:
    """`read_position` straight from a decoded frame's luma plane: no colour
    conversion, no copy (the id strip lies in its bottom rows)."""
    plane = frame.planes[0]
    luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]
    return read_position(luma)


def compose(image: np.ndarray, patch: np.ndarray, index: int, rng: np.random.Generator) -> av.VideoFrame:
    """Frame `index` of the loop as yuv420p: moving patch, luma noise, position stamp."""
    frame_bgr = image.copy()
    h, w = frame_bgr.shape[:2]
    ph, pw = patch.shape[:2]
    x_min, x_max = w // 2, w - pw
    y_min, y_max = h // 2, h - ph - 24
    span_x, span_y = max(1, x_max - x_min), max(1, y_max - y_min)
    tx, ty = (index * 6) % (2 * span_x), (index * 3) % (2 * span_y)
    x = x_min + (tx if tx < span_x else 2 * span_x - tx)
    y = y_min + (ty if ty < span_y else 2 * span_y - ty)
    frame_bgr[y : y + ph, x : x + pw] = patch
    frame = av.VideoFrame.from_ndarray(frame_bgr, format="bgr24").reformat(format="yuv420p")
    plane = frame.planes[0]
    luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:h, :w]  # a writable view
    noisy = rng.standard_normal(luma.shape, dtype=np.float32)
    noisy *= NOISE_SIGMA
    noisy += luma
    np.clip(noisy, 0, 255, out=noisy)
    luma[:] = noisy
    stamp_position(luma, index)
    return frame


# --------------------------------------------------------------------------- the loop
@dataclass(frozen=True)
class EncodedLoop:
    """Encoded frames of one loop (bytes), the first a keyframe, and how it was made."""

    codec: str  # "VP8" or "H264", as in the SDP
    frames: tuple[bytes, ...]
    keyframes: tuple[bool, ...]
    fps: int
    encode_s: float  # one-off cost, paid once per load-generator process

    @property
    def bitrate(self) -> float:
        return sum(len(f) for f in self.frames) * 8 * self.fps / len(self.frames)


def _vp8_frames(frames: list[av.VideoFrame], bitrate: int) -> list[bytes]:
    """VP8 with aiortc's own encoder and settings (what an aiortc peer sends), the
    payload descriptors stripped again: one bitstream frame per input frame."""
    from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload

    encoder = Vp8Encoder()
    encoder.target_bitrate = bitrate
    out = []
    for index, frame in enumerate(frames):
        payloads, _ = encoder.encode(frame, force_keyframe=index == 0)
        out.append(b"".join(vp8_depayload(p) for p in payloads))
    return out


def _h264_frames(frames: list[av.VideoFrame], bitrate: int, fps: int) -> list[bytes]:
    """H.264 constrained baseline (Annex B, as aiortc's H264 packer splits it) with libx264."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.framerate = fractions.Fraction(fps, 1)
    ctx.bit_rate = bitrate
    ctx.gop_size = len(frames) + 1  # the first frame is the loop's only keyframe
    ctx.options = {"preset": "veryfast", "tune": "zerolatency", "profile": "baseline"}
    out = []
    for index, frame in enumerate(frames):
        frame.pts = index
        packets = ctx.encode(frame)
        if len(packets) != 1:
            raise RuntimeError(f"libx264 gave {len(packets)} packets for frame {index}; expected one (no look-ahead)")
        out.append(bytes(packets[0]))
    return out


def is_keyframe(codec: str, data: bytes) -> bool:
    if codec == "VP8":
        return not data[0] & 1  # frame tag: bit 0 is 0 on a key frame
    return b"\x00\x00\x01\x65" in data or b"\x00\x00\x01\x25" in data or b"\x00\x00\x01\x45" in data  # IDR slice


CODECS = ("VP8", "H264")
_cache_lock = threading.Lock()


@functools.lru_cache(maxsize=16)
def _encode(codec: str, frames: int, fps: int, bitrate: int) -> EncodedLoop:
    started = time.perf_counter()
    image, patch = bench_image(), patch_image()
    rng = np.random.default_rng(7)
    pictures = []
    for index in range(frames):
        picture = compose(image, patch, index, rng)
        picture.pts, picture.time_base = index * VIDEO_CLOCK // fps, TIME_BASE
        pictures.append(picture)
    data = _vp8_frames(pictures, bitrate) if codec == "VP8" else _h264_frames(pictures, bitrate, fps)
    keys = [is_keyframe(codec, d) for d in data]
    if not keys[0] or any(keys[1:]):
        raise RuntimeError(f"{codec}: the loop must be one keyframe then deltas, got keyframes at "
                           f"{[i for i, k in enumerate(keys) if k]}")
    return EncodedLoop(codec, tuple(data), tuple(keys), fps, round(time.perf_counter() - started, 2))


def encoded_loop(codec: str = "VP8", frames: int = LOOP_FRAMES, fps: int = FPS, bitrate: int = BITRATE) -> EncodedLoop:
    """The loop for `codec`, encoded once per process (thread-safe)."""
    if codec not in CODECS:
        raise ValueError(f"no pre-encoded loop for codec {codec!r} (have {CODECS})")
    with _cache_lock:
        return _encode(codec, frames, fps, bitrate)


# Rates the page can be capped to in browser render (`upload_cap` messages, see
# component/upload_rate.py), each its own pre-encoded loop of the same 5 s.
CAP_RATES = (30, 24, 20, 15, 12, 10, 8, 6, 5)


def capped_loop(codec: str, max_fps: float, fps: int = FPS) -> EncodedLoop:
    """The loop a capped sender sends: the lowest rate in `CAP_RATES` that is at
    least `max_fps` (never above `fps`), with the bits per frame of the full-rate loop,
    as the page caps `maxBitrate` in proportion to `maxFramerate`."""
    rate = min((r for r in CAP_RATES if r >= max_fps and r <= fps), default=fps)
    return encoded_loop(codec, LOOP_FRAMES * rate // FPS, rate, BITRATE * rate // FPS)


def encode_capped_loops(codec: str = "VP8", fps: int = FPS) -> None:
    """Encode every capped loop now (before a browser-render run's clock starts)."""
    for rate in CAP_RATES:
        if rate <= fps:
            capped_loop(codec, rate, fps)


# --------------------------------------------------------------------------- sending
class SendLog:
    """Every frame sent: its global index, loop position and time, and the matching of
    positions read back to sends.

    A loop position recurs every loop, so a returned position is matched to the
    earliest send of it that is not older than the previous match: servers return
    frames in order (skipping some), so this unwraps round trips longer than a loop.
    """

    def __init__(self) -> None:
        self.sends: list[tuple[int, int, float]] = []  # (global index, position, monotonic time); a run is bounded
        self._by_position: dict[int, deque[tuple[int, float]]] = {}
        self._last_index = -1

    def add(self, index: int, position: int, at: float) -> None:
        self.sends.append((index, position, at))
        self._by_position.setdefault(position, deque(maxlen=64)).append((index, at))

    def match(self, position: Optional[int], arrived: float) -> Optional[tuple[int, float]]:
        """(global index, send time) of the send a returned `position` came from."""
        if position is None:
            return None
        for index, at in self._by_position.get(position, ()):
            if index >= self._last_index and at <= arrived:
                self._last_index = index
                return index, at
        return None


class LoopTrack(MediaStreamTrack):
    """Replays the pre-encoded loop at `fps` as `av.Packet`s with monotonic pts.

    The codec is fixed once the answer is known (`use(codec)`); the first `recv()`
    waits for it, and encodes the loop in a thread if this process has not yet."""

    kind = "video"

    def __init__(self, fps: float = FPS, frames: int = LOOP_FRAMES) -> None:
        super().__init__()
        self.fps = fps
        self.frames = frames
        self.log = SendLog()
        self.sent = 0
        self.keyframe_requests = 0
        self._codec: Optional[str] = None
        self._codec_known = asyncio.Event()
        self._loop: Optional[EncodedLoop] = None
        self._position = 0
        self._keyframe_wanted = False
        self.pacer = FramePacer(fps)
        self._cap: Optional[float] = None
        self.caps: list[tuple[float, float]] = []  # (time, max_fps) of every cap applied

    def cap(self, max_fps: float) -> None:
        """An `upload_cap` from the server (browser render): from the next frame, send
        the loop encoded at the capped rate, starting on its keyframe, as a browser's
        encoder would after `setParameters({maxFramerate})`."""
        self._cap = max_fps
        self.caps.append((time.monotonic(), max_fps))

    def _apply_cap(self) -> None:
        assert self._codec is not None and self._cap is not None
        loop = capped_loop(self._codec, self._cap, int(round(self.fps)))
        self._cap = None
        if loop is not self._loop:
            self._loop, self._position = loop, 0
            self.pacer.change_rate(loop.fps, self.sent)

    def use(self, codec: str) -> None:
        self._codec = codec
        self._codec_known.set()

    def request_keyframe(self) -> None:
        """A PLI: the next packet is the loop's keyframe (its first frame)."""
        self.keyframe_requests += 1
        self._keyframe_wanted = True

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._loop is None:
            await self._codec_known.wait()
            self._loop = await asyncio.to_thread(encoded_loop, self._codec, self.frames, int(round(self.fps)))
        if self._cap is not None:
            self._apply_cap()
        await self.pacer.wait(self.sent)
        if self.readyState != "live":
            raise MediaStreamError
        if self._keyframe_wanted:
            self._keyframe_wanted = False
            self._position = 0
        packet = av.Packet(self._loop.frames[self._position])
        packet.pts, packet.time_base = self.pacer.pts(self.sent), TIME_BASE
        self.log.add(self.sent, self._position, time.monotonic())
        self._position = (self._position + 1) % len(self._loop.frames)
        self.sent += 1
        return packet


def answer_pli_with_keyframes(sender, track: LoopTrack) -> None:
    """Route the sender's PLI handling to the track (see the module docstring).

    aiortc 1.16 calls `RTCRtpSender._send_keyframe()` for every PLI it receives; for
    packets it would have no effect. Raises if that hook is gone (an aiortc upgrade):
    tests/test_bench_smoke.py checks a real PLI reaches the track."""
    original = getattr(sender, "_send_keyframe", None)
    if not callable(original):
        raise RuntimeError("aiortc's RTCRtpSender has no _send_keyframe(): PLI can no longer be routed")

    def on_pli() -> None:
        original()
        track.request_keyframe()

    sender._send_keyframe = on_pli
