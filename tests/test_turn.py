"""TURN for real: coturn started by the tests on 127.0.0.1 (free ports, stopped after,
no process left), short-lived TURN REST credentials checked against it, and a whole
session relayed through it with `ice_transport_policy=relay` on both ends (aiortc
client <-> ingress on Ray Serve): both ends' selected pair is `relay`, coturn logged
both allocations, boxes come back, the time limit ends it. The secret never shows in
reprs, errors, pages or logs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from pathlib import Path

import httpx
import pytest
from aiortc import RTCPeerConnection
from pydantic import ValidationError

from component.ice import IceConfig, IceServer
from component.turn import TurnRest, mint
from tests.support.client import StreamClient
from tests.support.images import green_mask, photo
from tests.support.ports import LOOPBACK
from tests.support.turn import Coturn, coturn_unavailable_reason, sdp_candidate_types, selected_pair_types
from tests.support.waits import wait_for

_SKIP = coturn_unavailable_reason()
needs_coturn = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")

SECRET = "turn-rest-" + "0123456789abcdef" * 2  # never printed anywhere in the product


# --- minting, no server ------------------------------------------------------------


def test_minted_credentials_follow_the_turn_rest_scheme():
    username, credential = mint("s3cret", "rayrtc-browser", 600, now=1_700_000_000)
    assert username == "1700000600:rayrtc-browser"
    expected = base64.b64encode(hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()).decode()
    assert credential == expected
    # Different secret, label or expiry: a different credential.
    assert mint("other", "rayrtc-browser", 600, now=1_700_000_000)[1] != credential
    assert mint("s3cret", "rayrtc-browser", 601, now=1_700_000_000)[1] != credential
    with pytest.raises(ValueError, match="label"):
        mint("s3cret", "has:colon", 600)


def test_the_secret_stays_out_of_reprs_errors_and_page_config():
    from serve_app import AppArgs

    args = AppArgs(turn_secret=SECRET, turn_urls=f"turn:{LOOPBACK}:3478?transport=udp", turn_ttl_s=600)
    ice = args.ice()
    for text in (repr(args), str(args), repr(ice), args.model_dump_json(), repr(ice.turn_rest.credentials("x"))):
        assert SECRET not in text
    # The page config holds no credential at all; each Start gets freshly minted ones.
    static = ice.browser_configuration(mint=False)
    assert static == {"iceServers": [], "iceTransportPolicy": "all"}
    fresh = ice.browser_configuration()["iceServers"][0]
    expiry, label = fresh["username"].split(":")
    assert label == "rayrtc-browser" and 590 <= int(expiry) - time.time() <= 601
    assert SECRET not in json.dumps(fresh)
    # A bad config fails with the field's name and without echoing the secret.
    for bad in (
        {"turn_secret": SECRET},  # no urls
        {"turn_secret": SECRET, "turn_urls": "stun:example.org"},
        {"turn_secret": SECRET, "turn_urls": "turn:example.org", "turn_ttl_s": 30, "time_limit": 60},
    ):
        with pytest.raises(ValidationError) as err:
            AppArgs(**bad)
        # (what a log shows: the message; `errors()` still holds the input, as in pydantic)
        assert "turn_" in str(err.value) and SECRET not in str(err.value) and SECRET not in repr(err.value)


# --- against a real coturn -------------------------------------------------------------


@pytest.fixture(scope="module")
def coturn():
    if _SKIP:
        pytest.skip(_SKIP)
    server = Coturn.start(LOOPBACK, secret=SECRET)
    try:
        yield server
    finally:
        server.stop()  # asserts the process is gone


async def relay_candidates(ice: IceConfig) -> list[str]:
    """Candidate types an aiortc peer with `ice` offers (gathering happens in
    setLocalDescription)."""
    pc = RTCPeerConnection(configuration=ice.rtc_configuration(role="probe"))
    try:
        pc.createDataChannel("probe")
        await pc.setLocalDescription(await pc.createOffer())
        return sdp_candidate_types(pc.localDescription.sdp)
    finally:
        await pc.close()


@needs_coturn
async def test_minted_credentials_allocate_and_expired_or_forged_ones_are_refused(coturn):
    rest = TurnRest(urls=(coturn.url,), secret=SECRET, ttl_s=60, label="probe")
    fresh = rest.credentials("fresh")
    expired = rest.credentials("expired", now=time.time() - 3600)
    forged = TurnRest(urls=(coturn.url,), secret="not-the-secret", ttl_s=60, label="probe").credentials("forged")

    def relay_only(creds) -> IceConfig:
        server = IceServer(urls=list(creds.urls), username=creds.username, credential=creds.credential)
        return IceConfig(servers=(server,), transport_policy="relay")

    assert await relay_candidates(relay_only(fresh)) == ["relay"]
    assert await relay_candidates(relay_only(expired)) == []
    assert await relay_candidates(relay_only(forged)) == []
    # The app's own path (IceConfig.turn_rest) mints working credentials too.
    assert await relay_candidates(IceConfig(turn_rest=rest, transport_policy="relay")) == ["relay"]

    allocated = await wait_for(lambda: len(coturn.allocations()) >= 2 and coturn.allocations(), 5, what="coturn's log")
    assert allocated[0] == fresh.username
    assert allocated[1].endswith(":probe-probe")
    refused = coturn.refused()
    assert expired.username in refused and forged.username in refused
    assert fresh.username not in refused


# --- a whole session through the relay -------------------------------------------------

RELAY_TIME_LIMIT = 12.0


@pytest.fixture(scope="module")
def relay_app(serve_instance, coturn):
    from ray import serve

    from tests.support.app import deploy_app

    app = deploy_app(
        serve_instance, "relay", "/relay",
        ice_transport_policy="relay",
        turn_secret=SECRET,
        turn_urls=[coturn.url],
        turn_ttl_s=300,
        time_limit=RELAY_TIME_LIMIT,
        max_sessions=2,
    )
    yield app
    serve.delete("relay")


@needs_coturn
async def test_a_session_streams_through_coturn_with_relay_on_both_ends(relay_app, coturn):
    image = photo("astronaut")
    client_ice = IceConfig(
        turn_rest=TurnRest(urls=(coturn.url,), secret=SECRET, ttl_s=300), transport_policy="relay"
    )
    client = StreamClient(relay_app.url, image, fps=15, ice=client_ice)
    before = len(coturn.allocations())
    try:
        answer = await client.connect()
        # The ingress offered only its relay address (it gathered through coturn too).
        assert set(sdp_candidate_types(answer["sdp"])) == {"relay"}, answer["sdp"]
        assert set(sdp_candidate_types(client.pc.localDescription.sdp)) == {"relay"}
        await client.wait_connected(20)
        connected = time.monotonic()
        # Media flows through the relay: the nominated pair is relay <-> relay (the
        # remote end is the ingress's relayed address on coturn).
        assert selected_pair_types(client.pc) == ("relay", "relay")
        # Both ends allocated on coturn, each with its own minted username (aiortc
        # allocates once per gathered transport: the client's offer has two).
        users = await wait_for(
            lambda: {u.split(":", 1)[1] for u in coturn.allocations()[before:]} >= {"rayrtc-client", "rayrtc-ingress"}
            and coturn.allocations()[before:],
            5, what="allocations of both ends in coturn's log",
        )
        assert {u.split(":", 1)[1] for u in users} == {"rayrtc-client", "rayrtc-ingress"}, users
        # Boxes come back: the detector's annotation is drawn on the relayed video.
        await wait_for(
            lambda: client.received.latest is not None and int(green_mask(client.latest_image()).sum()) > 300,
            10, what="an annotated frame through the relay",
        )
        # ...and keep coming: sustained video through the relay.
        start = client.received.count
        await client.wait_frames(20, timeout=8)
        print(f"relayed session: {client.received.count - start} frames, {client.received.fps():.1f} fps overall")
        # The time limit ends it, through the relay as well.
        await asyncio.wait_for(client.ended.wait(), RELAY_TIME_LIMIT + 10)
        elapsed = time.monotonic() - connected
        assert client.messages[-1] == {"type": "end", "reason": "time_limit"}
        assert elapsed < RELAY_TIME_LIMIT + 2, elapsed
    finally:
        await client.close()


@needs_coturn
async def test_the_page_config_carries_no_secret_and_credentials_are_minted_per_start(relay_app):
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        page = await http.get(relay_app.url + "/")
        config = await http.get(relay_app.url + "/config")
        assert page.status_code == 200 and config.status_code == 200
        for text in (page.text, config.text):
            assert SECRET not in text
            assert not re.search(r"\d{10}:rayrtc-", text), "a minted credential in the page config"
        component = next(c for c in config.json()["components"] if c["props"].get("props", {}).get("ice_minted"))
        assert component["props"]["props"]["rtc_configuration"] == {"iceServers": [], "iceTransportPolicy": "relay"}
        assert "ice_configuration" in component["props"]["server_fns"]

        async def start_config() -> dict:
            resp = await http.post(
                relay_app.url + "/gradio_api/component_server",
                json={"session_hash": "t", "component_id": component["id"], "fn_name": "ice_configuration", "data": {}},
            )
            assert resp.status_code == 200, resp.text
            return resp.json()

        first, second = await start_config(), await start_config()
    assert first["iceTransportPolicy"] == "relay"
    (server,) = first["iceServers"]
    assert server["username"].endswith(":rayrtc-browser")
    assert server["credential"] == base64.b64encode(
        hmac.new(SECRET.encode(), server["username"].encode(), hashlib.sha1).digest()
    ).decode()
    assert SECRET not in json.dumps(first)
    assert second["iceServers"][0]["username"] >= server["username"]


@needs_coturn
def test_the_secret_is_in_no_ray_log(relay_app):
    """After the relay sessions above: no log file of this Ray session holds it."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert files, logs
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaked, leaked
