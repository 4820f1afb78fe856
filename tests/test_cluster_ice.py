"""Media networking knobs for firewalls and NAT: a pinned UDP port range and an
advertised 1:1 NAT address, in aioice directly and through a served app; one owner of
those process-wide settings per process; what the seam relies on in aioice. Loopback only:
an advertised address that is not local is removed from the answer before the test
client sees it, so no packet is ever sent to it."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from component.ice import (
    IceClaim,
    IceConfig,
    ProcessIceConflict,
    ProcessIceSettings,
    bind_udp_in_range,
    check_aioice_seam,
    claim_process_ice,
    process_ice_claim,
    release_process_ice,
    scoped_process_ice,
)
from tests.support.app import app_args
from tests.support.cluster import StickyClient
from tests.support.images import photo
from tests.support.ports import LOOPBACK, free_port_block
from tests.support.waits import wait_for

DOC_ADDRESS = "203.0.113.7"  # TEST-NET-3: never routed, never contacted here


def candidates(sdp: str) -> list[dict]:
    """`a=candidate` lines as {host, port, type, raddr, rport}."""
    found = []
    for line in sdp.splitlines():
        if not line.startswith("a=candidate:"):
            continue
        parts = line.split()
        item = {"host": parts[4], "port": int(parts[5]), "type": parts[7]}
        if "raddr" in parts:
            item["raddr"] = parts[parts.index("raddr") + 1]
            item["rport"] = int(parts[parts.index("rport") + 1])
        found.append(item)
    return found


def drop_candidates(sdp: str, keep) -> str:
    lines = sdp.splitlines()
    kept = [
        line for line in lines
        if not line.startswith("a=candidate:") or keep(candidates(line + "\n")[0])
    ]
    return "\r\n".join(kept) + "\r\n"




async def connected_pair(offer_ice: IceConfig, answer_ice: IceConfig, answer_filter=None):
    """Two aiortc peers in this process; returns (offerer, answerer, answer sdp)."""
    a = RTCPeerConnection(offer_ice.rtc_configuration())
    b = RTCPeerConnection(answer_ice.rtc_configuration())
    a.createDataChannel("control")
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    answer = b.localDescription.sdp
    shown = answer_filter(answer) if answer_filter else answer
    await a.setRemoteDescription(RTCSessionDescription(sdp=shown, type="answer"))
    return a, b, answer


# --- the seam itself ------------------------------------------------------------------
def test_bind_in_range_skips_ports_in_use_and_reports_exhaustion():
    base = free_port_block(3)
    taken = []
    try:
        for port in (base, base + 2):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((LOOPBACK, port))
            taken.append(s)
        for _ in range(5):  # whatever the random start, only the free port is chosen
            sock = bind_udp_in_range(LOOPBACK, base, base + 2)
            assert sock.getsockname() == (LOOPBACK, base + 1)
            sock.close()
        sock = bind_udp_in_range(LOOPBACK, base, base + 2)
        try:
            with pytest.raises(OSError) as info:
                bind_udp_in_range(LOOPBACK, base, base + 2)
            assert info.value.errno == errno.EADDRINUSE
        finally:
            sock.close()
    finally:
        for s in taken:
            s.close()


def test_ice_config_validates_range_and_address():
    with pytest.raises(ValueError, match="both"):
        IceConfig(port_min=40000)
    with pytest.raises(ValueError, match="exceeds"):
        IceConfig(port_min=40010, port_max=40000)
    with pytest.raises(ValueError, match="IP address"):
        IceConfig(advertised_address="example.com")
    assert IceConfig(port_min=1, port_max=1).port_range == (1, 1)


async def test_process_settings_pin_ports_and_add_advertised_candidates():
    base = free_port_block(8)
    ice = IceConfig(host_addresses=(LOOPBACK,), port_min=base, port_max=base + 7, advertised_address=DOC_ADDRESS)
    before = process_ice_claim()
    with scoped_process_ice(ice, owner="test_process_settings_pin_ports"):
        peers = []
        try:
            for _ in range(3):
                a, b, answer = await connected_pair(
                    IceConfig(), IceConfig(), lambda sdp: drop_candidates(sdp, lambda c: c["host"] != DOC_ADDRESS)
                )
                peers += [a, b]
                found = candidates(answer)
                hosts = [c for c in found if c["type"] == "host"]
                srflx = [c for c in found if c["type"] == "srflx"]
                assert hosts and all(c["host"] == LOOPBACK and base <= c["port"] <= base + 7 for c in hosts), found
                # One advertised twin per host candidate: same port, related to the host.
                assert sorted((c["port"], c["raddr"], c["rport"]) for c in srflx) == sorted(
                    (c["port"], c["host"], c["port"]) for c in hosts
                ), found
                assert all(c["host"] == DOC_ADDRESS for c in srflx)
            await wait_for(lambda: all(p.connectionState == "connected" for p in peers), 10, what="all pairs connected")
            # Six sockets (three pairs) in an eight-port range: all distinct ports.
            ports = {c["port"] for p in peers for c in candidates(p.localDescription.sdp) if c["type"] == "host"}
            assert len(ports) == 6
        finally:
            await asyncio.gather(*(p.close() for p in peers))
    assert process_ice_claim() == before


async def test_a_peer_that_only_sees_the_advertised_address_connects():
    """The 1:1 NAT case, folded onto loopback: the advertised address is the host's own,
    and the peer is given the advertised (srflx) candidates only."""
    base = free_port_block(4)
    ice = IceConfig(host_addresses=(LOOPBACK,), port_min=base, port_max=base + 3, advertised_address=LOOPBACK)
    with scoped_process_ice(ice, owner="test_a_peer_that_only_sees_the_advertised_address"):
        a, b, answer = await connected_pair(
            IceConfig(), IceConfig(), lambda sdp: drop_candidates(sdp, lambda c: c["type"] == "srflx")
        )
        try:
            assert any(c["type"] == "srflx" for c in candidates(answer))
            await wait_for(lambda: a.connectionState == "connected" and b.connectionState == "connected",
                           10, what="connection through the advertised candidate")
        finally:
            await a.close()
            await b.close()


# --- one owner per process ---------------------------------------------------------------
async def test_a_second_conflicting_ice_configuration_is_refused_and_the_first_still_binds():
    """The bug this guards: a second component used to reset the first one's port range
    silently (last writer won). Now it is refused by name, and connections keep binding
    in the first range."""
    base = free_port_block(8)
    first = IceConfig(host_addresses=(LOOPBACK,), port_min=base, port_max=base + 7)
    with scoped_process_ice(first, owner="first host"):
        claim_process_ice(IceConfig(host_addresses=(LOOPBACK,), port_min=base, port_max=base + 7), owner="twin")
        with pytest.raises(ProcessIceConflict) as info:
            claim_process_ice(
                IceConfig(host_addresses=(LOOPBACK,), port_min=base + 100, port_max=base + 107), owner="second host"
            )
        message = str(info.value)
        assert "first host" in message and "second host" in message, message
        assert f"port_range: ({base}, {base + 7}) != ({base + 100}, {base + 107})" in message, message
        assert "host_addresses" not in message, message  # only what differs is named
        # Adding a knob is a different configuration too.
        with pytest.raises(ProcessIceConflict, match="advertised_address: None != '203.0.113.7'"):
            claim_process_ice(first.model_copy(update={"advertised_address": DOC_ADDRESS}), owner="third host")
        assert process_ice_claim() == IceClaim(ProcessIceSettings.of(first), "first host")

        # A real pair (explicit, empty ICE server lists) still binds in the first range.
        a, b, answer = await connected_pair(IceConfig(), IceConfig())
        try:
            for sdp in (a.localDescription.sdp, answer):
                hosts = [c for c in candidates(sdp) if c["type"] == "host"]
                assert hosts and all(c["host"] == LOOPBACK and base <= c["port"] <= base + 7 for c in hosts), sdp
            await wait_for(lambda: a.connectionState == b.connectionState == "connected", 10, what="pair connected")
        finally:
            await a.close()
            await b.close()


def test_plain_gradio_components_claim_at_webrtc_stream_and_a_stream_server_only_checks():
    import gradio as gr

    from component import StreamConfig, StreamServer, WebRTC

    base = free_port_block(4)
    pinned = IceConfig(host_addresses=(LOOPBACK,), port_min=base, port_max=base + 3)
    other = IceConfig(host_addresses=(LOOPBACK,), port_min=base + 10, port_max=base + 13)
    with scoped_process_ice(None, owner="nobody"):
        with pytest.raises(ProcessIceConflict, match="none were claimed"):
            StreamServer(StreamConfig(fn=lambda frame: None), pinned)  # it never claims itself
        with gr.Blocks():
            a = WebRTC(label="first", rtc_configuration=pinned)
            a.webrtc_stream(fn=lambda frame: None, inputs=[a])
            owner = process_ice_claim().owner
            assert "'first'" in owner and process_ice_claim().settings.port_range == (base, base + 3)
            same = WebRTC(label="same", rtc_configuration=pinned)
            same.webrtc_stream(fn=lambda frame: None, inputs=[same])
            # No process-wide knob: claims nothing, uses the first component's settings.
            plain = WebRTC(label="plain")
            plain.webrtc_stream(fn=lambda frame: None, inputs=[plain])
            clash = WebRTC(label="clash", rtc_configuration=other)
            with pytest.raises(ProcessIceConflict) as info:
                clash.webrtc_stream(fn=lambda frame: None, inputs=[clash])
            assert "'first'" in str(info.value) and "'clash'" in str(info.value), info.value
            assert clash.stream_server is None
        with pytest.raises(ProcessIceConflict, match="StreamServer"):
            StreamServer(StreamConfig(fn=lambda frame: None), other)
        assert process_ice_claim().owner == owner
    assert process_ice_claim().settings == ProcessIceSettings(host_addresses=(LOOPBACK,))  # the session's


# --- what the seam relies on in aioice -------------------------------------------------------
async def test_aioice_still_gathers_through_what_the_seam_replaces():
    """Fails if aioice stops calling what component.ice replaces: a bare aioice
    Connection (no STUN, no TURN) must gather on the claimed address (aioice itself
    skips loopback), bind in the claimed range and carry the advertised twin."""
    import aioice

    check_aioice_seam()
    base = free_port_block(4)
    with scoped_process_ice(None, owner="nobody"):
        # Unclaimed: aioice's own functions, and its own choice leaves loopback out.
        assert aioice.ice.asyncio is asyncio
        assert LOOPBACK not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
        ice = IceConfig(host_addresses=(LOOPBACK,), port_min=base, port_max=base + 3, advertised_address=DOC_ADDRESS)
        claim_process_ice(ice, owner="test_aioice_still_gathers")
        connection = aioice.Connection(ice_controlling=True, components=1)
        try:
            await connection.gather_candidates()
            found = [(c.type, c.host, c.port) for c in connection.local_candidates]
        finally:
            await connection.close()
        hosts = [port for kind, host, port in found if kind == "host" and host == LOOPBACK]
        assert hosts and all(base <= port <= base + 3 for port in hosts), found
        assert sorted(port for kind, host, port in found if kind == "srflx" and host == DOC_ADDRESS) == sorted(hosts)
        assert {kind for kind, _, _ in found} == {"host", "srflx"}, found
        release_process_ice()
        assert aioice.ice.asyncio is asyncio and aioice.ice.get_host_addresses is not None
        assert LOOPBACK not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)


def test_a_changed_aioice_is_named_at_the_first_claim(monkeypatch):
    """aioice cannot be made to change for real here: its method is swapped for one with
    another signature, as a new aioice release might have it."""
    import component.ice as ice_module

    async def renamed(self, component, addresses, timeout=5, family=None):  # pragma: no cover
        return []

    with scoped_process_ice(None, owner="nobody"), monkeypatch.context() as patch:
        patch.setattr(ice_module, "_ORIGINAL_GET_COMPONENT_CANDIDATES", renamed)
        with pytest.raises(RuntimeError, match=r"get_component_candidates takes \[.*'family'\]"):
            claim_process_ice(IceConfig(host_addresses=(LOOPBACK,)), owner="test")
        assert process_ice_claim() is None


# --- through Serve ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ports_app(serve_instance):
    from ray import serve

    from serve_app import AppArgs, app

    base = free_port_block(16)
    args = AppArgs(**app_args(
        ice_port_min=base, ice_port_max=base + 15, ice_advertised_address=DOC_ADDRESS,
        time_limit=60, max_sessions=4,
    ))
    serve.run(app(args), name="ports", route_prefix="/ports")
    yield serve_instance + "/ports", args
    serve.delete("ports")


async def test_served_answers_offer_only_the_configured_ports_and_addresses(ports_app):
    url, args = ports_app
    image = photo("astronaut")[:256, 128:384].copy()
    clients = [StickyClient(url, image, fps=5) for _ in range(3)]
    for client in clients:
        client.answer_filter = lambda sdp: drop_candidates(sdp, lambda c: c["host"] != DOC_ADDRESS)
    try:
        for client in clients:
            data = await client.connect()
            found = candidates(data["sdp"])
            assert found, "the answer carries no candidate"
            for c in found:
                assert args.ice_port_min <= c["port"] <= args.ice_port_max, c
                assert (c["type"], c["host"]) in (("host", LOOPBACK), ("srflx", DOC_ADDRESS)), c
            assert {c["type"] for c in found} == {"host", "srflx"}
        # The documentation address was dropped before aiortc saw the answer.
        for client in clients:
            assert DOC_ADDRESS not in client.pc.remoteDescription.sdp
            await client.wait_connected()
            await client.wait_frames(3)
    finally:
        await asyncio.gather(*(c.close() for c in clients))


def test_node_environment_overrides_the_advertised_address(monkeypatch):
    from component.ice import ADVERTISED_ADDRESS_ENV

    ice = IceConfig(host_addresses=(LOOPBACK,), advertised_address=DOC_ADDRESS)
    monkeypatch.setenv(ADVERTISED_ADDRESS_ENV, "198.51.100.4")
    assert ProcessIceSettings.of(ice).advertised_address == "198.51.100.4"
    monkeypatch.setenv(ADVERTISED_ADDRESS_ENV, "")
    assert ProcessIceSettings.of(ice).advertised_address == DOC_ADDRESS
    monkeypatch.setenv(ADVERTISED_ADDRESS_ENV, "node-7.example")
    with pytest.raises(ValueError, match=ADVERTISED_ADDRESS_ENV):
        ProcessIceSettings.of(ice)
