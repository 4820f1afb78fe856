"""A bounded receive path: the one seam around aiortc's video receiver.

aiortc (1.16) decodes a track's video in a thread of its own: the event loop puts each
reassembled encoded frame on an unbounded `queue.Queue`, the decoder thread takes them
in order and hands every decoded frame to the track through an unbounded
`asyncio.Queue`. When the machine is short of CPU, both queues grow, and every frame
we then read is older than the last: lag that never shrinks (aiortc #1192, #1176).

`bound_receiver` swaps both queues for bounded ones before the decoder thread starts,
and the jitter buffer for one that hands a frame on when its last packet arrives:

- `EncodedFrameQueue` (decoder input) holds at most `max_encoded` frames. When a frame
  arrives and the queue is full, the decoder has fallen behind: the queued frames are
  dropped, later non-key frames too (they could not be decoded without the dropped
  ones), a keyframe is requested (PLI) and decoding resumes on it.
- `NewestFrameQueue` (decoder output) holds at most `max_decoded` decoded frames,
  dropping the oldest: the track's reader always gets a recent frame.

- `MarkerJitterBuffer`: aiortc's `JitterBuffer` calls a frame complete only when the
  first packet of the *next* frame arrives (a new RTP timestamp), so every frame waits
  one frame interval before decoding: 33 ms at 30 fps, 140-200 ms at the 5-7 fps an
  overloaded server caps pages to. The RTP marker bit flags a frame's last packet
  (RFC 7741 for VP8, RFC 6184 for H.264; Chromium and aiortc set it), so the frame
  leaves as soon as it is whole, as it does in libwebrtc. Packets out of order or lost
  fall back to aiortc's own rule.

What it relies on in aiortc, checked by tests/test_receive_seam.py (an upgrade that
changes any of it fails there, not silently in production):
- `RTCRtpReceiver.__decoder_queue` (a `queue.Queue`) and `RemoteStreamTrack._queue`
  (an `asyncio.Queue`) are created in the constructors and handed to the decoder
  thread when `receive()` starts it (after the peer connection's "track" event);
- the event loop `put`s `(codec, JitterFrame)` tuples, `None` to stop; the decoder
  thread `put`s decoded frames, then `None`, through `run_coroutine_threadsafe`;
- `RTCRtpReceiver.__decoder_error` (a `threading.Event`), once set, makes the receiver
  send a PLI with the next RTP packet (aiortc's own path for decode errors);
- `RTCRtpReceiver.__jitter_buffer` (a video `JitterBuffer`, made in the constructor)
  gets every depayloaded packet (`_data`) through `add`, which returns `(pli, frame)`;
  its `_origin`, `_packets` and `remove` keep the packets from the oldest on.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import RemoteStreamTrack, RTCRtpReceiver
from aiortc.utils import uint16_gt

log = logging.getLogger("rayrtc.receive")

DECODER_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
DECODER_ERROR_ATTR = "_RTCRtpReceiver__decoder_error"
DECODER_THREAD_ATTR = "_RTCRtpReceiver__decoder_thread"
JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
TRACK_QUEUE_ATTR = "_queue"

# While waiting for a keyframe, ask again this often (a PLI can be lost).
PLI_REPEAT_S = 0.5


def is_keyframe(mime_type: str, data: bytes) -> bool:
    """Whether an encoded (depayloaded) frame can be decoded on its own.

    VP8: bit 0 of the frame tag is 0 for a key frame (RFC 6386 9.1). H.264 (Annex B
    byte stream): it holds an IDR slice or a sequence parameter set. Other codecs:
    treated as decodable (dropping then only ever skips frames).
    """
    if not data:
        return False
    mime = mime_type.lower()
    if mime == "video/vp8":
        return data[0] & 0x01 == 0
    if mime == "video/h264":
        start = data.find(b"\x00\x00\x01")
        while start != -1 and start + 3 < len(data):
            if data[start + 3] & 0x1F in (5, 7):
                return True
            start = data.find(b"\x00\x00\x01", start + 3)
        return False
    return True


@dataclass
class ReceiveStats:
    """What the bounded receive path dropped (tests, metrics)."""

    encoded_in: int = 0
    keyframes_in: int = 0
    encoded_dropped: int = 0
    keyframe_requests: int = 0
    decoded_dropped: int = 0


class EncodedFrameQueue(queue.Queue):
    """The decoder's input: at most `limit` encoded frames, then skip to a keyframe."""

    def __init__(self, limit: int, request_keyframe: Callable[[], None], stats: ReceiveStats) -> None:
        super().__init__()
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._request_keyframe = request_keyframe
        self.stats = stats
        self._waiting_keyframe = False
        self._last_request = 0.0

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        if item is None:  # the receiver is stopping: always delivered
            return super().put(item, block, timeout)
        codec, encoded = item
        self.stats.encoded_in += 1
        key = is_keyframe(codec.mimeType, encoded.data)
        self.stats.keyframes_in += key
        if self._waiting_keyframe and not key:
            self.stats.encoded_dropped += 1
            self._ask_keyframe(again=True)
            return
        self._waiting_keyframe = False
        if self.qsize() >= self.limit:
            with self.mutex:  # the decoder thread takes under the same lock
                self.stats.encoded_dropped += len(self.queue)
                self.queue.clear()
            if not key:
                self.stats.encoded_dropped += 1
                self._waiting_keyframe = True
                self._ask_keyframe(again=False)
                return
        super().put(item, block, timeout)

    def _ask_keyframe(self, again: bool) -> None:
        now = time.monotonic()
        if again and now - self._last_request < PLI_REPEAT_S:
            return
        self._last_request = now
        self.stats.keyframe_requests += 1
        self._request_keyframe()


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer, but a frame leaves when its marked last packet
    completes it, not when the next frame begins."""

    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        super().__init__(capacity, prefetch, is_video)
        self._newest_seq: Optional[int] = None

    def add(self, packet: Any) -> tuple[bool, Optional[JitterFrame]]:
        # Only a marked packet, or one that fills a gap behind the newest, can complete
        # the oldest frame: packets in order without a marker skip the scan, which keeps
        # the work per frame linear in its packets.
        in_order = self._newest_seq is None or uint16_gt(packet.sequence_number, self._newest_seq)
        if in_order:
            self._newest_seq = packet.sequence_number
        pli, frame = super().add(packet)
        if (frame is None or not frame.data) and (packet.marker or not in_order):
            # (a "frame" of padding only has nothing to decode)
            frame = self._whole_frame_at_origin()
        return pli, frame if frame is not None and frame.data else None

    def _whole_frame_at_origin(self) -> Optional[JitterFrame]:
        """The oldest frame, removed, if every packet of it is here up to the marked
        last one; None otherwise."""
        if self._origin is None:
            return None
        parts: list[bytes] = []
        timestamp = None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None or (timestamp is not None and packet.timestamp != timestamp):
                return None  # a gap, or a new frame without our marker: aiortc's rule decides
            timestamp = packet.timestamp
            parts.append(packet._data)
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(data=b"".join(parts), timestamp=timestamp)
        return None


class NewestFrameQueue(asyncio.Queue):
    """The track's frame queue: at most `limit` decoded frames, the oldest dropped."""

    def __init__(self, limit: int, stats: ReceiveStats) -> None:
        super().__init__()
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.stats = stats

    def put_nowait(self, item: Any) -> None:
        # `put` ends here too (the queue itself is unbounded, so it never waits).
        if item is not None:
            while self.qsize() >= self.limit:
                self.get_nowait()
                self.stats.decoded_dropped += 1
        super().put_nowait(item)


