"""The bounded receive path (`component.receive`) against the installed aiortc.

These fail when an aiortc upgrade changes what the seam relies on: the receiver's
private decoder queue and decode-error event, the track's frame queue, the decoder
worker's arguments, or the PLI that a set decode-error event triggers.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from fractions import Fraction

import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.codecs import get_decoder
from aiortc.rtcrtpreceiver import decoder_worker
from aiortc.rtp import RtpPacket

from component.ice import IceConfig, scoped_process_ice, strip_mdns_candidates
from component.receive import (
    DECODER_ERROR_ATTR,
    DECODER_QUEUE_ATTR,
    JITTER_BUFFER_ATTR,
    TRACK_QUEUE_ATTR,
    EncodedFrameQueue,
    MarkerJitterBuffer,
    NewestFrameQueue,
    ReceiveStats,
    bound_track,
    is_keyframe,
)
from tests.support.client import ImageTrack, read_frame_id, stamp_frame_id
from tests.support.images import photo
from tests.support.ports import LOOPBACK
from tests.support.waits import wait_for

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


def test_decoder_worker_takes_the_queues_the_seam_replaces():
    assert list(inspect.signature(decoder_worker).parameters) == ["loop", "input_q", "output_q", "decode_error"]


def _vp8_stream(count: int, keyframes_at: set[int]) -> list[tuple[int, bytes]]:
    """Real VP8 frames (numbered in their pixels), keyframes only where asked."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = 320, 240, "yuv420p"
    enc.bit_rate, enc.gop_size = 500_000, 10_000
    enc.time_base = Fraction(1, 30)
    enc.options = {"deadline": "realtime", "lag-in-frames": "0", "cpu-used": "8"}
    base = photo("astronaut")[:240, :320].copy()
    out = []
    for i in range(count):
        img = base.copy()
        stamp_frame_id(img, i)
        frame = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
        frame.pts = i
        frame.pict_type = av.video.frame.PictureType.I if i in keyframes_at else av.video.frame.PictureType.NONE
        data = b"".join(bytes(p) for p in enc.encode(frame))
        out.append((i, data))
    return out


def test_decoder_falling_behind_skips_to_a_keyframe_and_decodes_cleanly():
    stream = _vp8_stream(8, keyframes_at={0, 5})
    assert [is_keyframe("video/VP8", d) for _, d in stream] == [i in (0, 5) for i in range(8)]
    requests: list[float] = []
    stats = ReceiveStats()
    q = EncodedFrameQueue(2, lambda: requests.append(time.monotonic()), stats)
    for i, data in stream:
        q.put((VP8, JitterFrame(data=data, timestamp=i * 3000)))
        assert q.qsize() <= 2
    # 0, 1 queued; 2 overflowed: all dropped, PLI asked once; 3, 4 dropped waiting;
    # keyframe 5 resumes; 6 queued; 7 overflows again (dropping 5 and 6 and itself).
    assert len(requests) == 2, requests
    assert stats.keyframes_in == 2 and stats.encoded_dropped == 8 and q.qsize() == 0
    q2 = EncodedFrameQueue(2, lambda: requests.append(time.monotonic()), ReceiveStats())
    for i, data in stream[:2] + stream[5:7]:  # what a decoder that takes two at a time sees
        q2.put((VP8, JitterFrame(data=data, timestamp=i * 3000)))
        if q2.qsize() == 2:
            decoder, decoded = get_decoder(VP8), []
            while not q2.empty():
                _codec, encoded = q2.get_nowait()
                decoded += decoder.decode(encoded)
            ids = [read_frame_id(f.to_ndarray(format="bgr24")) for f in decoded]
            assert ids in ([0, 1], [5, 6]), ids


async def test_newest_frame_queue_keeps_the_newest_and_delivers_the_end():
    stats = ReceiveStats()
    q = NewestFrameQueue(1, stats)
    for i in range(5):
        await q.put(i)
    await q.put(None)
    assert [q.get_nowait(), q.get_nowait()] == [4, None] and stats.decoded_dropped == 4


@pytest.fixture
def loopback_ice():
    with scoped_process_ice(IceConfig(host_addresses=(LOOPBACK,)), owner="test_receive_seam"):
        yield


async def _negotiate(sender_pc: RTCPeerConnection, receiver_pc: RTCPeerConnection) -> None:
    """Offer from the sender, answer from the receiver, on loopback."""
    await sender_pc.setLocalDescription(await sender_pc.createOffer())
    await receiver_pc.setRemoteDescription(
        type(sender_pc.localDescription)(strip_mdns_candidates(sender_pc.localDescription.sdp), "offer")
    )
    await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
    await sender_pc.setRemoteDescription(receiver_pc.localDescription)


