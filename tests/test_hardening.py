"""A stranger, a hostile client or a flaky network must not disturb anyone else's
session, leave state behind or draw a 5xx. One test (or group) per class of defect
found by trying the default app from outside; the malformed, mutated and aborted
offers are in the fuzz suite (`test_fuzz.py`)."""

from __future__ import annotations

import copy
import gc
import json
import warnings

import httpx
import numpy as np
import pytest

from component import Detection, Detections
from component.client_address import ClientAddress
from tests.support.admin import ADMIN_HEADERS, session_stats
from tests.support.client import StreamClient
from tests.support.images import photo
from tests.support.waits import wait_for


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

