"""The server-wide upload ceiling (component/media_load.py): the rule on its own, the
probe on a real event loop, and a real aiortc session whose server loop is kept late
(a stream fn that blocks the loop, as a badly written one does) being capped."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from component import Detection, Detections
from component.media_load import DECREASE, HOLD_S, LATE_WINDOWS, STEP_FPS, LoopLagProbe, MediaLoad, quantile
from component.upload_rate import MAX_UPLOAD_FPS, MIN_UPLOAD_FPS, UploadRate
from tests.support.client import StreamClient
from tests.support.images import photo
from tests.support.waits import wait_for

LATE = [0.05] * 20  # a second of wake-ups 50 ms late: late at a 30 ms target
ON_TIME = [0.002] * 40


def _late_for(load: MediaLoad, start: float) -> float:
    """Late windows one second apart until the rule cuts; returns the time of the cut."""
    now = start
    for window in range(LATE_WINDOWS):
        now = start + window
        load.update(LATE, now=now)
    return now


def test_a_late_loop_cuts_the_ceiling_below_what_the_pages_send_then_holds():
    load = MediaLoad(target_s=0.03)
    load.report("a", 20.0)
    load.report("b", 10.0)
    assert load.update(LATE, now=0.0) is None  # one late second is a burst, not congestion
    assert load.update(ON_TIME, now=1.0) is None
    cut_at = _late_for(load, 2.0)
    assert load.ceiling_fps == pytest.approx(DECREASE * 15.0)  # x the mean sent
    # Within the hold the pages have not followed yet: no second cut.
    assert load.update(LATE, now=cut_at + HOLD_S / 2) == pytest.approx(DECREASE * 15.0)
    # After it, still late: cut from what they now send, if that is below the ceiling.
    load.report("a", 11.0)
    load.report("b", 11.0)
    _late_for(load, cut_at + HOLD_S + 0.1)
    assert load.ceiling_fps == pytest.approx(DECREASE * 11.0)
    assert load.cuts == 2
    # Never below the least upload rate.
    load.report("a", 1.0)
    load.report("b", 1.0)
    _late_for(load, cut_at + 4 * HOLD_S)
    assert load.ceiling_fps == MIN_UPLOAD_FPS


def test_an_on_time_loop_raises_the_ceiling_step_by_step_then_lifts_it():
    load = MediaLoad(target_s=0.03)
    load.report("a", 30.0)
    _late_for(load, 0.0)
    ceiling = load.ceiling_fps
    assert ceiling == pytest.approx(DECREASE * 30.0)
    # Between half the target and the target: it stays.
    assert load.update([0.02] * 40, now=10.0) == pytest.approx(ceiling)
    assert load.update(ON_TIME, now=11.0) == pytest.approx(ceiling + STEP_FPS)
    for second in range(12, 40):
        load.update(ON_TIME, now=float(second))
    assert load.ceiling_fps is None  # lifted once it reached the camera's rate
    assert load.stats() == {"loop_lag_ms": 2.0, "target_ms": 30.0, "ceiling_fps": None, "cuts": 1}


def test_no_sessions_no_ceiling():
    load = MediaLoad(target_s=0.03)
    _late_for(load, 0.0)
    assert load.ceiling_fps is None  # nothing reported: nothing to cap
    load.report("a", 30.0)
    _late_for(load, 10.0)
    assert load.ceiling_fps is not None
    load.forget("a")
    assert load.ceiling_fps is None  # the last session left: the next one starts free
    with pytest.raises(ValueError):
        MediaLoad(target_s=0)


def test_the_judged_lag_is_the_windows_90th_percentile():
    assert quantile([], 0.9) == 0.0
    samples = [0.001] * 9 + [0.5]  # one slow wake-up in ten is not congestion...
    assert quantile(samples, 0.9) == 0.5
    assert quantile(samples * 2 + [0.001] * 10, 0.9) == 0.001  # ...one in thirty neither


def test_the_ceiling_wins_over_the_sessions_own_cap_and_fair_share_floor():
    rate = UploadRate()
    # The fn takes everything (the cap would step up), the fair share says >= 12, the
    # server's CPU says 8: 8.
    assert rate.update(received=30, taken=30, elapsed_s=1.0, floor_fps=12.0, ceiling_fps=8.0) == 8.0
    assert rate.received_fps == 30.0
    assert rate.update(received=8, taken=8, elapsed_s=1.0, ceiling_fps=1.0) == MIN_UPLOAD_FPS
    assert rate.update(received=8, taken=8, elapsed_s=1.0) == pytest.approx(MIN_UPLOAD_FPS * 1.25)


async def test_the_probe_sees_a_blocked_loop():
    probe = LoopLagProbe(interval_s=0.01)
    task = asyncio.ensure_future(probe.run())
    try:
        await wait_for(lambda: len(probe._samples) >= 3, 5, interval=0.01, what="on-time samples")
        assert max(probe.take()) < 0.08
        time.sleep(0.1)  # the loop cannot run the probe's timer meanwhile
        await wait_for(lambda: probe._samples, 5, interval=0.01, what="a sample after the block")
        assert max(probe.take()) >= 0.08
    finally:
        task.cancel()


async def _blocking_fn(frame: np.ndarray, threshold: float) -> Detections:
    # A fn that does its work on the event loop: every call holds the loop for 60 ms.
    time.sleep(0.06)
    return Detections((Detection((0.1, 0.1, 0.2, 0.2), "thing", 0.9),))


async def test_a_late_media_loop_caps_every_page_lower(serve_stream):
    """The server's loop wakes 60 ms late again and again (against a 30 ms target):
    within a few seconds the ceiling is cut, the session's cap comes down to it and the
    page is told so; the operators' stats say why."""
    url, stream = await serve_stream(_blocking_fn, stream_every=0.0, render="server", media_lag_target_ms=30)
    client = StreamClient(url, photo("astronaut"), fps=30)
    load = lambda: stream.session_stats()["media_load"]  # noqa: E731
    try:
        await client.connect()
        await client.wait_connected()
        await wait_for(lambda: load()["cuts"] >= 1, 15, what="the ceiling cut")
        assert load()["loop_lag_ms"] > 30 and load()["ceiling_fps"] < MAX_UPLOAD_FPS, load()
        session = stream.get(client.webrtc_id)
        at_ceiling = lambda: session.upload.cap <= (load()["ceiling_fps"] or 0) + 0.1  # noqa: E731
        await wait_for(at_ceiling, 10, what="the session's cap at the server's ceiling")
        caps = lambda: [m["max_fps"] for m in client.messages if m.get("type") == "upload_cap"]  # noqa: E731
        await wait_for(lambda: caps() and caps()[-1] <= (load()["ceiling_fps"] or 0) + 0.1, 10,
                       what="the page told the ceiling")
    finally:
        await client.close()


async def test_the_ceiling_can_be_turned_off(serve_stream):
    """media_lag_target_ms=None: no probe, no ceiling, the video still flows."""
    url, stream = await serve_stream(_blocking_fn, stream_every=0.0, render="server", media_lag_target_ms=None)
    client = StreamClient(url, photo("astronaut"), fps=30)
    try:
        await client.connect()
        await client.wait_connected()
        await client.wait_frames(30)
        assert "media_load" not in stream.session_stats()
    finally:
        await client.close()


async def test_browser_render_has_no_ceiling(serve_stream):
    """In browser render the upload already follows what the fn takes; a ceiling on top
    cut the detections themselves (see `component.media_load`)."""
    _, stream = await serve_stream(_blocking_fn, render="browser", media_lag_target_ms=30)
    assert "media_load" not in stream.session_stats()
