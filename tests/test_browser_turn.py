"""Headless Chromium through a real TURN relay, and the page's word when TURN fails.

Chromium runs in the browser tests' network namespace (see tests/support/browser.py); coturn
listens on the host end of the veth pair, started and stopped here. Both ends use
`ice_transport_policy=relay` with credentials minted by the app (TURN REST): the page
fetches them per Start, the ingress mints its own per session. Then two broken TURN
setups (nothing listening; a secret coturn does not share) must each give the page a
clear message instead of a spinner.
"""

from __future__ import annotations

import time
from urllib.parse import urlparse

import pytest

from tests.support.browser import TcpForwarder, browser_context, camera_image, netns_unavailable_reason, write_y4m
from tests.support.images import photo
from tests.support.page import fps_reaching, new_page, page_wait, start, wait_state
from tests.support.ports import LOOPBACK, free_port, free_udp_tcp_port
from tests.support.turn import Coturn, coturn_unavailable_reason

_SKIP = netns_unavailable_reason() or coturn_unavailable_reason()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]

SECRET = "browser-turn-" + "fedcba9876543210" * 2
TIME_LIMIT = 15.0
PLAIN_PORT = free_port()  # the plain Gradio page with a broken TURN setup

SELECTED_PAIR_JS = """async (id) => {
  const pc = window.__rtcTest.root(id).rtc.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  const byId = {};
  stats.forEach((s) => { byId[s.id] = s; });
  let pair = null;
  stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId[s.selectedCandidatePairId]; });
  if (!pair) return null;
  return { local: byId[pair.localCandidateId].candidateType, remote: byId[pair.remoteCandidateId].candidateType,
           bytesReceived: pair.bytesReceived, bytesSent: pair.bytesSent };
}"""


@pytest.fixture(scope="module")
def coturn(netns):
    """coturn on the host end of the veth pair: reachable from Chromium's namespace
    and from the ingress, nowhere else."""
    server = Coturn.start(netns.host_ip, secret=SECRET)
    try:
        yield server
    finally:
        server.stop()  # asserts no process is left


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    from deployments.models import ModelSpec, build_preprocessor, load_backend
    from tests.support.browser import CAMERA_SIZE

    frame = camera_image(photo("astronaut"))
    path = write_y4m(tmp_path_factory.mktemp("camera") / "astronaut.y4m", frame)
    spec = ModelSpec()
    (found,) = load_backend(spec).infer([build_preprocessor(spec)(frame)])
    w, h = CAMERA_SIZE
    x1, y1, x2, y2 = found.items[0].box
    return path, (int(x1 * w), int(y1 * h), int(x2 * w), int(y2 * h))


@pytest.fixture(scope="module")
def forwarder(serve_instance, netns):
    fwd = TcpForwarder(netns.host_ip, LOOPBACK, urlparse(serve_instance).port).start()
    yield f"http://{netns.host_ip}:{fwd.port}"
    fwd.stop()


@pytest.fixture(scope="module")
def relay_page(serve_instance, netns, coturn, forwarder):
    from ray import serve

    from serve_app import AppArgs, app

    args = AppArgs(
        ice_host_addresses=[netns.host_ip],
        ice_transport_policy="relay",
        turn_secret=SECRET,
        turn_urls=[coturn.url],
        turn_ttl_s=300,
        detector_num_cpus=0.5,
        detector_max_replicas=1,
        default_threshold=0.3,
        connect_timeout=5,
        time_limit=TIME_LIMIT,
        max_sessions=1,
    )
    serve.run(app(args), name="browser_relay", route_prefix="/browser-relay")
    yield f"{forwarder}/browser-relay/"
    serve.delete("browser_relay")


@pytest.fixture(scope="module")
async def context(netns, camera, forwarder):
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        origins = [forwarder, f"http://{netns.host_ip}:{PLAIN_PORT}"]
        async with browser_context(p, netns, camera[0], secure_origins=origins) as ctx:
            yield ctx


