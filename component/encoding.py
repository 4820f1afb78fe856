"""The outgoing video's codec and encoder options: the one seam around aiortc's encoders.

aiortc encodes with fixed options: VP8 at `cpu-used -6` with the denoiser on, H.264
with libx264's default `medium` preset. Measured on webcam-like 640x480 at 0.5-1.5
Mbps (`python -m bench.encoders`), per frame on one thread:

- VP8, aiortc's options: 4.3-5.8 ms encode; `cpu-used -10`, no denoiser: 1.9-3.9 ms at
  the same PSNR (within 0.1-0.4 dB); `cpu-used -16` loses 1.4-6 dB.
- H.264 libx264 `ultrafast` + `zerolatency`: 1.4-2.1 ms encode, 0.3-0.6 ms decode
  (VP8: 0.7-1.5 ms), PSNR equal or better than VP8's. Chromium decodes it.

So both are tuned, and the two directions of the browser's one video transceiver are
chosen apart: `VideoEncoding.codec` is what we send, `camera_codec` what we ask the
peer to send. The answer lists `camera_codec` first, and the peer sends the answer's
first codec; our sender then moves `codec` to the front of the negotiated list
(`codec_first`, called once per direction): any codec in the answer may be sent, and the peer decodes all
of them (RFC 3264, section 6.1; Chromium does).

- We send H.264 `ultrafast` by default, capped at 1.2 Mbps (`FAST_MAX_BITRATE`), where
  its picture matched fast VP8 at 1.5 Mbps: half VP8's encode time. In the server (4
  sessions, 3 interleaved pairs each, 2026-12-01) the ingress took 0.56-0.64 core
  against VP8's 0.77-0.83 with Haar, 0.79-0.89 against 0.88-0.99 with FastestDet.
- The camera stays VP8 by default. An aiortc client (the load generator, Python peers)
  asked for H.264 encodes at libx264's default `medium` preset and fails on odd frame
  sizes (a 451 px wide test photo sent nothing). And our side saves nothing: aiortc's
  H.264 decoder lets FFmpeg start its own threads, and the decode threads cost 0.033
  core a session against VP8's 0.035.
- Memory: with H.264 sent back, the soak test (200 sessions) ended at 381 MiB from 382.
  The 150 MiB it grew by once came with H.264 both ways and libx264's own threads
  (not isolated further).

The outgoing track encodes in the same worker-thread hop that draws the frame
(`OutgoingEncoder`), and hands the sender finished RTP payloads (`Encoded`), which the
sender "packs" as it does any pre-encoded data: one hop per outgoing frame, not two.

What it relies on in aiortc (tests/test_encoding.py fails if an upgrade changes it):
- `RTCRtpSender.__encoder`, when already set, is used instead of `get_encoder(codec)`;
  data from the track that is no `av.Frame` goes to `encoder.pack(data)` unencoded;
- a PLI/FIR sets `RTCRtpSender.__force_keyframe`, read and cleared by whoever encodes;
- the sender encodes with `transceiver._codecs[0]`, set by `setRemoteDescription`, read
  when the connection starts sending (after `setLocalDescription`), and the local
  description keeps its own list (so reassigning `_codecs` later does not change it);
- `Vp8Encoder` / `H264Encoder` assign their PyAV context to `self.codec`, then set
  `codec.options` (a dict) and, for VP8, `codec.thread_count`, before the first encode;
- they read `self.target_bitrate` (a property whose setter the sender calls with each
  REMB) when they open a context, and reopen it when it moves by over 10 %.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any, Literal, Optional

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender
from aiortc.codecs import h264, vpx
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcpeerconnection import filter_preferred_codecs

log = logging.getLogger("rayrtc.encoding")

SENDER_ENCODER_ATTR = "_RTCRtpSender__encoder"
SENDER_KEYFRAME_ATTR = "_RTCRtpSender__force_keyframe"

Codec = Literal["h264", "vp8"]
MIME = {"h264": "video/h264", "vp8": "video/vp8"}

# The frame rate the sender's bitrate target is for (see `_Tuned`), and the least
# relative change of the measured rate that changes the budget.
FULL_RATE_FPS = 30.0
RATE_STEP = 0.25

# Options merged over aiortc's own (which keep rate control, latency and packet sizes).
FAST_OPTIONS: dict[str, dict[str, str]] = {
    "video/vp8": {"cpu-used": "-10", "noise-sensitivity": "0"},
    "video/h264": {"preset": "ultrafast", "tune": "zerolatency"},
}
# Encoder threads with the fast options when `VideoEncoding.threads` is None: PyAV's
# default (0) lets libx264 start its own slice threads in every session's encoder. One
# thread encodes a 640x480 frame in 1.4-1.6 ms; in the server, 3 interleaved pairs with
# and without showed no CPU difference either way, so the fewer threads win. aiortc sets
# VP8's itself (one thread at this size).
FAST_THREADS: dict[str, int] = {"video/h264": 1}
# The bitrate ceiling with the fast options when `VideoEncoding.max_bitrate` is None:
# aiortc lets H.264 climb to 3 Mbps (VP8: 1.5), twice the bits to encode, protect and
# send. At 1.2 Mbps H.264 ultrafast matched fast VP8 at 1.5 Mbps (Y-PSNR 37.64 against
# 37.57 dB on the webcam-like clip of `bench.encoders`, two seeds, 2026-12-01).
FAST_MAX_BITRATE: dict[str, int] = {"video/h264": 1_200_000}


@dataclass(frozen=True)
class VideoEncoding:
    """How a session encodes the video it sends back.

    `codec`: the codec we send the video back in, when the peer offered it (else the
    other). `camera_codec`: the codec the answer asks the peer to send its camera in
    (the other is the fallback). `fast`: the measured fast options above; False keeps
    aiortc's own. `threads`: encoder threads (None: `FAST_THREADS` for H.264 with the
    fast options, else aiortc's choice, one at 640x480).
    `max_bitrate`: a ceiling (bits/s) under the receiver's REMB estimate, for
    deployments that budget bandwidth (None: `FAST_MAX_BITRATE` for H.264 with the fast
    options, else aiortc's own ceiling). An encode costs
    with its bits (VP8 640x480: 2.6 ms a frame at 1.5 Mbps, 2.1 at 1 Mbps), but in the
    server the saving at 1 Mbps was within run-to-run noise, so it is not a default.
    """

    codec: Codec = "h264"
    camera_codec: Codec = "vp8"
    fast: bool = True
    threads: Optional[int] = None
    max_bitrate: Optional[int] = None

    def options_for(self, mime_type: str) -> dict[str, str]:
        return dict(FAST_OPTIONS.get(mime_type.lower(), {})) if self.fast else {}


class _TunedContext:
    """A PyAV codec context whose `options` get our overrides merged in when aiortc's
    encoder assigns them (and whose `thread_count` ours, when set)."""

    def __init__(self, context: Any, options: dict[str, str], threads: Optional[int]) -> None:
        object.__setattr__(self, "_context", context)
        object.__setattr__(self, "_options", options)
        object.__setattr__(self, "_threads", threads)
        # What was handed to FFmpeg (after opening, PyAV's `options` lists only the
        # options the codec did not consume).
        object.__setattr__(self, "applied_options", {})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "options":
            value = {**value, **self._options}
            if "bufsize" in value and "maxrate" in value:
                # aiortc sizes the rate buffer as 1 s of its REMB target; keep it 1 s of
                # the (frame-rate scaled) bitrate the context really runs at.
                value["bufsize"] = value["maxrate"]
            object.__setattr__(self, "applied_options", dict(value))
        elif name == "thread_count" and self._threads is not None:
            value = self._threads
        setattr(self._context, name, value)


@dataclass(frozen=True)
class Encoded:
    """A frame already encoded and cut into RTP payloads (in a media worker thread)."""

    payloads: list
    timestamp: int


class FrameRate:
    """The rate frames are really encoded at, from their timestamps (a running mean of
    the intervals), acted on only when it moves by more than `RATE_STEP`: each bitrate
    change makes aiortc open a new codec context, which starts with a keyframe."""

    def __init__(self) -> None:
        self.fps = FULL_RATE_FPS
        self._last: Optional[float] = None
        self._interval: Optional[float] = None

    def frame(self, at_s: float) -> float:
        """Note a frame stamped `at_s` (seconds); returns the rate to budget for."""
        if self._last is not None and at_s > self._last:
            gap = at_s - self._last
            self._interval = gap if self._interval is None else 0.8 * self._interval + 0.2 * gap
            measured = 1.0 / self._interval
            # Near the full rate is the full rate (the steps would stop short of it).
            measured = FULL_RATE_FPS if measured >= 0.9 * FULL_RATE_FPS else measured
            if measured == FULL_RATE_FPS or abs(measured - self.fps) > RATE_STEP * self.fps:
                self.fps = measured
        self._last = at_s
        return self.fps


class _Tuned:
    """Mixin for aiortc's encoders: every codec context they create is tuned, `pack`
    passes through what `OutgoingEncoder` already encoded, and the bitrate follows the
    frame rate.

    Why the bitrate: the sender's target (from the receiver's REMB; up to 1.5 Mbps for
    VP8 on a good link) is spent on however many frames there are. When the ingress
    returns fewer (overload, `component.media_load`, or a fn returning pictures
    slowly), each frame got more bits, and an encode costs with its bits: VP8 at
    640x480, 1 Mbps, took 3.2 ms a frame at 30 fps and 5.7 ms at 5 fps; at 5 fps and
    1/6 of the bitrate, 2.6 ms. So the target is scaled by (measured rate / 30): each
    frame keeps the bits it has at the full rate, never fewer, never more than REMB
    allows, never below the codec's floor."""

    MIN_BITRATE = 0

    def pack(self, data: Any) -> tuple[list, int]:
        if isinstance(data, Encoded):
            return data.payloads, data.timestamp
        return super().pack(data)  # type: ignore[misc]

    def __init__(self, options: dict[str, str], threads: Optional[int], max_bitrate: Optional[int] = None) -> None:
        self._tuned_options = options
        self._tuned_threads = threads
        self._max_bitrate = max_bitrate
        self.frame_rate = FrameRate()
        super().__init__()  # sets `self.codec = None` through the property below

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list, int]:
        if frame.pts is not None and frame.time_base is not None:
            self.frame_rate.frame(float(frame.pts * frame.time_base))
        return super().encode(frame, force_keyframe)  # type: ignore[misc]

    @property
    def target_bitrate(self) -> int:
        asked = super().target_bitrate  # type: ignore[misc]
        if self._max_bitrate is not None:
            asked = min(asked, max(self.MIN_BITRATE, self._max_bitrate))
        scaled = int(asked * min(1.0, self.frame_rate.fps / FULL_RATE_FPS))
        return min(asked, max(self.MIN_BITRATE, scaled))

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        # The receiver's estimate, kept (and clamped) by aiortc's own setter.
        super(_Tuned, type(self)).target_bitrate.fset(self, bitrate)  # type: ignore[attr-defined]

    @property
    def codec(self) -> Any:
        return self.__dict__.get("_tuned_codec")

    @codec.setter
    def codec(self, context: Any) -> None:
        if context is not None:
            context = _TunedContext(context, self._tuned_options, self._tuned_threads)
            if self._tuned_threads is not None:
                context.thread_count = self._tuned_threads
        self.__dict__["_tuned_codec"] = context


