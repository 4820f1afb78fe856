"""Fuzzing the two inputs a stranger controls: the offer endpoint and the data channel.
Every case gets a clear 4xx (or is ignored); never a 5xx, a crash or a leaked session."""

from __future__ import annotations

import json
import os
import random

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from component.client import StreamClient
from tests.helpers import ADMIN_HEADERS, photo, wait_for

FUZZ_CASES = int(os.environ.get("RAYRTC_FUZZ_CASES", "300"))
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=200)
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4), max_leaves=10)
sdp_like = st.builds(
    lambda head, body: head + body,
    st.sampled_from(["", "v=0\r\n", "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "m=video\n"]),
    st.text(max_size=400),
)
offers = st.fixed_dictionaries(
    {},
    optional={
        "sdp": sdp_like | json_values,
        "type": st.sampled_from(["offer", "answer", "", "OFFER"]) | json_values,
        "webrtc_id": st.text(max_size=200) | json_values,
    },
)
bodies = (
    offers.map(lambda d: json.dumps(d).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=2000)
    | st.text(max_size=2000).map(lambda t: t.encode("utf-8", "surrogatepass"))
)


def test_fuzzed_offers_get_4xx_and_leave_nothing(main_app):
    seen: dict[int, int] = {}
    with httpx.Client(trust_env=False, timeout=20) as http:

        @settings(max_examples=FUZZ_CASES, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(body=bodies)
        def one(body: bytes) -> None:
            resp = http.post(main_app.url + "/webrtc/offer", content=body,
                             headers={"content-type": "application/json"})
            seen[resp.status_code] = seen.get(resp.status_code, 0) + 1
            assert resp.status_code < 500, (body[:200], resp.text[:300])
            assert 400 <= resp.status_code < 500, (body[:200], resp.status_code)
            assert resp.json()["status"] == "failed"

        one()
        print(f"fuzzed offers: {sum(seen.values())} cases, status counts {seen}")
        stats = http.get(main_app.url + "/webrtc/sessions", headers=ADMIN_HEADERS).json()
    assert sum(seen.values()) >= FUZZ_CASES
    assert stats["active"] == 0 or all(s["state"] == "connected" for s in stats["sessions"])


def _garbage(rng: random.Random) -> str | bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 2048))
    if kind == 1:
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(1, 300)))
    if kind == 2:
        return json.dumps({"type": rng.choice(["ping", "pong", "inputs", "end", "x", 3, None]),
                           "t": rng.choice([None, "a", 1e308, -1, [1], {}])})
    if kind == 3:
        return "x" * rng.randrange(4000, 60000)
    if kind == 4:
        return json.dumps([rng.random() for _ in range(rng.randrange(50))])
    return "{" * rng.randrange(1, 500)


async def test_fuzzed_data_channel_messages_are_ignored(main_app):
    rng = random.Random(1234)
    client = StreamClient(main_app.url, photo("astronaut"), fps=10)
    try:
        await client.connect()
        await client.wait_connected()
        await wait_for(lambda: client.channel.readyState == "open", 10, what="data channel open")
        for _ in range(FUZZ_CASES):
            client.channel.send(_garbage(rng))
        client.send({"type": "ping", "t": 42})
        await wait_for(lambda: any(m.get("type") == "pong" and m.get("t") == 42 for m in client.messages), 20,
                       what="the session still answering pings after the garbage")
        await client.wait_frames(10)
        assert client.pc.connectionState == "connected"
    finally:
        await client.close()
