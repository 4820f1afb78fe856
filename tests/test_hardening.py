"""A stranger, a hostile client or a flaky network must not disturb anyone else's
session, leave state behind or draw a 5xx. One test (or group) per class of defect
found by trying the default app from outside."""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import random
import warnings

import httpx
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from component import Detection, Detections
from component.client import StreamClient
from component.client_address import ClientAddress
from tests.helpers import ADMIN_HEADERS, admin_stats, photo, session_stats, wait_for


# -- 1. nobody but the owner changes a session; public stats name no session ------------


async def test_another_client_cannot_change_or_list_a_session(main_app):
    owner = StreamClient(main_app.url, photo("astronaut"), fps=15)
    try:
        await owner.connect()
        await owner.wait_connected()
        owner.send({"type": "inputs", "values": [0.42]})
        await wait_for(
            lambda: _inputs_are(main_app.url, owner.webrtc_id, [0.42]), 10, what="the owner's input to apply"
        )
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            public = await http.get(main_app.url + "/webrtc/stats")
            unauthenticated = await http.get(main_app.url + "/webrtc/sessions")
            wrong = await http.get(main_app.url + "/webrtc/sessions", headers={"authorization": "Bearer nope"})
            # What the old HTTP path allowed: set any session's inputs by its id.
            hijack = await http.post(
                main_app.url + "/gradio_api/run/webrtc_set_inputs", json={"data": [owner.webrtc_id, 0.99]}
            )
            api = await http.get(main_app.url + "/gradio_api/info")
        assert public.status_code == 200
        assert owner.webrtc_id not in public.text and "sessions" not in public.json(), public.text
        assert public.json()["active"] >= 1
        assert unauthenticated.status_code == 401 and wrong.status_code == 401
        assert hijack.status_code >= 400, hijack.text
        assert "webrtc_set_inputs" not in api.text
        assert (await session_stats(main_app.url, owner.webrtc_id))["inputs"] == [0.42]
    finally:
        await owner.close()


async def _inputs_are(url: str, webrtc_id: str, values: list) -> bool:
    session = await session_stats(url, webrtc_id)
    return session is not None and session["inputs"] == values


async def test_session_detail_is_off_without_an_admin_token(serve_stream):
    url, _ = await serve_stream(lambda frame, t: None)
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        resp = await http.get(url + "/webrtc/sessions", headers=ADMIN_HEADERS)
    assert resp.status_code == 403 and resp.json()["meta"]["error"] == "forbidden"


# -- 2. an offer whose client hangs up mid-request leaves nothing ------------------------


