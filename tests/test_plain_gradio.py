"""The component in a plain Gradio app (no Ray): `demo.launch()` in this process, a
local sync fn, and the offer going exactly where the page sends it, Gradio's own
`POST /gradio_api/component_server` (plain Gradio has no `/webrtc/offer` route).

The peers here are aiortc clients on loopback; tests/test_browser.py drives the same
demo from Chromium.
"""

from __future__ import annotations

import asyncio
import threading
import time

import gradio as gr
import numpy as np
import pytest

from component import Detection, Detections, WebRTC
from tests.support.client import ComponentServerClient, OfferRejected, StreamClient
from tests.support.images import green_mask, photo
from tests.support.paths import load_example
from tests.support.ports import LOOPBACK, free_port
from tests.support.waits import wait_for

SEND_FPS = 15


def launch(demo: gr.Blocks) -> str:
    port = free_port()
    demo.launch(server_name=LOOPBACK, server_port=port, prevent_thread_lock=True, quiet=True)
    return f"http://{LOOPBACK}:{port}"


async def second_offer_refusal(url: str, component_id: int, image: np.ndarray) -> dict:
    """The failure meta answered to a second page's offer while a first one streams."""
    first = ComponentServerClient(url, component_id, image)
    second = ComponentServerClient(url, component_id, image)
    try:
        await first.connect()
        with pytest.raises(OfferRejected) as refused:
            await second.connect()
        return refused.value.body["meta"]
    finally:
        await first.close()


def set_inputs(client: StreamClient, *values) -> None:
    """What the page does when the slider moves: the values on the session's own channel."""
    client.send({"type": "inputs", "values": list(values)})


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return photo("astronaut")


@pytest.fixture(scope="module")
def example_app():
    module = load_example()
    demo = module.build_demo(time_limit=30)
    webrtc = next(b for b in demo.blocks.values() if isinstance(b, WebRTC))
    url = launch(demo)
    yield url, webrtc
    demo.close()