class TunedVp8Encoder(_Tuned, Vp8Encoder):
    MIN_BITRATE = vpx.MIN_BITRATE


class TunedH264Encoder(_Tuned, H264Encoder):
    """libx264 takes only even-sized 4:2:0 frames (a 451 px wide camera would stop the
    sender): odd sizes are scaled to the even size below, the one conversion they cost."""

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list, int]:
        if frame.width % 2 or frame.height % 2:
            even = frame.reformat(width=max(2, frame.width & ~1), height=max(2, frame.height & ~1), format="yuv420p")
            even.pts, even.time_base = frame.pts, frame.time_base
            frame = even
        return super().encode(frame, force_keyframe)

    MIN_BITRATE = h264.MIN_BITRATE


def make_encoder(mime_type: str, encoding: VideoEncoding) -> Optional[Any]:
    """A tuned aiortc encoder for `mime_type`, or None for codecs we leave alone."""
    options, mime = encoding.options_for(mime_type), mime_type.lower()
    threads, ceiling = encoding.threads, encoding.max_bitrate
    if encoding.fast:
        threads = FAST_THREADS.get(mime) if threads is None else threads
        ceiling = FAST_MAX_BITRATE.get(mime) if ceiling is None else ceiling
    if mime == "video/vp8":
        return TunedVp8Encoder(options, threads, ceiling)
    if mime == "video/h264":
        return TunedH264Encoder(options, threads, ceiling)
    return None