async def test_slow_consumer_on_a_real_pair_only_sees_recent_frames(loopback_ice):
    """A reader at 5 fps of a 30 fps camera: without the bound the track's queue grows
    and frames get ~25 frames older every second; with it, every frame read is recent.
    A set decode-error event makes aiortc send a PLI: the sender's next frame is a key."""
    config = RTCConfiguration(iceServers=[])
    sender_pc, receiver_pc = RTCPeerConnection(config), RTCPeerConnection(config)
    camera = ImageTrack(photo("astronaut")[:240, :320].copy(), fps=30, stamp_ids=True)
    sender_pc.addTrack(camera)
    ages: list[int] = []
    bound: dict = {}

    async def consume(track) -> None:
        while True:
            frame = await track.recv()
            ages.append(camera.sent - 1 - read_frame_id(frame.to_ndarray(format="bgr24")))
            await asyncio.sleep(0.2)

    def on_track(track) -> None:
        bound["stats"] = bound_track(receiver_pc, track)
        receiver = next(t.receiver for t in receiver_pc.getTransceivers() if t.receiver.track is track)
        bound["receiver"], bound["track"] = receiver, track
        bound["task"] = asyncio.ensure_future(consume(track))

    receiver_pc.on("track", on_track)
    try:
        await _negotiate(sender_pc, receiver_pc)
        await wait_for(lambda: len(ages) >= 20, 20, what="20 frames read at 5 fps")
        stats: ReceiveStats = bound["stats"]
        # aiortc really feeds our queues (an upgrade that rebuilds them fails here).
        assert isinstance(getattr(bound["receiver"], DECODER_QUEUE_ATTR), EncodedFrameQueue)
        assert isinstance(getattr(bound["track"], TRACK_QUEUE_ATTR), NewestFrameQueue)
        assert stats.encoded_in >= 60 and stats.decoded_dropped >= 40, stats
        steady = ages[5:]
        assert max(steady) <= 10, f"frame ages (in frames) grew: {ages}"

        keyframes = stats.keyframes_in
        getattr(bound["receiver"], DECODER_ERROR_ATTR).set()
        await wait_for(lambda: stats.keyframes_in > keyframes, 5, what="a keyframe after the PLI")
    finally:
        if "task" in bound:
            bound["task"].cancel()
        await sender_pc.close()
        await receiver_pc.close()


def _packet(seq: int, timestamp: int, data: bytes, marker: bool) -> RtpPacket:
    packet = RtpPacket(payload_type=96, marker=int(marker), sequence_number=seq, timestamp=timestamp)
    packet._data = data  # what aiortc's receiver sets (the depayloaded bytes)
    return packet


def test_a_frame_leaves_the_jitter_buffer_with_its_marked_last_packet():
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    assert buffer.add(_packet(10, 3000, b"a", False)) == (False, None)
    assert buffer.add(_packet(11, 3000, b"b", False)) == (False, None)
    _, frame = buffer.add(_packet(12, 3000, b"c", True))
    assert (frame.data, frame.timestamp) == (b"abc", 3000)
    # The next frame's first packet does not hand the same frame on again.
    assert buffer.add(_packet(13, 6000, b"d", False)) == (False, None)
    # Out of order: whole once the missing middle arrives.
    assert buffer.add(_packet(15, 6000, b"f", True)) == (False, None)
    _, frame = buffer.add(_packet(14, 6000, b"e", False))
    assert (frame.data, frame.timestamp) == (b"def", 6000)
    # Padding after the marked packet (no payload, same timestamp) is no frame.
    assert buffer.add(_packet(16, 6000, b"", False)) == (False, None)
    _, frame = buffer.add(_packet(17, 9000, b"g", True))
    assert frame.data == b"g"


def test_without_a_marker_aiortcs_own_rule_still_applies():
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    assert buffer.add(_packet(1, 3000, b"a", False)) == (False, None)
    assert buffer.add(_packet(2, 3000, b"b", False)) == (False, None)
    _, frame = buffer.add(_packet(3, 6000, b"c", False))  # the next frame begins
    assert frame.data == b"ab"


async def test_a_slow_camera_is_decoded_without_waiting_for_its_next_frame(loopback_ice):
    """A 2 fps camera on a real aiortc pair: each frame reaches the reader long before
    the next one is sent (aiortc's own jitter buffer held every frame until the next
    began: 500 ms here, 140-200 ms at the rates an overloaded server asks for)."""
    config = RTCConfiguration(iceServers=[])
    sender_pc, receiver_pc = RTCPeerConnection(config), RTCPeerConnection(config)
    camera = ImageTrack(photo("astronaut")[:240, :320].copy(), fps=2, stamp_ids=True)
    sender_pc.addTrack(camera)
    delays: list[float] = []
    bound: dict = {}

    async def consume(track) -> None:
        while True:
            frame = await track.recv()
            delays.append(time.monotonic() - camera.sent_at[read_frame_id(frame.to_ndarray(format="bgr24"))])

    def on_track(track) -> None:
        bound_track(receiver_pc, track)
        receiver = next(t.receiver for t in receiver_pc.getTransceivers() if t.receiver.track is track)
        bound["receiver"] = receiver
        bound["task"] = asyncio.ensure_future(consume(track))

    receiver_pc.on("track", on_track)
    try:
        await _negotiate(sender_pc, receiver_pc)
        await wait_for(lambda: len(delays) >= 6, 20, what="6 frames at 2 fps")
        assert sorted(delays)[len(delays) // 2] < 0.25, f"send-to-read delays (s): {delays}"
        assert isinstance(getattr(bound["receiver"], JITTER_BUFFER_ATTR), MarkerJitterBuffer)
    finally:
        if "task" in bound:
            bound["task"].cancel()
        await sender_pc.close()
        await receiver_pc.close()
