"""Prometheus metrics move while a session streams (scraped from Ray's metrics agent)."""

from __future__ import annotations

import re

import httpx

from tests.support.client import StreamClient
from tests.support.images import photo
from tests.support.waits import wait_for


async def scrape(url: str, app: str) -> dict[str, float]:
    """Sum each `ray_rayrtc_*` series of one application, keyed by name{selected tags}."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        text = (await http.get(url)).text
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("ray_rayrtc_") or f'application="{app}"' not in line:
            continue
        name = line.split("{", 1)[0]
        for tag in ("result", "reason", "ok"):
            m = re.search(rf'{tag}="([^"]*)"', line)
            if m:
                name += f"[{m.group(1)}]"
        totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


async def test_counters_move_during_a_stream(main_app, metrics_url):
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        bad = await http.post(main_app.url + "/webrtc/offer", content=b"{")
        assert bad.status_code == 400
    client = StreamClient(main_app.url, photo("astronaut"), fps=15)
    try:
        await client.connect()
        await client.wait_connected()
        await client.wait_frames(10)

        async def first():
            m = await scrape(metrics_url, main_app.name)
            return m if m.get("ray_rayrtc_frames_in_total", 0) > 0 and m.get("ray_rayrtc_sessions_active", 0) >= 1 else None

        before = await wait_for(first, 30, interval=0.5, what="rayrtc metrics exported")

        async def moved():
            m = await scrape(metrics_url, main_app.name)
            keys = ("ray_rayrtc_frames_in_total", "ray_rayrtc_frames_out_total", "ray_rayrtc_fn_calls_total[true]")
            return m if all(m.get(k, 0) > before.get(k, 0) for k in keys) else None

        after = await wait_for(moved, 30, interval=0.5, what="frame and call counters increasing")
        assert after.get("ray_rayrtc_offers_total[invalid_offer]", 0) >= 1
        assert after.get("ray_rayrtc_offers_total[accepted]", 0) >= 1
        assert after.get("ray_rayrtc_fn_latency_seconds_count", 0) > 0
        assert after.get("ray_rayrtc_detector_batch_size_count", 0) > 0
        assert after.get("ray_rayrtc_detector_forward_seconds_count", 0) > 0
    finally:
        await client.close()
