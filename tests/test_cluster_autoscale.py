"""Detector autoscaling follows the load: a step of sessions raises the replica count,
and it falls back once they stop.

The model is a batched callable that takes a fixed 0.2 s per batch, so each session
keeps about one frame in flight (stream_every=0) and the ongoing requests the
autoscaler sees are the number of sessions: with target_ongoing_requests=1, three
sessions ask for three replicas."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.app import app_args
from tests.support.cluster import StickyClient, replicas, wait_replicas
from tests.support.images import photo

APP = "auto"
SESSIONS = 3


@pytest.fixture(scope="module")
def auto_app(serve_instance):
    from ray import serve

    from serve_app import AppArgs, app

    args = AppArgs(**app_args(
        model="callable",
        model_callable="tests.support.cluster:slow_batch",
        model_batched=True,
        stream_every=0.0,
        time_limit=120,
        max_sessions=8,
        detector_num_cpus=0.25,
        detector_min_replicas=1,
        detector_max_replicas=SESSIONS,
        detector_target_ongoing_requests=1.0,
        detector_upscale_delay_s=1.0,
        detector_downscale_delay_s=3.0,
        detector_look_back_period_s=2.0,
        detector_timeout_s=10.0,
    ))
    serve.run(app(args), name=APP, route_prefix="/auto")
    yield serve_instance + "/auto"
    serve.delete(APP)


# look_back_period_s below the 10 s metrics push interval is what makes a short test
# react quickly; Serve only warns about it.
@pytest.mark.filterwarnings("ignore:`look_back_period_s`:FutureWarning")
async def test_detector_replicas_follow_a_load_step(auto_app):
    wait_replicas(APP, "Detector", 1, timeout=30)
    image = photo("chelsea")[:240, :320].copy()
    clients = [StickyClient(auto_app, image, fps=10) for _ in range(SESSIONS)]
    peak = 1
    try:
        for c in clients:
            await c.connect()
        for c in clients:
            await c.wait_connected()
            await c.wait_frames(2)
        load_on = time.monotonic()
        deadline = load_on + 60
        decided_s = None  # when the controller first starts an extra replica
        while time.monotonic() < deadline:
            every = replicas(APP, "Detector", states=("STARTING", "RUNNING"))
            if decided_s is None and len(every) > 1:
                decided_s = time.monotonic() - load_on
            peak = max(peak, len(replicas(APP, "Detector")))
            if peak >= SESSIONS:
                break
            await asyncio.sleep(0.2)
        scale_up_s = time.monotonic() - load_on
        assert peak >= 2, f"no upscale within 60 s of a {SESSIONS}-session load step"
        # Streams kept flowing while replicas came up.
        for c in clients:
            await c.wait_frames(5, timeout=20)
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    load_off = time.monotonic()
    await asyncio.to_thread(wait_replicas, APP, "Detector", 1, 90)
    scale_down_s = time.monotonic() - load_off
    print(f"autoscaling: first extra replica started {decided_s} s after the load step, "
          f"1 -> {peak} running in {scale_up_s:.1f} s; "
          f"back to 1 in {scale_down_s:.1f} s after it stopped")
