"""The outgoing encoder seam (`component.encoding`) against the installed aiortc: our
options reach libvpx/libx264 and the preferred codec is what a real aiortc peer gets.
(That Chromium plays it: tests/test_browser.py.)"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from component import Detection, Detections, VideoEncoding
from component.encoding import (
    FAST_MAX_BITRATE, FULL_RATE_FPS, SENDER_ENCODER_ATTR, FrameRate, TunedH264Encoder, TunedVp8Encoder, make_encoder,
)
from tests.support.client import StreamClient
from tests.support.images import green_mask, photo
from tests.support.waits import wait_for


def _frame() -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(photo("astronaut")[:480, :512].copy(), format="bgr24").reformat(
        width=640, height=480, format="yuv420p"
    )
    frame.pts, frame.time_base = 0, Fraction(1, 90000)
    return frame


@pytest.mark.parametrize(
    "mime,expected",
    [("video/VP8", {"cpu-used": "-10", "noise-sensitivity": "0", "deadline": "realtime"}),
     ("video/H264", {"preset": "ultrafast", "tune": "zerolatency", "level": "31"})],
)  # fmt: skip
def test_fast_options_reach_the_codec_over_aiortcs_own(mime, expected):
    encoder = make_encoder(mime, VideoEncoding(threads=1))
    assert isinstance(encoder, TunedVp8Encoder if "VP8" in mime else TunedH264Encoder)
    payloads, _ = encoder.encode(_frame(), force_keyframe=True)
    assert payloads
    applied = encoder.codec.applied_options
    assert {k: applied.get(k) for k in expected} == expected, applied
    # After opening, PyAV lists only the options the codec did not consume.
    assert not set(expected) & set(encoder.codec.options), encoder.codec.options
    assert encoder.codec.thread_count == 1


def test_odd_sized_frames_still_encode_as_h264():
    encoder = make_encoder("video/H264", VideoEncoding())
    frame = av.VideoFrame(451, 301, "yuv420p")
    frame.pts, frame.time_base = 0, Fraction(1, 90000)
    payloads, _ = encoder.encode(frame, force_keyframe=True)
    assert payloads and (encoder.codec.width, encoder.codec.height) == (450, 300)


def test_h264_defaults_one_thread_and_a_ceiling_matching_vp8s_picture():
    """The fast H.264 encoder runs on one thread (libx264's slice threads cost more CPU
    than they save at this size) under FAST_MAX_BITRATE, not aiortc's 3 Mbps; an explicit
    `threads` or `max_bitrate` wins, and `fast=False` keeps aiortc's own."""
    encoder = make_encoder("video/H264", VideoEncoding())
    encoder.target_bitrate = 3_000_000  # a receiver's REMB asking for more
    encoder.frame_rate.frame(0.0)
    encoder.encode(_frame(), force_keyframe=True)
    assert encoder.codec.thread_count == 1
    assert encoder.codec.bit_rate == FAST_MAX_BITRATE["video/h264"] < 3_000_000
    mine = make_encoder("video/H264", VideoEncoding(threads=2, max_bitrate=2_000_000))
    mine.target_bitrate = 3_000_000
    mine.encode(_frame(), force_keyframe=True)
    assert (mine.codec.thread_count, mine.codec.bit_rate) == (2, 2_000_000)
    plain = make_encoder("video/H264", VideoEncoding(fast=False))
    plain.target_bitrate = 3_000_000
    plain.encode(_frame(), force_keyframe=True)
    assert plain.codec.bit_rate == 3_000_000


def test_aiortc_options_kept_when_not_fast():
    encoder = make_encoder("video/VP8", VideoEncoding(codec="vp8", fast=False))
    encoder.encode(_frame())
    applied = encoder.codec.applied_options
    assert applied.get("cpu-used") == "-6" and applied.get("noise-sensitivity") == "4"


def _frames_at(fps: float, start_s: float, count: int) -> list[av.VideoFrame]:
    frames = []
    for i in range(count):
        frame = _frame()
        frame.pts = round((start_s + i / fps) * 90000)
        frames.append(frame)
    return frames


@pytest.mark.parametrize("mime,remb", [("video/VP8", 1_500_000), ("video/H264", 3_000_000)])
def test_the_bitrate_follows_the_frame_rate(mime, remb):
    """The receiver's estimate is for the camera's rate: at a third of the frames each
    frame keeps its bits (the codec runs at a third of the estimate), and the full
    estimate comes back with the full rate. REMB changes still land. (The ceiling is
    aiortc's own here, so the estimate is what moves.)"""
    encoder = make_encoder(mime, VideoEncoding(max_bitrate=remb))
    encoder.target_bitrate = remb
    for frame in _frames_at(30, 0.0, 10):
        encoder.encode(frame)
    assert encoder.codec.bit_rate == remb
    for frame in _frames_at(10, 1.0, 20):
        encoder.encode(frame)
    assert encoder.frame_rate.fps == pytest.approx(10, rel=0.25)
    assert encoder.codec.bit_rate == pytest.approx(remb * encoder.frame_rate.fps / FULL_RATE_FPS, rel=0.01)
    assert encoder.codec.applied_options.get("bufsize", str(encoder.codec.bit_rate)) == str(encoder.codec.bit_rate)
    for frame in _frames_at(30, 3.0, 30):
        encoder.encode(frame)
    assert encoder.codec.bit_rate == remb
    encoder.target_bitrate = remb // 2  # the link got worse
    encoder.encode(_frames_at(30, 4.0, 1)[0])
    assert encoder.codec.bit_rate == remb // 2


