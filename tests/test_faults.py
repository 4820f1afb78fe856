"""Faults survived for real: a model that raises, a detector replica killed mid-stream,
a client that vanishes without closing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
import ray
from ray import serve

from tests.support.admin import session_stats
from tests.support.app import deploy_app
from tests.support.client import StreamClient
from tests.support.images import green_mask, photo
from tests.support.paths import ROOT
from tests.support.waits import wait_for


@pytest.fixture(scope="module")
def faults_app(serve_instance):
    return deploy_app(
        serve_instance, "faults", "/faults",
        model="callable", model_callable="tests.support.fault_models:flaky_box",
        idle_timeout=3, detector_timeout_s=3,
    )


def detector_replicas(app_name: str) -> list[str]:
    """Names of the app's live detector replica actors (asked of this driver's own GCS)."""
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and a["name"].startswith(f"SERVE_REPLICA::{app_name}#Detector#")
    ]


async def test_a_raising_model_costs_frames_not_the_session(faults_app):
    client = StreamClient(faults_app.url, photo("astronaut"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await client.wait_frames(1)

        async def failing_and_succeeding():
            s = await session_stats(faults_app.url, client.webrtc_id)
            return s if s and s["errors"] >= 5 and s["calls"] - s["errors"] >= 5 else None

        s = await wait_for(failing_and_succeeding, 20, what="errors and successes both counted")
        assert s["last_error"] and "flaky model failed" in s["last_error"]
        await client.wait_frames(15, timeout=10)  # the stream goes on
        await wait_for(lambda: green_mask(client.latest_image()).sum() > 200, 10,
                       what="boxes from the successful calls")
        assert client.pc.connectionState == "connected"
    finally:
        await client.close()


async def test_killed_detector_replica_is_replaced_and_sessions_keep_flowing(faults_app):
    handle = serve.get_deployment_handle("Detector", app_name=faults_app.name)
    client = StreamClient(faults_app.url, photo("astronaut"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await client.wait_frames(5)
        [victim] = detector_replicas(faults_app.name)
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        killed_at = time.monotonic()

        # Media keeps flowing while the detector is gone.
        await client.wait_frames(15, timeout=10)

        async def new_replica_serving():
            alive = detector_replicas(faults_app.name)
            if not alive or victim in alive:
                return None
            stats = await handle.stats.remote()
            return stats if stats["frames"] > 0 else None

        await wait_for(new_replica_serving, 60, interval=0.5, what="a new detector replica serving frames")
        recovered_after = time.monotonic() - killed_at
        before = await session_stats(faults_app.url, client.webrtc_id)
        await client.wait_frames(15, timeout=10)
        after = await session_stats(faults_app.url, client.webrtc_id)
        assert after["calls"] > before["calls"], "the session stopped calling the detector"
        assert client.pc.connectionState == "connected"
        print(f"detector replica replaced and serving {recovered_after:.1f} s after the kill")
    finally:
        await client.close()


async def test_a_vanished_client_is_reaped(faults_app):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.vanishing_client", faults_app.url],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        webrtc_id = line.strip()
        assert webrtc_id and await session_stats(faults_app.url, webrtc_id) is not None
    finally:
        proc.kill()
        proc.wait(10)
    gone_at = time.monotonic()

    async def reaped():
        return await session_stats(faults_app.url, webrtc_id) is None

    idle = faults_app.args.idle_timeout
    await wait_for(reaped, idle + 5, interval=0.2, what="the vanished client's session to be reaped")
    assert time.monotonic() - gone_at <= idle + 5
