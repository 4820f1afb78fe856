"""The whole path on real Ray Serve: aiortc client -> offer -> session -> batched
detector -> annotated track, on loopback only."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from component.client import StreamClient
from deployments.models import ModelSpec, build_preprocessor, load_backend
from tests.helpers import green_mask, photo, wait_for

SEND_FPS = 15


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return photo("astronaut")


@pytest.fixture(scope="module")
def expected_face(astronaut) -> tuple[int, int, int, int]:
    """The face box the same model finds locally, in pixels of the sent image."""
    spec = ModelSpec()
    found = load_backend(spec).infer([build_preprocessor(spec)(astronaut)])[0]
    assert len(found) == 1, f"Haar should find one face in astronaut, found {found}"
    h, w = astronaut.shape[:2]
    x1, y1, x2, y2 = found.items[0].box
    return int(x1 * w), int(y1 * h), int(x2 * w), int(y2 * h)


def box_edge_coverage(image: np.ndarray, box: tuple[int, int, int, int], slack: int = 4) -> float:
    """Fraction of points along `box`'s left and bottom edges that are annotation green
    (the top edge carries the label background, the right edge is checked by left)."""
    mask = green_mask(image)
    x1, y1, x2, y2 = box
    hits = []
    for y in range(y1 + 10, y2 - 10, 4):  # left edge
        hits.append(mask[y, max(0, x1 - slack) : x1 + slack + 1].any())
    for x in range(x1 + 10, x2 - 10, 4):  # bottom edge
        hits.append(mask[max(0, y2 - slack) : y2 + slack + 1, x].any())
    return float(np.mean(hits))


async def set_threshold(base_url: str, webrtc_id: str, threshold: float) -> None:
    """What the page does when the slider moves: Gradio's event API with the stream's inputs."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        resp = await http.post(
            f"{base_url}/gradio_api/run/webrtc_set_inputs", json={"data": [webrtc_id, threshold]}
        )
    assert resp.status_code == 200, resp.text


async def stats(base_url: str) -> dict:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        resp = await http.get(f"{base_url}/webrtc/stats")
    resp.raise_for_status()
    return resp.json()


async def test_annotated_frames_come_back_at_the_sent_rate(main_app, astronaut, expected_face):
    client = StreamClient(main_app.url, astronaut, fps=SEND_FPS)
    try:
        await client.connect()
        await client.wait_connected()
        await client.wait_frames(5)  # warm-up: decoder and first detections
        start_count, start = client.received.count, time.monotonic()
        await client.wait_frames(3 * SEND_FPS, timeout=15)
        fps = (client.received.count - start_count) / (time.monotonic() - start)
        assert fps >= 0.8 * SEND_FPS, f"received {fps:.1f} fps, sent {SEND_FPS}"

        async def box_drawn():
            return box_edge_coverage(client.latest_image(), expected_face) > 0.8

        await wait_for(box_drawn, 10, what="the detector's face box in the returned frames")
        image = client.latest_image()
        outside = green_mask(image)[:, expected_face[2] + 40 :]
        assert outside.sum() < 50, "annotation colour far away from the face"
    finally:
        await client.close()


async def test_detector_runs_below_the_video_on_its_own_cpus(main_app):
    """Default app args: the detector replica runs at nice 10 with one OpenCV thread
    (detector_num_cpus=0.5), so a saturated detector cannot take the video's cores."""
    from ray import serve

    handle = serve.get_deployment_handle("Detector", app_name=main_app.name)
    got = await handle.stats.remote()
    assert main_app.args.detector_priority == "low"
    assert got["nice"] >= 10 and got["cv2_threads"] == 1, got


async def test_slider_value_reaches_the_fn_mid_stream(main_app, astronaut, expected_face):
    client = StreamClient(main_app.url, astronaut, fps=SEND_FPS)
    try:
        await client.connect()
        await client.wait_connected()
        await client.wait_frames(1)

        def coverage() -> float:
            return box_edge_coverage(client.latest_image(), expected_face)

        await wait_for(lambda: coverage() > 0.8, 15, what="box drawn at the default threshold")
        # The face scores ~0.5: a 0.95 threshold hides it, 0.0 shows it again.
        await set_threshold(main_app.url, client.webrtc_id, 0.95)
        await wait_for(lambda: coverage() < 0.1, 10, what="box gone at threshold 0.95")
        session = next(s for s in (await stats(main_app.url))["sessions"] if s["webrtc_id"] == client.webrtc_id)
        assert session["inputs"] == [0.95]
        await set_threshold(main_app.url, client.webrtc_id, 0.0)
        await wait_for(lambda: coverage() > 0.8, 10, what="box back at threshold 0.0")
    finally:
        await client.close()


async def test_time_limit_ends_the_session_on_time(short_app, astronaut):
    limit = short_app.args.time_limit
    client = StreamClient(short_app.url, astronaut, fps=SEND_FPS)
    try:
        await client.connect()
        await client.wait_connected()
        connected = time.monotonic()
        await asyncio.wait_for(client.ended.wait(), limit + 5)
        elapsed = time.monotonic() - connected
        assert abs(elapsed - limit) < 1.0, f"ended after {elapsed:.2f} s, limit {limit} s"
        assert client.messages[-1] == {"type": "end", "reason": "time_limit"}
        await wait_for(
            lambda: client.pc.connectionState == "closed" or client.pc.connectionState == "failed",
            5, what="the server closing the peer connection",
        )
    finally:
        await client.close()

    async def no_sessions():
        return (await stats(short_app.url))["active"] == 0

    await wait_for(no_sessions, 5, what="the ingress to hold no session")
