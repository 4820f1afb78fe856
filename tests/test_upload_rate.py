"""The upload cap (component/upload_rate.py): the rule on its own, then real aiortc
sessions whose server asks for fewer frames: in browser render when the fn takes
fewer, in server render when fewer go back out."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from component import Detection, Detections
from tests.support.client import StreamClient
from component.upload_rate import MAX_UPLOAD_FPS, MIN_UPLOAD_FPS, UploadRate
from tests.support.images import photo
from tests.support.waits import wait_for


def test_the_cap_follows_what_the_fn_takes_with_headroom():
    rate = UploadRate()
    # The fn takes 4 of 30 frames a second: ask for 1.5 x 4.
    assert rate.update(received=30, taken=4, elapsed_s=1.0) == pytest.approx(6.0)
    # The page obeys (6 arrive) and the fn still takes 4: nothing new to say.
    assert rate.update(received=6, taken=4, elapsed_s=1.0) is None
    # The fn now takes every frame: the upload is the limit, so the cap steps up...
    assert rate.update(received=6, taken=6, elapsed_s=1.0) == pytest.approx(7.5)
    # ...and keeps stepping while it stays the limit, up to the camera's rate.
    caps = [rate.update(received=30, taken=30, elapsed_s=1.0) for _ in range(12)]
    assert max(c for c in caps if c is not None) == MAX_UPLOAD_FPS and rate.cap == MAX_UPLOAD_FPS


def test_the_first_update_always_speaks_and_the_bounds_hold():
    fast = UploadRate()
    assert fast.update(received=30, taken=30, elapsed_s=1.0) == MAX_UPLOAD_FPS  # the page learns it
    assert fast.update(received=30, taken=30, elapsed_s=1.0) is None
    slow = UploadRate()
    assert slow.update(received=30, taken=1, elapsed_s=1.0) == MIN_UPLOAD_FPS  # never below the floor
    assert slow.update(received=0, taken=0, elapsed_s=1.0) is None  # no frames: no news
    # stream_every bounds what the fn can ever take: 1 / 0.5 s = 2 calls/s.
    assert UploadRate(stream_every=0.5).cap == MIN_UPLOAD_FPS
    assert UploadRate(stream_every=0.1).cap == pytest.approx(15.0)


def test_a_cap_that_did_not_leave_is_sent_again():
    rate = UploadRate()
    assert rate.update(received=30, taken=3, elapsed_s=1.0) == pytest.approx(MIN_UPLOAD_FPS)
    rate.unsent()  # the channel was not open yet
    assert rate.update(received=5, taken=3, elapsed_s=1.0) == pytest.approx(MIN_UPLOAD_FPS)


async def _slow_detections(frame: np.ndarray, threshold: float) -> Detections:
    await asyncio.sleep(0.25)
    return Detections((Detection((0.1, 0.1, 0.2, 0.2), "thing", 0.9),))


async def _slow_pictures(frame: np.ndarray, threshold: float) -> np.ndarray:
    await asyncio.sleep(0.25)
    return frame


@pytest.mark.parametrize("render,fn", [("browser", _slow_detections), ("server", _slow_pictures)])
async def test_a_slow_fn_makes_the_server_cap_the_upload(serve_stream, render, fn):
    """The fn answers about 4 times a second while 30 frames a second arrive. In
    browser render it takes about 4 of them; in server render only its 4 new pictures go
    back out. Either way, within a couple of seconds the session asks the page for
    about 1.5 x that. (This client ignores the cap, as any client may: the server keeps
    the newest frame anyway.)"""
    url, stream = await serve_stream(fn, stream_every=0.0, render=render)
    client = StreamClient(url, photo("astronaut"), fps=30)
    try:
        await client.connect()
        await client.wait_connected()
        caps = lambda: [m["max_fps"] for m in client.messages if m.get("type") == "upload_cap"]  # noqa: E731
        await wait_for(lambda: caps() and caps()[-1] < 15, 10, what="an upload_cap below 15 fps")
        assert MIN_UPLOAD_FPS <= caps()[-1] <= 1.5 * 4.5, caps()
        assert stream.get(client.webrtc_id).stats()["upload_max_fps"] == pytest.approx(caps()[-1], abs=0.1)
    finally:
        await client.close()


def test_running_totals_are_turned_into_per_window_counts():
    rate = UploadRate()
    assert rate.observe(100, 50, now=10.0) is None  # the baseline
    # 30 received and 4 taken in the next second: as update(30, 4, 1.0).
    assert rate.observe(130, 54, now=11.0) == pytest.approx(6.0)


async def test_server_render_leaves_a_page_alone_while_it_returns_every_frame(serve_stream):
    """render="server", detections drawn on every camera frame: everything that arrives
    goes back out, so the page is never capped (not even told 30: that would cap its
    bitrate too)."""

    def fn(frame: np.ndarray, threshold: float) -> Detections:
        return Detections((Detection((0.1, 0.1, 0.2, 0.2), "thing", 0.9),))

    url, stream = await serve_stream(fn, stream_every=0.0, render="server")
    client = StreamClient(url, photo("astronaut"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await client.wait_frames(45)  # three seconds of returned video: three updates
        session = stream.get(client.webrtc_id)
        await wait_for(lambda: session.outgoing.sent >= 45, 10, what="45 frames sent back")
        assert not [m for m in client.messages if m.get("type") == "upload_cap"], client.messages
        assert session.stats()["upload_max_fps"] == MAX_UPLOAD_FPS
    finally:
        await client.close()


def test_returned_video_starts_uncapped_and_speaks_only_when_it_falls():
    rate = UploadRate.returned_video()
    assert rate.update(received=30, taken=30, elapsed_s=1.0) is None  # at the max: silent
    assert rate.update(received=30, taken=8, elapsed_s=1.0) == pytest.approx(12.0)
    caps = [rate.update(received=12, taken=12, elapsed_s=1.0) for _ in range(8)]
    assert caps[-1] is None and rate.cap == MAX_UPLOAD_FPS and MAX_UPLOAD_FPS in caps


def test_no_session_is_capped_below_the_fair_share():
    """A session that fell behind (its fn took 4 a second while the others took 6) is
    not capped to 1.5 x its own 4, which would keep it behind, but to 1.5 x the mean."""
    from component.upload_rate import HEADROOM, FairShare

    share = FairShare()
    for key, taken in (("a", 6.0), ("b", 6.0), ("c", 4.0)):
        share.report(key, taken)
    floor = share.floor_fps()
    assert floor == pytest.approx(HEADROOM * 16 / 3)
    behind = UploadRate(0.0)
    assert behind.update(received=10, taken=4, elapsed_s=1.0, floor_fps=floor) == pytest.approx(floor)
    alone = UploadRate(0.0)
    assert alone.update(received=10, taken=4, elapsed_s=1.0) == pytest.approx(6.0)
    share.forget("a"), share.forget("b"), share.forget("c")
    assert share.floor_fps() == 0.0
