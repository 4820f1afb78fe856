"""The component's server side without Ray: a StreamServer behind uvicorn on loopback
with a local fn, driven by a real aiortc client."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from component import Detection, Detections, VideoEncoding
from tests.support.client import StreamClient
from tests.support.images import green_mask, photo
from tests.support.waits import wait_for


async def test_every_frame_can_reach_a_fast_fn_and_comes_back_annotated(serve_stream):
    """A 10 ms fn with stream_every=0 keeps up with 15 fps: nearly every camera frame
    is processed (this caught a PyAV deadlock when two threads converted one frame)."""

    async def fn(frame: np.ndarray, threshold: float) -> Detections:
        await asyncio.sleep(0.01)
        return Detections((Detection((0.2, 0.2, 0.6, 0.6), "thing", 0.9),))

    url, stream = await serve_stream(fn, stream_every=0.0)
    client = StreamClient(url, photo("astronaut"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await client.wait_frames(45, timeout=10)
        session = stream.get(client.webrtc_id)
        assert session is not None
        calls = session.scheduler.stats.calls
        assert calls >= 0.7 * client.received.count, f"{calls} calls for {client.received.count} frames"
        assert green_mask(client.latest_image()).sum() > 200
    finally:
        await client.close()


async def test_a_slow_sync_fn_skips_frames_instead_of_queueing_them(serve_stream):
    """A 200 ms sync fn (run off the loop) against 15 fps: output keeps the camera's
    rate, the fn sees only the newest frames, and nothing queues up."""
    import time

    def slow(frame: np.ndarray, threshold: float) -> Detections:
        time.sleep(0.2)
        return Detections((Detection((0.2, 0.2, 0.6, 0.6), "slow", 0.9),))

    url, stream = await serve_stream(slow, stream_every=0.0)
    client = StreamClient(url, photo("astronaut"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await client.wait_frames(5)
        start = client.received.count
        t0 = asyncio.get_running_loop().time()
        await client.wait_frames(30, timeout=10)
        fps = (client.received.count - start) / (asyncio.get_running_loop().time() - t0)
        assert fps >= 12, f"output fell to {fps:.1f} fps behind a slow fn"
        stats = stream.get(client.webrtc_id).scheduler.stats
        assert stats.skipped > stats.calls, "slow fn should skip frames, not queue them"
    finally:
        await client.close()


async def test_stream_every_spaces_the_calls(serve_stream):
    async def fn(frame, threshold):
        return None

    url, stream = await serve_stream(fn, stream_every=0.25)
    client = StreamClient(url, photo("astronaut"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await client.wait_frames(5)
        before = stream.get(client.webrtc_id).scheduler.stats.calls
        await client.wait_frames(30, timeout=10)  # ~2 s at 15 fps
        calls = stream.get(client.webrtc_id).scheduler.stats.calls - before
        assert 4 <= calls <= 10, f"{calls} calls in ~2 s with stream_every=0.25"
    finally:
        await client.close()


async def test_inputs_travel_on_the_data_channel(serve_stream):
    """The page can send input values on the session's own channel (reaches the
    owning replica however HTTP is routed); malformed ones are ignored."""
    seen: list[float] = []

    async def fn(frame, threshold):
        seen.append(threshold)
        return None

    url, stream = await serve_stream(fn, stream_every=0.0)
    client = StreamClient(url, photo("astronaut"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await wait_for(lambda: client.channel.readyState == "open", 10, what="data channel open")
        session = stream.get(client.webrtc_id)
        for bad in ([0.1, 0.2], "0.1", [{"x": 1}], None):
            client.send({"type": "inputs", "values": bad})
        client.send({"type": "inputs", "values": [0.9]})
        await wait_for(lambda: session.inputs == (0.9,), 10, what="inputs updated from the channel")
        await wait_for(lambda: seen and seen[-1] == 0.9, 10, what="fn called with the new value")
    finally:
        await client.close()


async def test_odd_sized_camera_frames_pass_through(serve_stream):
    """chelsea is 451 px wide: PyAV refuses odd-width yuv420p arrays, which once
    killed the outgoing track silently. VP8: aiortc's own H.264 encoder (this client's)
    cannot send odd sizes (the server's H.264 encoder can: tests/test_encoding.py)."""

    async def fn(frame, threshold):
        return None

    url, _ = await serve_stream(fn, stream_every=0.1, encoding=VideoEncoding(codec="vp8"))
    client = StreamClient(url, photo("chelsea"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await client.wait_frames(15, timeout=15)
    finally:
        await client.close()


async def test_a_long_session_keeps_a_bounded_set_of_timers(serve_stream):
    """The idle check re-arms every second; fired timers must not pile up."""

    async def fn(frame, threshold):
        return None

    url, stream = await serve_stream(fn, stream_every=0.1, idle_timeout=0.4)
    client = StreamClient(url, photo("astronaut"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await client.wait_frames(45, timeout=15)  # ~3 s: ~15 idle checks at 0.2 s
        session = stream.get(client.webrtc_id)
        assert session is not None and len(session._timers) <= 4, len(session._timers)
    finally:
        await client.close()


# --- render="browser": detections on the data channel, no video back ---------------------

BOX = (0.2, 0.3, 0.6, 0.7)


def _detection_messages(client: StreamClient) -> list[dict]:
    return [m for m in client.messages if m.get("type") == "detections"]


async def test_browser_render_sends_detections_on_the_channel_and_no_video(serve_stream):
    async def fn(frame: np.ndarray, threshold: float) -> Detections:
        await asyncio.sleep(0.03)  # shows in age_ms: it counts from the frame's arrival
        return Detections((Detection(BOX, "thing", 0.9),))

    url, stream = await serve_stream(fn, stream_every=0.0, render="browser")
    client = StreamClient(url, photo("astronaut"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await wait_for(lambda: len(_detection_messages(client)) >= 10, 10, what="10 detections messages")
        got = _detection_messages(client)
        for m in got:
            assert set(m) == {"type", "seq", "age_ms", "items"}, m
            assert m["items"] == [{"box": list(BOX), "label": "thing", "score": 0.9}], m
            assert isinstance(m["age_ms"], float) and 30 <= m["age_ms"] < 1000, m
        seqs = [m["seq"] for m in got]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # none skipped here
        # No video came back: the answer only receives, and nothing was ever encoded.
        [transceiver] = client.pc.getTransceivers()
        assert transceiver.currentDirection == "sendonly"
        assert client.received.count == 0
        session = stream.get(client.webrtc_id)
        assert session.stats()["render"] == "browser" and session.stats()["overlay_sent"] >= 10
        assert session.outgoing.readyState == "live" and session.images.seq == 0
    finally:
        await client.close()


async def test_browser_render_ends_a_session_whose_fn_returns_images(serve_stream):
    """An unannotated fn that returns images passes setup; its first image ends the
    session with a reason the page explains (every later frame would fail the same)."""
    url, stream = await serve_stream(lambda frame, threshold: frame, stream_every=0.0, render="browser")
    client = StreamClient(url, photo("astronaut"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await asyncio.wait_for(client.ended.wait(), 10)
        assert client.messages[-1] == {"type": "end", "reason": "fn_returns_images"}
        assert not _detection_messages(client)
        await wait_for(lambda: stream.get(client.webrtc_id) is None, 5, what="the session gone")
    finally:
        await client.close()


def test_overlay_channel_skips_messages_instead_of_queueing_them():
    """A page that stops reading leaves bytes waiting on the channel; beyond the bound
    results are skipped and counted (the gap shows in `seq`). A stub channel stands in:
    a stalled SCTP association cannot be caused on demand on loopback."""
    import json
    import time

    from component.overlay_channel import OverlayChannel

    class StubChannel:
        readyState = "open"
        bufferedAmount = 0

        def __init__(self) -> None:
            self.sent: list[dict] = []

        def send(self, data: str) -> None:
            self.sent.append(json.loads(data))

    channel = StubChannel()
    overlay = OverlayChannel(lambda: channel, max_buffered=1000)
    found = Detections((Detection(BOX, "thing", 0.9),))
    assert overlay.publish(found, time.monotonic())
    channel.bufferedAmount = 5000
    assert not overlay.publish(found, time.monotonic())
    assert not overlay.publish(None, time.monotonic())  # None sends nothing, counts nothing
    channel.bufferedAmount = 0
    assert overlay.publish(Detections(), time.monotonic())
    assert (overlay.sent, overlay.skipped) == (2, 1)
    assert [m["seq"] for m in channel.sent] == [1, 3]
    assert channel.sent[1]["items"] == []
    with pytest.raises(TypeError, match="expected Detections"):
        overlay.publish("boxes", time.monotonic())


# --- mode="receive": the fn makes the picture -------------------------------------------


class ReceiveOnlyClient(StreamClient):
    """A peer like the page in mode="receive": it offers to receive video, sends none."""

    async def offer_sdp(self) -> str:
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp


async def test_receive_mode_streams_what_the_fn_makes(serve_stream):
    calls: list[object] = []

    def make(frame, threshold) -> np.ndarray:
        calls.append(frame)
        image = np.zeros((240, 320, 3), np.uint8)
        image[:, :, 1] = 255  # annotation green, easy to find after VP8
        return image

    url, stream = await serve_stream(make, stream_every=1 / 15, idle_timeout=0.5)
    client = ReceiveOnlyClient(url, photo("astronaut"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await client.wait_frames(20, timeout=10)
        assert client.latest_image().shape == (240, 320, 3)
        assert green_mask(client.latest_image()).mean() > 0.9
        assert set(calls) == {None}  # no camera: None where the frame would be
        # Without a camera there is nothing for the idle check to miss: still streaming.
        await client.wait_frames(15, timeout=5)
        assert stream.get(client.webrtc_id) is not None
    finally:
        await client.close()


async def test_receive_mode_generator_ends_the_session_when_exhausted(serve_stream):
    def frames(frame, threshold):
        for _ in range(10):
            yield np.full((120, 160, 3), 128, np.uint8)

    url, stream = await serve_stream(frames, stream_every=1 / 20)
    client = ReceiveOnlyClient(url, photo("astronaut"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await asyncio.wait_for(client.ended.wait(), 10)
        assert client.messages[-1] == {"type": "end", "reason": "stream_finished"}
        assert 5 <= client.received.count <= 10, client.received.count
    finally:
        await client.close()


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_stream_fn_sees_its_own_session_and_when_it_was_last_answered(serve_stream, kind):
    """`current_stream()` inside the fn names the calling session (an async fn on the
    loop, a sync fn in its worker thread) and when its previous call ended, which the
    Serve ingress sends with each frame so the detector serves the longest-waiting
    session first."""
    import time

    from component import current_stream

    seen: list[tuple[str, float, float]] = []
    keys: list[float] = []

    def note() -> Detections:
        stream = current_stream()
        assert stream is not None
        seen.append((stream.session_id, stream.last_answer_at, time.time()))
        keys.append(stream.queue_key)
        return Detections(())

    async def async_fn(frame: np.ndarray, threshold: float) -> Detections:
        return note()

    def sync_fn(frame: np.ndarray, threshold: float) -> Detections:
        return note()

    url, stream = await serve_stream(async_fn if kind == "async" else sync_fn, stream_every=0.1)
    client = StreamClient(url, photo("astronaut"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await wait_for(lambda: len(seen) >= 15, 20, what="15 fn calls")
        assert {session for session, _, _ in seen} == {client.webrtc_id}
        # Each call sees the end of the one before it: later than that call's start,
        # and (stream_every 0.1 s) about 0.1 s before its own.
        for (_, _, previous_start), (_, last_answer, start) in zip(seen, seen[1:]):
            assert previous_start <= last_answer <= start
        gaps = sorted(start - last_answer for _, last_answer, start in seen[1:])
        assert 0.03 <= gaps[len(gaps) // 2] <= 0.2, gaps
        # Its queue keys (the server's `FairOrder`) rise with every frame and stay
        # within a few cycles of the wall clock.
        assert all(b > a for a, b in zip(keys, keys[1:])), keys
        assert abs(keys[-1] - seen[-1][2]) < 1.0
        assert current_stream() is None  # the test's own task is no session's
        assert len(stream._fair_order) == 1
    finally:
        await client.close()
    # A closed session leaves nothing in the server's order.
    await wait_for(lambda: len(stream._fair_order) == 0, 10, what="the session to leave the fair order")
