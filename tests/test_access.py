"""Optional access control and the per-client offer rate limit, on the served app."""

from __future__ import annotations

import httpx
import pytest

from component.ratelimit import RateLimiter
from tests.support.app import deploy_app

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def guarded_app(serve_instance):
    return deploy_app(
        serve_instance, "guarded", "/guarded", auth_token=TOKEN, offer_rate_per_s=0.5, offer_burst=3
    )


async def test_offer_endpoint_needs_the_token(guarded_app):
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        missing = await http.post(guarded_app.url + "/webrtc/offer", content=b"{}")
        wrong = await http.post(guarded_app.url + "/webrtc/offer", content=b"{}",
                                headers={"authorization": "Bearer nope"})
        stats = await http.get(guarded_app.url + "/webrtc/stats")
    for resp in (missing, wrong, stats):
        assert resp.status_code == 401
        assert resp.json()["meta"]["error"] == "unauthorized"
        assert TOKEN not in resp.text


async def test_ui_asks_for_login(guarded_app):
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        config = await http.get(guarded_app.url + "/config")
        login = await http.post(guarded_app.url + "/login", data={"username": "any", "password": TOKEN})
    assert config.status_code == 401
    assert login.status_code == 200, login.text


async def test_offers_beyond_the_rate_get_429(guarded_app):
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        codes = [
            (await http.post(guarded_app.url + "/webrtc/offer", content=b"{", headers=auth)).status_code
            for _ in range(5)
        ]
        limited = await http.post(guarded_app.url + "/webrtc/offer", content=b"{", headers=auth)
    assert codes[:3] == [400, 400, 400], codes  # the burst: refused for their bodies
    assert 429 in codes[3:] and limited.status_code == 429
    body = limited.json()
    assert body["meta"]["error"] == "rate_limited" and body["meta"]["retry_after_s"] > 0


def test_rate_limiter_refills_and_stays_bounded():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, max_keys=3, clock=lambda: now[0])
    assert limiter.take("a") == 0 and limiter.take("a") == 0
    assert limiter.take("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.take("a") == 0
    for key in "bcdef":
        limiter.take(key)
    assert len(limiter._buckets) == 3
