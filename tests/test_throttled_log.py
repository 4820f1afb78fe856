"""A failure that repeats every frame is logged once in full, then counted: the log
stays bounded however long it goes on. Time is an injected clock, never a sleep."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from av import VideoFrame

from component.detections import Detection, Detections
from component.throttled_log import ThrottledLog
from component.tracks import CameraFrame, Latest, OutgoingTrack
from tests.support.client import StreamClient
from tests.support.images import photo
from tests.support.waits import wait_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_first_failure_in_full_then_one_summary_per_interval(caplog):
    clock = FakeClock()
    logger = logging.getLogger("rayrtc.test_throttled_log")
    throttled = ThrottledLog(logger, "frame failed", every_s=10.0, clock=clock)
    caplog.set_level(logging.ERROR, logger=logger.name)
    for i in range(1800):  # a minute at 30 fps
        clock.now = i / 30
        throttled.failure(RuntimeError(f"bad frame {i}"))
    records = [r for r in caplog.records if r.name == logger.name]
    # One in full, then one line per 10 s: at 10, 20, 30, 40 and 50 s.
    assert len(records) == 6, [r.getMessage() for r in records]
    assert records[0].exc_info is not None and records[0].getMessage() == "frame failed"
    assert all(r.exc_info is None for r in records[1:])
    held_back = [r.args[1] for r in records[1:]]
    assert held_back == [300] * 5
    assert "(1501 in all), latest RuntimeError: bad frame 1500" in records[-1].getMessage()
    assert throttled.count == 1800


def test_another_owner_reports_its_own_first_failure(caplog):
    clock = FakeClock()
    logger = logging.getLogger("rayrtc.test_throttled_log")
    caplog.set_level(logging.ERROR, logger=logger.name)
    noisy, quiet = (ThrottledLog(logger, name, clock=clock) for name in ("noisy", "quiet"))
    for _ in range(100):
        noisy.failure(ValueError("again"))
    quiet.failure(ValueError("once"))
    assert [r.getMessage() for r in caplog.records if r.name == logger.name] == ["noisy", "quiet"]


async def test_outgoing_track_logs_a_failing_draw_once_then_counts_and_keeps_sending(caplog):
    """A real draw failure (a fn's result with a score that is not a number cannot be
    labelled), on every camera frame: one error with its traceback, then one summary
    once the clock passes 10 s; the track still sends the next frame it can draw."""
    clock = FakeClock()
    camera: Latest[CameraFrame] = Latest()
    detections: Latest[Detections] = Latest()
    images: Latest[VideoFrame] = Latest()
    detections.put(Detections((Detection((0.1, 0.1, 0.6, 0.6), "face", "high"),)))  # type: ignore[arg-type]
    caplog.set_level(logging.ERROR, logger="rayrtc.tracks")

    def errors() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "rayrtc.tracks"]

    with ThreadPoolExecutor(1) as pool:
        track = OutgoingTrack(camera, detections, images, pool, clock=clock)
        sending = asyncio.ensure_future(track.recv())
        try:
            for i in range(1, 61):
                camera.put(CameraFrame(VideoFrame(64, 48, "yuv420p")))
                await wait_for(lambda: track.render_errors.count == i, 5, interval=0.001, what=f"failure {i}")
            assert len(errors()) == 1 and errors()[0].exc_info is not None
            assert not sending.done()

            clock.now = 10.0
            camera.put(CameraFrame(VideoFrame(64, 48, "yuv420p")))
            await wait_for(lambda: track.render_errors.count == 61, 5, interval=0.001, what="failure 61")
            assert len(errors()) == 2
            assert "60 more times" in errors()[1].getMessage()

            detections.put(Detections())
            camera.put(CameraFrame(VideoFrame(64, 48, "yuv420p")))
            frame = await asyncio.wait_for(sending, 5)
            assert (frame.width, frame.height) == (64, 48)
        finally:
            sending.cancel()
            track.stop()


async def test_a_fn_failing_on_every_frame_is_logged_once_then_counted(serve_stream, caplog):
    """A real session whose fn raises on every frame: the scheduler logs the first
    failure with its traceback and at most one count line per 10 s after it."""

    def broken(frame, threshold):
        raise RuntimeError("the model fell over")

    caplog.set_level(logging.ERROR, logger="rayrtc.scheduler")
    url, stream = await serve_stream(broken, stream_every=0.0)
    client = StreamClient(url, photo("astronaut"), fps=15)
    started = time.monotonic()
    try:
        await client.connect()
        await client.wait_connected()
        session = stream.get(client.webrtc_id)
        await wait_for(lambda: session.scheduler.stats.errors >= 30, 20, what="30 failed fn calls")
        elapsed = time.monotonic() - started
    finally:
        await client.close()
    records = [r for r in caplog.records if r.name == "rayrtc.scheduler"]
    assert records and records[0].exc_info is not None
    assert "stream fn failed" in records[0].getMessage()
    assert len(records) <= 1 + int(elapsed // 10), [r.getMessage() for r in records]