def face_box_coverage(image: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Share of the points on `box`'s left edge that are annotation green."""
    mask = green_mask(image)
    x1, y1, x2, y2 = box
    hits = [mask[y, max(0, x1 - 4) : x1 + 5].any() for y in range(y1 + 10, y2 - 10, 4)]
    return float(np.mean(hits))


async def test_example_demo_streams_detections_through_component_server(example_app, astronaut):
    url, webrtc = example_app
    module = load_example()
    face = module.detection(astronaut, 0.0)
    assert len(face) == 1
    h, w = astronaut.shape[:2]
    x1, y1, x2, y2 = face.items[0].box
    box = (int(x1 * w), int(y1 * h), int(x2 * w), int(y2 * h))

    client = ComponentServerClient(url, webrtc._id, astronaut, fps=SEND_FPS)
    try:
        await client.connect()
        await client.wait_connected()
        await client.wait_frames(5)
        await wait_for(lambda: face_box_coverage(client.latest_image(), box) > 0.8, 10,
                       what="the local model's face box in the returned frames")
        # The slider's value reaches this session's fn: 0.95 hides the face (~0.7).
        set_inputs(client, 0.95)
        await wait_for(lambda: face_box_coverage(client.latest_image(), box) < 0.1, 10,
                       what="no box at threshold 0.95")
        set_inputs(client, 0.0)
        await wait_for(lambda: face_box_coverage(client.latest_image(), box) > 0.8, 10,
                       what="the box back at threshold 0.0")
    finally:
        await client.close()


async def test_slow_sync_fn_runs_off_the_event_loop_and_sessions_do_not_wait_for_each_other(astronaut):
    """A 150 ms sync fn: the reference ran it on the event loop, so two clients got
    ~3 fps each. Here it runs on worker threads and the video keeps the camera's rate."""
    in_fn = 0
    most_in_fn = 0
    lock = threading.Lock()

    def slow_fn(frame: np.ndarray) -> Detections:
        nonlocal in_fn, most_in_fn
        with lock:
            in_fn += 1
            most_in_fn = max(most_in_fn, in_fn)
        time.sleep(0.15)  # blocking, as a CPU model would be
        with lock:
            in_fn -= 1
        return Detections((Detection((0.25, 0.25, 0.75, 0.75), "thing", 0.9),))

    with gr.Blocks() as demo:
        webrtc = WebRTC()
        webrtc.stream(fn=slow_fn, inputs=[webrtc], outputs=[webrtc], time_limit=30, concurrency_limit=4)
    url = launch(demo)
    small = np.ascontiguousarray(astronaut[::2, ::2])  # less codec work on a shared CI box
    clients = [ComponentServerClient(url, webrtc._id, small, fps=SEND_FPS) for _ in range(2)]
    try:
        await asyncio.gather(*(c.connect() for c in clients))
        await asyncio.gather(*(c.wait_connected() for c in clients))
        await asyncio.gather(*(c.wait_frames(5) for c in clients))
        starts = [(c.received.count, time.monotonic()) for c in clients]
        await asyncio.gather(*(c.wait_frames(3 * SEND_FPS, timeout=15) for c in clients))
        for c, (count, start) in zip(clients, starts):
            fps = (c.received.count - count) / (time.monotonic() - start)
            # On the event loop, two sessions of a 150 ms fn get <= 3.3 fps each; here
            # the video keeps (most of) the camera's rate, with room for a loaded box.
            assert fps >= 0.6 * SEND_FPS, f"received {fps:.1f} fps with a 150 ms fn, sent {SEND_FPS}"
        assert most_in_fn == 2, "the two sessions' fn calls never overlapped"
        for c in clients:
            assert green_mask(c.latest_image()).sum() > 200, "the fn's box is not drawn"
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        demo.close()


async def test_concurrency_limit_answers_busy_through_component_server(astronaut):
    with gr.Blocks() as demo:
        webrtc = WebRTC()
        webrtc.stream(fn=lambda f: None, inputs=[webrtc], outputs=[webrtc], concurrency_limit=1)
    url = launch(demo)
    try:
        meta = await second_offer_refusal(url, webrtc._id, astronaut)
    finally:
        demo.close()
    assert meta == {"error": "concurrency_limit_reached", "message": meta["message"], "limit": 1}


async def test_offer_rate_limit_applies_to_the_page_path(astronaut):
    """The page's offers go through component_server; they are rate-limited per
    client address like those on `POST /webrtc/offer`."""
    from component.policy import StreamPolicy

    with gr.Blocks() as demo:
        webrtc = WebRTC()
        webrtc.webrtc_stream(fn=lambda f: None, inputs=[webrtc], policy=StreamPolicy(offer_rate=0.01, offer_burst=1))
    url = launch(demo)
    try:
        meta = await second_offer_refusal(url, webrtc._id, astronaut)
    finally:
        demo.close()
    assert meta["error"] == "rate_limited"


async def test_example_demo_in_browser_render_sends_detections_not_video(astronaut):
    """The same example with `render="browser"`: the local model's faces come back as
    `detections` messages on the data channel, and no video at all."""
    module = load_example()
    demo = module.build_demo(time_limit=30, render="browser")
    webrtc = next(b for b in demo.blocks.values() if isinstance(b, WebRTC))
    url = launch(demo)
    [expected] = module.detection(astronaut, 0.0).items
    client = ComponentServerClient(url, webrtc._id, astronaut, fps=SEND_FPS)
    try:
        await client.connect()
        await client.wait_connected()

        def faces() -> list[dict]:
            return [m for m in client.messages if m.get("type") == "detections" and m["items"]]

        await wait_for(lambda: len(faces()) >= 3, 10, what="3 detections messages with the face")
        box = faces()[-1]["items"][0]["box"]
        assert all(abs(a - b) < 0.03 for a, b in zip(box, expected.box)), (box, expected.box)
        assert client.received.count == 0 and client.pc.getTransceivers()[0].currentDirection == "sendonly"
    finally:
        await client.close()
        demo.close()
