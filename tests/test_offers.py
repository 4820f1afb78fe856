"""Every refused offer answers its protocol code, and refusals leave nothing behind."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from aiortc import RTCPeerConnection

from component.ice import IceConfig
from component.protocol import MAX_OFFER_BYTES
from tests.support.admin import admin_stats
from tests.support.client import OfferRejected, StreamClient
from tests.support.images import photo
from tests.support.waits import wait_for


async def post(url: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=20) as http:
        return await http.post(url + "/webrtc/offer", **kwargs)


async def stats(url: str) -> dict:
    return await admin_stats(url)


async def audio_only_sdp() -> str:
    pc = RTCPeerConnection(IceConfig().rtc_configuration())
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def assert_failed(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == "failed"
    assert body["meta"]["error"] == code
    return body


BAD_BODIES = [
    pytest.param({"content": b"not json"}, id="not-json"),
    pytest.param({"json": ["a", "list"]}, id="not-an-object"),
    pytest.param({"json": {"type": "offer", "webrtc_id": "x"}}, id="missing-sdp"),
    pytest.param({"json": {"sdp": "v=0", "type": "answer", "webrtc_id": "x"}}, id="wrong-type"),
    pytest.param({"json": {"sdp": "v=0\r\nm=video 9", "type": "offer", "webrtc_id": "bad id!"}}, id="bad-id"),
    pytest.param({"json": {"sdp": 12, "type": "offer", "webrtc_id": "x"}}, id="sdp-not-string"),
    pytest.param(
        {"json": {"sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\ngarbage", "type": "offer", "webrtc_id": "x1"}},
        id="sdp-aiortc-rejects",
    ),
]


@pytest.mark.parametrize("kwargs", BAD_BODIES)
async def test_invalid_offers_answer_400(main_app, kwargs):
    assert_failed(await post(main_app.url, **kwargs), 400, "invalid_offer")


async def test_offer_without_video_is_invalid(main_app):
    sdp = await audio_only_sdp()
    body = assert_failed(
        await post(main_app.url, json={"sdp": sdp, "type": "offer", "webrtc_id": "audio1"}),
        400, "invalid_offer",
    )
    assert "video" in body["meta"]["message"]


async def test_oversized_offer_answers_413(main_app):
    huge = {"sdp": "v=0\r\nm=video " + "x" * (MAX_OFFER_BYTES + 10), "type": "offer", "webrtc_id": "big"}
    assert_failed(await post(main_app.url, json=huge), 413, "offer_too_large")


async def test_duplicate_webrtc_id_answers_409(main_app):
    first = StreamClient(main_app.url, photo("astronaut"), fps=5)
    second = StreamClient(main_app.url, photo("astronaut"), fps=5, webrtc_id=first.webrtc_id)
    try:
        await first.connect()
        with pytest.raises(OfferRejected) as err:
            await second.connect()
        assert err.value.status == 409
        assert err.value.body["meta"]["error"] == "connection_already_exists"
        await first.wait_connected()  # the original session is untouched
    finally:
        await first.close()
        await second.close()


async def test_full_replica_answers_503_with_limit(short_app):
    limit = short_app.args.max_sessions
    clients = [StreamClient(short_app.url, photo("astronaut"), fps=5) for _ in range(limit + 1)]
    try:
        for c in clients[:limit]:
            await c.connect()
        with pytest.raises(OfferRejected) as err:
            await clients[limit].connect()
        assert err.value.status == 503
        assert err.value.body["meta"] == {
            "error": "concurrency_limit_reached",
            "limit": limit,
            "message": err.value.body["meta"]["message"],
        }
    finally:
        await asyncio.gather(*(c.close() for c in clients))

    async def drained():
        return (await stats(short_app.url))["active"] == 0

    await wait_for(drained, 10, what="sessions released after clients closed")


async def test_flood_of_bad_offers_leaves_nothing_behind(main_app):
    """Several hundred refused offers: afterwards no session, task or socket remains."""
    await wait_for(lambda: _idle(main_app.url), 15, what="an idle ingress before the flood")
    before = (await stats(main_app.url))["process"]
    audio = await audio_only_sdp()
    bodies = [
        {"content": b"{"},
        {"json": {"sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nbroken", "type": "offer", "webrtc_id": "f"}},
        {"json": {"sdp": audio, "type": "offer", "webrtc_id": "fa"}},
        {"content": b"x" * (MAX_OFFER_BYTES + 1)},
    ]
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> int:
            kwargs = dict(bodies[i % len(bodies)])
            if "json" in kwargs:
                kwargs["json"] = {**kwargs["json"], "webrtc_id": f"{kwargs['json']['webrtc_id']}{i}"}
            async with sem:
                return (await http.post(main_app.url + "/webrtc/offer", **kwargs)).status_code

        codes = await asyncio.gather(*(one(i) for i in range(240)))
    assert set(codes) <= {400, 413}, sorted(set(codes))

    async def settled():
        now = (await stats(main_app.url))
        p = now["process"]
        return now["active"] == 0 and p["fds"] <= before["fds"] + 4 and p["tasks"] <= before["tasks"] + 2

    await wait_for(settled, 15, what="fds and tasks back to their starting values")


async def _idle(url: str) -> bool:
    return (await stats(url))["active"] == 0