async def _real_offer_sdp() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="sendrecv")
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def _post_and_hang_up(url: str, body: bytes, after_s: float) -> None:
    """Send a whole offer request, then close the socket before the answer comes."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST /webrtc/offer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    writer.write(head + body)
    await writer.drain()
    await asyncio.sleep(after_s)  # the abort point itself, not a wait for a condition
    writer.transport.abort()


async def test_offers_aborted_mid_request_leave_no_session(main_app):
    sdp = await _real_offer_sdp()
    rng = random.Random(7)
    ids = [f"aborted-{i}" for i in range(30)]
    await asyncio.gather(*(
        _post_and_hang_up(
            main_app.url, json.dumps({"sdp": sdp, "type": "offer", "webrtc_id": i}).encode(), rng.uniform(0.005, 0.08)
        )
        for i in ids
    ))

    async def none_left() -> bool:
        body = await admin_stats(main_app.url)
        return not any(s["webrtc_id"] in ids for s in body["sessions"])

    # Cancelled before the answer: closed at once. Answered just before the hang-up:
    # no browser will ever connect, so the connect timeout reaps it.
    await wait_for(none_left, main_app.args.connect_timeout + 10, interval=0.5,
                   what="every aborted offer's session to be gone")


# -- 3. malformed bodies and offers get 400, never 500 or a misleading 503 ---------------


@pytest.mark.parametrize("body", ["[" * 30_000, '{"a":' * 5_000, '{"sdp": ' + "[" * 3000 + "]" * 3000 + "}"])
async def test_deeply_nested_json_is_a_400(main_app, body):
    async with httpx.AsyncClient(trust_env=False, timeout=20) as http:
        resp = await http.post(main_app.url + "/webrtc/offer", content=body,
                               headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text[:300]
    assert resp.json()["meta"]["error"] == "invalid_offer"


def _first_section_without_candidates(sdp: str) -> str:
    lines = sdp.split("\r\n")
    second_m = [i for i, line in enumerate(lines) if line.startswith("m=")][1]
    return "\r\n".join(
        line for i, line in enumerate(lines) if not (i < second_m and line.startswith("a=candidate:"))
    )


async def test_mutated_real_offers_get_an_answer_or_a_400_and_leave_nothing(serve_stream):
    """Line-level mutations of a real offer (deleted, repeated, truncated lines), plus
    the two that used to escape: a first section that declares its candidates complete
    with none (was 503 no_media_port) and a truncated codec line with no data channel
    section (aiortc's close raised: was 500)."""
    url, stream = await serve_stream(lambda frame, t: None, connect_timeout=1.0)
    sdp = await _real_offer_sdp()
    lines = [line for line in sdp.split("\r\n") if line]
    truncated_fmtp = [
        line if not line.startswith("a=fmtp:") else line[: len("a=fmtp:101 l")]
        for line in lines if not line.startswith("m=application")
    ]
    cases = [_first_section_without_candidates(sdp), "\r\n".join(truncated_fmtp) + "\r\n"]
    rng = random.Random(1)
    for _ in range(150):
        mutated = list(lines)
        for _ in range(rng.randint(1, 3)):
            j = rng.randrange(len(mutated))
            op = rng.random()
            if op < 0.5:
                del mutated[j]
            elif op < 0.75:
                mutated.insert(rng.randrange(len(mutated)), mutated[j])
            else:
                mutated[j] = mutated[j][: rng.randrange(len(mutated[j]) + 1)]
        cases.append("\r\n".join(mutated) + "\r\n")

    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(trust_env=False, timeout=20) as http:
        for i, case in enumerate(cases):
            resp = await http.post(url + "/webrtc/offer", json={"sdp": case, "type": "offer", "webrtc_id": f"m{i}"})
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
            assert resp.status_code in (200, 400), (i, resp.status_code, resp.text[:300])
            if i < 2:
                assert resp.status_code == 400, (i, resp.text[:300])
    print(f"mutated offers: {statuses}")
    await wait_for(lambda: len(stream) == 0, 10, what="answered-but-never-connected sessions to be reaped")


# -- 4. the rate limit tells users apart behind a trusted proxy --------------------------


@pytest.mark.parametrize(
    "trusted, peer, headers, expected",
    [
        ((), "10.0.0.5", {"x-forwarded-for": "203.0.113.9"}, "10.0.0.5"),  # off by default
        (("10.0.0.0/8",), "10.0.0.5", {"x-forwarded-for": "203.0.113.9"}, "203.0.113.9"),
        (("10.0.0.0/8",), "198.51.100.1", {"x-forwarded-for": "203.0.113.9"}, "198.51.100.1"),  # untrusted peer
        # A client's own spoofed entry sits left of what our proxies appended.
        (("10.0.0.0/8",), "10.0.0.5", {"x-forwarded-for": "1.2.3.4, 203.0.113.9, 10.0.0.7"}, "203.0.113.9"),
        (("10.0.0.0/8",), "10.0.0.5", {"forwarded": 'for="[2001:db8::1]:4711";proto=https'}, "2001:db8::1"),
        (("10.0.0.0/8",), "10.0.0.5", {"forwarded": "for=192.0.2.60;proto=http, for=10.0.0.9"}, "192.0.2.60"),
        (("10.0.0.0/8",), "10.0.0.5", {"x-forwarded-for": "unknown"}, "10.0.0.5"),
        (("10.0.0.0/8",), "10.0.0.5", {}, "10.0.0.5"),
    ],
)
def test_client_address_trusts_only_listed_proxies(trusted, peer, headers, expected):
    assert ClientAddress(trusted).resolve(peer, headers) == expected


def test_a_bad_trusted_proxy_entry_is_refused_by_name():
    with pytest.raises(ValueError, match="not-an-ip"):
        ClientAddress(["10.0.0.0/8", "not-an-ip"])


async def test_rate_limit_keys_on_the_forwarded_client_behind_a_trusted_proxy(serve_stream):
    async def limited(trusted: tuple[str, ...]) -> list[int]:
        url, _ = await serve_stream(lambda frame, t: None, offer_rate=0.01, offer_burst=1,
                                    trusted_proxies=trusted)
        codes = []
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            for user in ("203.0.113.1", "203.0.113.2", "203.0.113.1"):
                resp = await http.post(url + "/webrtc/offer", content=b"{}",
                                       headers={"x-forwarded-for": user})
                codes.append(resp.status_code)
        return codes

    # Behind a proxy on loopback: two users each get their own bucket; the first one's
    # second offer is limited. Without trust, everyone shares the proxy's bucket.
    assert await limited(("127.0.0.1",)) == [400, 400, 429]
    assert await limited(()) == [400, 429, 429]


# -- 7/8. configuration is plain data: the page config never copies the stream ----------


class _Owner:
    """Stands in for the Serve ingress: its wrapper class has an async `__del__`, so
    copying the instance (and dropping the copy) warns 'coroutine ... never awaited'."""

    async def __del__(self) -> None:
        pass

    async def fn(self, frame: np.ndarray, threshold: float) -> Detections:
        return Detections((Detection((0.1, 0.1, 0.2, 0.2), "x", 0.9),))


def test_page_config_holds_no_reference_to_the_stream_fn():
    import gradio as gr

    from component import WebRTC

    owner = _Owner()
    with gr.Blocks() as demo:
        webrtc = WebRTC()
        slider = gr.Slider(0, 1, 0.3)
        webrtc.webrtc_stream(fn=owner.fn, inputs=[webrtc, slider])
    config = demo.get_config_file()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        copy.deepcopy(config)  # what Gradio does on every page load
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)], [str(w.message) for w in caught]
    json.dumps(config["components"])  # plain data only