def bound_receiver(receiver: RTCRtpReceiver, max_encoded: int = 2, max_decoded: int = 1) -> ReceiveStats:
    """Bound a video receiver's queues; call it from the peer connection's "track"
    event (before its decoder thread starts). Returns the live drop counters."""
    track = receiver.track
    if not isinstance(track, RemoteStreamTrack) or track.kind != "video":
        raise TypeError("bound_receiver takes the receiver of a remote video track")
    if getattr(receiver, DECODER_THREAD_ATTR) is not None:
        raise RuntimeError("the receiver's decoder already runs: bound it from the 'track' event")
    decode_error = getattr(receiver, DECODER_ERROR_ATTR)
    if not isinstance(decode_error, threading.Event):
        raise TypeError(f"aiortc changed: {DECODER_ERROR_ATTR} is {type(decode_error).__name__}")
    for owner, attr, kind in ((receiver, DECODER_QUEUE_ATTR, queue.Queue), (track, TRACK_QUEUE_ATTR, asyncio.Queue)):
        current = getattr(owner, attr)
        if not isinstance(current, kind) or not current.empty():
            raise TypeError(f"aiortc changed: {attr} is not an empty {kind.__name__}")
    jitter = getattr(receiver, JITTER_BUFFER_ATTR)
    if type(jitter) is not JitterBuffer or jitter._origin is not None or not jitter._is_video:
        raise TypeError(f"aiortc changed: {JITTER_BUFFER_ATTR} is not an empty video JitterBuffer")
    stats = ReceiveStats()
    setattr(receiver, JITTER_BUFFER_ATTR, MarkerJitterBuffer(capacity=jitter.capacity, is_video=True))
    setattr(receiver, DECODER_QUEUE_ATTR, EncodedFrameQueue(max_encoded, decode_error.set, stats))
    setattr(track, TRACK_QUEUE_ATTR, NewestFrameQueue(max_decoded, stats))
    return stats


def bound_track(pc: RTCPeerConnection, track: MediaStreamTrack, **limits: int) -> Optional[ReceiveStats]:
    """`bound_receiver` for the receiver behind `track` on `pc` (None: not a remote video)."""
    for transceiver in pc.getTransceivers():
        if transceiver.receiver.track is track and track.kind == "video":
            return bound_receiver(transceiver.receiver, **limits)
    return None