def codec_first(pc: RTCPeerConnection, codec: Codec) -> None:
    """Put `codec` first in every video transceiver's negotiated list, as a new list
    (the local description keeps its own), RTX entries kept; codecs the offer lacks
    stay absent. Called twice per answer: with the camera codec after
    `setRemoteDescription` (the answer lists it first, so the peer sends it), and with
    the codec we send right after `setLocalDescription`, before anything awaits (the
    sender encodes with the first entry once the connection is up)."""
    mime = MIME[codec]
    order = sorted(RTCRtpSender.getCapabilities("video").codecs, key=lambda c: c.mimeType.lower() != mime)
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "video" and transceiver._codecs:
            transceiver._codecs = filter_preferred_codecs(list(transceiver._codecs), order)


class OutgoingEncoder:
    """The sender's own (tuned) encoder, driven by the outgoing track: `keyframe_due`
    on the event loop (it takes the sender's PLI flag), `encode` in a worker thread.
    The sender awaits each frame before asking for the next, so encodes never overlap;
    bitrate feedback (REMB) still reaches the same encoder object."""

    def __init__(self, sender: RTCRtpSender, encoder: Any, mime_type: str) -> None:
        # Weak: the sender holds the track that holds us; a cycle would keep the codec
        # context (megabytes the garbage collector does not see) alive after close.
        self._sender = weakref.ref(sender)
        self.encoder = encoder
        self.mime_type = mime_type
        self.keyframes_forced = 0

    def keyframe_due(self) -> bool:
        sender = self._sender()
        due = sender is not None and bool(getattr(sender, SENDER_KEYFRAME_ATTR))
        if due:
            setattr(sender, SENDER_KEYFRAME_ATTR, False)
            self.keyframes_forced += 1
        return due

    def keyframe_again(self) -> None:
        """A frame that was to be a keyframe failed: the next one is."""
        sender = self._sender()
        if sender is not None:
            setattr(sender, SENDER_KEYFRAME_ATTR, True)

    def encode(self, frame: Any, keyframe: bool) -> Encoded:
        payloads, timestamp = self.encoder.encode(frame, keyframe)
        return Encoded(payloads, timestamp)


def install_encoder(
    pc: RTCPeerConnection, track: MediaStreamTrack, encoding: VideoEncoding
) -> Optional[OutgoingEncoder]:
    """Give the sender of `track` a tuned encoder for its negotiated codec (call after
    `setLocalDescription`); returns it for the track to drive, or None when the codec
    is not one we tune (the sender then encodes as aiortc does)."""
    for transceiver in pc.getTransceivers():
        sender = transceiver.sender
        if sender.track is not track or not transceiver._codecs:
            continue
        mime = transceiver._codecs[0].mimeType
        encoder = make_encoder(mime, encoding)
        if encoder is None:
            return None
        for attr in (SENDER_ENCODER_ATTR, SENDER_KEYFRAME_ATTR):
            if not hasattr(sender, attr):
                raise TypeError(f"aiortc changed: RTCRtpSender has no {attr}")
        setattr(sender, SENDER_ENCODER_ATTR, encoder)
        log.debug("sender for %s: %s, options %s", track.id, mime, encoding.options_for(mime))
        return OutgoingEncoder(sender, encoder, mime.lower())
    return None