@pytest.mark.parametrize("mime,remb", [("video/VP8", 1_500_000), ("video/H264", 3_000_000)])
def test_max_bitrate_caps_the_receivers_estimate(mime, remb):
    """`max_bitrate` bounds what the codec runs at, whatever REMB allows; an estimate
    below it is still followed, and the frame-rate scaling applies under the cap."""
    cap, worse = 1_200_000, 700_000  # both above either codec's floor
    encoder = make_encoder(mime, VideoEncoding(max_bitrate=cap))
    encoder.target_bitrate = remb
    for frame in _frames_at(30, 0.0, 5):
        encoder.encode(frame)
    assert encoder.codec.bit_rate == cap
    encoder.target_bitrate = worse  # a worse link: below the cap, followed
    encoder.encode(_frames_at(30, 5 / 30, 1)[0])
    assert encoder.codec.bit_rate == worse
    encoder.target_bitrate = remb
    for frame in _frames_at(10, 2.0, 20):
        encoder.encode(frame)
    scaled = max(encoder.MIN_BITRATE, cap * encoder.frame_rate.fps / FULL_RATE_FPS)
    assert encoder.codec.bit_rate == pytest.approx(scaled, rel=0.01)
    default = make_encoder(mime, VideoEncoding())  # aiortc's ceiling, or ours for H.264
    default.target_bitrate = remb
    default.encode(_frames_at(30, 0.0, 1)[0])
    assert default.codec.bit_rate == min(remb, FAST_MAX_BITRATE.get(mime.lower(), remb))


def test_the_frame_rate_ignores_jitter_and_follows_real_changes():
    rate = FrameRate()
    stamps = [i / 30 + (0.004 if i % 2 else -0.004) for i in range(60)]  # 30 fps, +-4 ms
    assert [rate.frame(t) for t in stamps][-1] == FULL_RATE_FPS
    for i in range(1, 30):
        rate.frame(2.0 + i / 6)  # 6 fps
    assert rate.fps == pytest.approx(6, rel=0.25)
    assert rate.frame(1.0) == rate.fps  # a stamp from the past changes nothing


def _first_video_codec(sdp: str) -> str:
    from aiortc import sdp as aiortc_sdp

    [video] = [m for m in aiortc_sdp.SessionDescription.parse(sdp).media if m.kind == "video"]
    return video.rtp.codecs[0].mimeType.lower()


@pytest.mark.parametrize("codec,camera_codec", [("h264", "vp8"), ("vp8", "vp8"), ("h264", "h264")])
async def test_each_direction_gets_its_codec_and_streams(serve_stream, codec, camera_codec):
    """The answer asks the camera for `camera_codec`; our sender sends `codec` all the
    same, and a real aiortc peer decodes it."""
    async def fn(frame: np.ndarray, threshold: float) -> Detections:
        return Detections((Detection((0.2, 0.2, 0.6, 0.6), "thing", 0.9),))

    encoding = VideoEncoding(codec=codec, camera_codec=camera_codec)
    url, stream = await serve_stream(fn, stream_every=0.0, encoding=encoding)
    client = StreamClient(url, photo("astronaut")[:480, :640].copy(), fps=15)
    try:
        answer = await client.connect()
        await client.wait_connected()
        await client.wait_frames(20, timeout=15)
        # What the peer was asked for, and sends (aiortc sends the answer's first codec).
        assert _first_video_codec(answer["sdp"]) == f"video/{camera_codec}"
        [sent] = [t for t in client.pc.getTransceivers() if t.kind == "video"]
        assert sent._codecs[0].mimeType.lower() == f"video/{camera_codec}"
        session = stream.get(client.webrtc_id)
        # The answer given stays as it was; our sender uses `codec`.
        assert _first_video_codec(session.pc.localDescription.sdp) == f"video/{camera_codec}"
        [transceiver] = [t for t in session.pc.getTransceivers() if t.kind == "video"]
        assert transceiver._codecs[0].mimeType.lower() == f"video/{codec}"
        encoder = getattr(transceiver.sender, SENDER_ENCODER_ATTR)
        assert isinstance(encoder, TunedH264Encoder if codec == "h264" else TunedVp8Encoder)
        assert green_mask(client.latest_image()).sum() > 200
        # The track encodes in its drawing hop and honours the browser's PLI.
        driven = session.outgoing._encoder
        assert driven is not None and driven.encoder is encoder
        forced = driven.keyframes_forced
        transceiver.sender._send_keyframe()  # what aiortc does on a PLI or FIR
        await wait_for(lambda: driven.keyframes_forced > forced, 5, what="a keyframe after the PLI")
        count = client.received.count
        await client.wait_frames(count + 10, timeout=10)
    finally:
        await client.close()
