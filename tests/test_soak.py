"""A soak: 200 sessions opened and closed against the served app, a quarter of them
abandoned without closing. Afterwards the ingress holds no session, and its open
descriptors, threads and memory are back near where they started."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests.support.admin import admin_stats
from tests.support.app import deploy_app
from tests.support.client import StreamClient
from tests.support.images import photo
from tests.support.waits import wait_for

SESSIONS = int(os.environ.get("RAYRTC_SOAK_SESSIONS", "200"))
CONCURRENCY = 8


@pytest.fixture(scope="module")
def soak_app(serve_instance):
    return deploy_app(serve_instance, "soak", "/soak", idle_timeout=2, max_sessions=64)


async def process(url: str) -> dict:
    body = await admin_stats(url)
    return {"active": body["active"], **body["process"]}


async def abandon(client: StreamClient) -> None:
    """Vanish: stop sending and drop the transport without telling the server."""
    client.track.stop()
    for transceiver in client.pc.getTransceivers():
        await transceiver.sender.transport.transport.stop()
    await client.close()


async def test_soak_leaves_no_sessions_and_no_growth(soak_app):
    image = photo("astronaut")
    # A first round at full concurrency, so thread pools (bounded, reused) and caches
    # already have their working size in the baseline.
    warm = [StreamClient(soak_app.url, image, fps=10) for _ in range(CONCURRENCY)]
    for client in warm:
        await client.connect()
    for client in warm:
        await client.wait_connected()
        await client.wait_frames(3)
    await asyncio.gather(*(client.close() for client in warm))
    await wait_for(lambda: _idle(soak_app.url), 15, what="idle before the soak")
    before = await process(soak_app.url)

    sem = asyncio.Semaphore(CONCURRENCY)
    outcomes = {"closed": 0, "abandoned": 0, "failed": 0}
    errors: list[str] = []

    async def one(i: int) -> None:
        async with sem:
            client = StreamClient(soak_app.url, image, fps=10)
            try:
                await client.connect()
                await client.wait_connected(15)
                await client.wait_frames(2, timeout=15)
            except Exception as exc:
                outcomes["failed"] += 1
                errors.append(f"{type(exc).__name__}: {exc}")
                await client.close()
                return
            if i % 4 == 3:
                await abandon(client)
                outcomes["abandoned"] += 1
            else:
                await client.close()
                outcomes["closed"] += 1

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(SESSIONS)))
    elapsed = time.monotonic() - started
    assert outcomes["failed"] <= SESSIONS * 0.02, (outcomes, errors[:5])

    async def settled():
        now = await process(soak_app.url)
        return now if now["active"] == 0 and now["tasks"] <= before["tasks"] + 2 else None

    after = await wait_for(settled, 30, interval=0.5, what="every session reaped")
    # Descriptors and threads: back to the baseline (small slack for pools).
    await wait_for(lambda: _fds_back(soak_app.url, before), 20, interval=0.5, what="descriptors released")
    after = await process(soak_app.url)
    growth_mb = (after["rss_bytes"] - before["rss_bytes"]) / 2**20
    print(
        f"soak: {SESSIONS} sessions in {elapsed:.1f} s, {outcomes}; "
        f"fds {before['fds']}->{after['fds']}, threads {before['threads']}->{after['threads']}, "
        f"rss {before['rss_bytes'] / 2**20:.0f}->{after['rss_bytes'] / 2**20:.0f} MiB"
    )
    assert after["threads"] <= before["threads"] + 2
    assert growth_mb < 80, f"ingress memory grew {growth_mb:.0f} MiB over {SESSIONS} sessions"


async def _fds_back(url: str, before: dict) -> bool:
    return (await process(url))["fds"] <= before["fds"] + 4


async def _idle(url: str) -> bool:
    return (await process(url))["active"] == 0
