"""The component's server side without Ray: a StreamServer behind uvicorn on loopback
with a local fn, driven by a real aiortc client."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from component import (
    Detection, Detections, IceConfig, StreamConfig, StreamServer, VideoEncoding, mount_offer_routes,
)
from component.client import StreamClient
from tests.helpers import LOOPBACK, free_port, green_mask, photo, wait_for


@pytest.fixture
async def serve_stream():
    servers: list[tuple[uvicorn.Server, asyncio.Task, StreamServer]] = []

    async def start(fn, **config) -> tuple[str, StreamServer]:
        stream = StreamServer(
            StreamConfig(fn=fn, **config), IceConfig(host_addresses=(LOOPBACK,)), default_inputs=[0.5]
        )
        app = FastAPI()
        mount_offer_routes(app, stream)
        port = free_port()
        http = uvicorn.Server(uvicorn.Config(app, host=LOOPBACK, port=port, log_level="warning", lifespan="off"))
        task = asyncio.create_task(http.serve())
        await wait_for(lambda: http.started, 10, what="uvicorn to start")
        servers.append((http, task, stream))
        return f"http://{LOOPBACK}:{port}", stream

    yield start
    for http, task, stream in servers:
        await stream.close_all()
        http.should_exit = True
        await asyncio.wait_for(task, 10)


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