async def test_chromium_streams_through_coturn_with_relay_on_both_ends(context, relay_page, coturn, camera):
    _, face = camera
    before = len(coturn.allocations())
    page = await new_page(context, relay_page)
    try:
        await start(page)
        connected = time.monotonic()
        pair = await page_wait(page, f"({SELECTED_PAIR_JS})('webrtc')", 10, "a selected candidate pair")
        # The browser's side and the ingress's side (the remote candidate) both relay.
        assert (pair["local"], pair["remote"]) == ("relay", "relay"), pair
        users = {u.split(":", 1)[1] for u in coturn.allocations()[before:]}
        assert users == {"rayrtc-browser", "rayrtc-ingress"}, coturn.allocations()[before:]
        # Boxes come back through the relay.
        await page_wait(
            page, f"(() => {{ const g = window.__rtcTest.green('webrtc', {list(face)}, 6); return g && g.edge > 0.8; }})()",
            15, "the face box through the relay",
        )
        measured = await fps_reaching(page, "webrtc", 5, 2000)
        print(f"chromium through coturn: {measured}")
        assert measured["fps"] >= 5, measured
        # The time limit ends it.
        ended = await wait_state(page, "webrtc", "ended", TIME_LIMIT + 5)
        assert ended["reason"] == "time_limit", ended
        assert time.monotonic() - connected < TIME_LIMIT + 3
    finally:
        await page.close()


async def _broken_turn_page(context, netns, turn_url: str, secret: str):
    """A plain Gradio page whose component mints credentials for `turn_url` from
    `secret`, relay only."""
    import gradio as gr

    from component import WebRTC
    from component.ice import IceConfig
    from component.turn import TurnRest

    ice = IceConfig(
        host_addresses=(netns.host_ip,),
        transport_policy="relay",
        turn_rest=TurnRest(urls=(turn_url,), secret=secret, ttl_s=300),
    )
    with gr.Blocks() as demo:
        webrtc = WebRTC(elem_id="webrtc", rtc_configuration=ice)
        webrtc.stream(fn=lambda frame: None, inputs=[webrtc], outputs=[webrtc], time_limit=30)
    demo.launch(server_name=netns.host_ip, server_port=PLAIN_PORT, prevent_thread_lock=True, quiet=True)
    return demo, await new_page(context, f"http://{netns.host_ip}:{PLAIN_PORT}/")


@pytest.mark.parametrize(
    "case, reason, words",
    [
        ("down", "turn_unreachable", "Could not reach the TURN relay server"),
        ("refused", "turn_refused", "refused this page\u2019s credentials"),
    ],
)
async def test_a_broken_turn_server_gets_a_clear_message(context, netns, coturn, case, reason, words):
    if case == "down":  # nothing listens there
        url, secret = f"turn:{netns.host_ip}:{free_udp_tcp_port(netns.host_ip)}?transport=udp", SECRET
    else:  # coturn is up, but the app's secret is not coturn's
        url, secret = coturn.url, "not-" + SECRET
    from component.ice import IceConfig, scoped_process_ice

    # The page's component claims its host addresses for this whole process (aioice has
    # no per-connection setting): the test session's loopback claim is set aside meanwhile.
    with scoped_process_ice(IceConfig(host_addresses=(netns.host_ip,)), owner="test_browser_turn (plain Gradio)"):
        demo, page = await _broken_turn_page(context, netns, url, secret)
        try:
            t0 = time.monotonic()
            await page.click("#webrtc .rtc-toggle")
            got = await wait_state(page, "webrtc", "error", 15)
            elapsed = time.monotonic() - t0
            print(f"TURN {case}: {got} after {elapsed:.1f} s")
            assert got["reason"] == reason, got
            assert words in got["text"], got
            assert await page.text_content("#webrtc .rtc-toggle") == "Start"
            if case == "refused":
                assert coturn.refused(), "coturn logged no refusal"
        finally:
            await page.close()
            demo.close()
