"""Several ingress replicas on real Serve: sticky HTTP routing (consistent hash on
`x-session-id`), a session cap per replica, and sessions that keep their parameters
and time limits while a replica is added and one removed."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tests.support.app import app_args
from tests.support.client import OfferRejected
from tests.support.cluster import (
    StickyClient,
    delete_declarative,
    deploy_declarative,
    ids_owned_by,
    wait_replicas,
)
from tests.support.images import green_mask, photo
from tests.support.waits import wait_for

FPS = 6


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    # A 256x256 crop around the astronaut's face: Haar finds it at score ~0.8.
    return photo("astronaut")[:256, 128:384].copy()


def green(client: StickyClient) -> int:
    """Annotation-coloured pixels in the newest frame back (-1: none yet)."""
    if client.received.latest is None:
        return -1
    return int(green_mask(client.latest_image()).sum())


def box_drawn(client: StickyClient) -> bool:
    return green(client) > 300


def no_box(client: StickyClient) -> bool:
    return 0 <= green(client) < 50


async def wait_routed_to(url: str, replica: str, key: str, timeout: float = 15) -> None:
    """The proxy's ring learns about replica changes by long poll: wait until a key
    the ring maps to `replica` really lands there."""
    probe = StickyClient(url, np.zeros((16, 16, 3), np.uint8), webrtc_id=key)
    try:
        async def routed():
            return (await probe.replica_stats())[0] == replica

        await wait_for(routed, timeout, interval=0.2, what=f"the proxy routing {key} to {replica}")
    finally:
        await probe.close()


async def open_session(url: str, image: np.ndarray, webrtc_id: str, threshold: float) -> StickyClient:
    client = StickyClient(url, image, fps=FPS, webrtc_id=webrtc_id)
    await client.connect()
    await client.wait_connected()
    client.connected_at = time.monotonic()
    client.set_inputs(threshold)

    async def applied() -> bool:
        replica, stats = await client.replica_stats()
        return replica == client.replica and any(
            s["webrtc_id"] == client.webrtc_id and s["inputs"] == [threshold] for s in stats["sessions"]
        )

    await wait_for(applied, 10, what="the slider value to reach the session's own replica")
    client.threshold = threshold
    return client


async def expect_frames(c: StickyClient, count: int, timeout: float = 20) -> None:
    try:
        await c.wait_frames(count, timeout=timeout)
    except TimeoutError as exc:
        raise AssertionError(
            f"session {c.webrtc_id[:8]} on {c.replica}: {exc}; state {c.pc.connectionState}, "
            f"messages {c.messages[-3:]}, connected {time.monotonic() - c.connected_at:.1f} s ago"
        ) from None


async def check_parameters(clients: list[StickyClient], timeout: float = 15) -> None:
    for c in clients:
        check = (lambda c=c: no_box(c)) if c.threshold > 0.9 else (lambda c=c: box_drawn(c))
        await wait_for(check, timeout, what=f"session {c.webrtc_id[:8]} drawn at threshold {c.threshold}")


# --- admission --------------------------------------------------------------------------
async def test_session_cap_holds_per_ingress_replica(serve_instance, face):
    from ray import serve

    from serve_app import AppArgs, app

    serve.run(app(AppArgs(**app_args(ingress_replicas=2, max_sessions=1, time_limit=30))),
              name="cap", route_prefix="/cap")
    url = serve_instance + "/cap"
    clients: list[StickyClient] = []
    try:
        owners = [r["replica_id"] for r in wait_replicas("cap", "Ingress", 2, timeout=120)]
        for owner in owners:
            first, second = ids_owned_by(owner, owners, 2)
            await wait_routed_to(url, owner, first)
            client = StickyClient(url, face, fps=FPS, webrtc_id=first)
            clients.append(client)
            await client.connect()
            assert client.replica == owner
            await client.wait_connected()
            # The same replica is full: its second session is refused there, with the
            # cap in the body, although the other replica has room.
            refused = StickyClient(url, face, fps=FPS, webrtc_id=second)
            with pytest.raises(OfferRejected) as info:
                await refused.connect()
            assert info.value.status == 503
            meta = info.value.body["meta"]
            assert (meta["error"], meta["limit"]) == ("concurrency_limit_reached", 1), meta
            assert refused.replica == owner
        for client in clients:
            _, stats = await client.replica_stats()
            assert stats["active"] == 1 and stats["sessions"][0]["webrtc_id"] == client.webrtc_id
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        serve.delete("cap")


# --- scaling the ingress under live sessions ----------------------------------------------
async def test_sessions_keep_parameters_and_limits_while_ingress_replicas_change(serve_instance, face):
    limit = 40.0
    args = app_args(time_limit=limit, max_sessions=4, stream_every=0.1)
    url = serve_instance + "/sticky"
    clients: list[StickyClient] = []
    report: dict = {}
    try:
        t0 = time.monotonic()
        deploy_declarative("sticky", "/sticky", args, [{"name": "Ingress", "num_replicas": 2}])
        two = [r["replica_id"] for r in wait_replicas("sticky", "Ingress", 2, timeout=150)]
        report["deploy_s"] = round(time.monotonic() - t0, 1)
        print("sticky: two replicas", two)

        # Two sessions per replica, one hiding its box (0.95), one showing it (0.0).
        for owner in two:
            for webrtc_id, threshold in zip(ids_owned_by(owner, two, 2), (0.95, 0.0)):
                await wait_routed_to(url, owner, webrtc_id)
                client = await open_session(url, face, webrtc_id, threshold)
                assert client.replica == owner
                clients.append(client)
        await check_parameters(clients)

        # A third replica: the two running ones are kept (a lightweight update).
        t0 = time.monotonic()
        deploy_declarative("sticky", "/sticky", args, [{"name": "Ingress", "num_replicas": 3}])
        three = [r["replica_id"] for r in wait_replicas("sticky", "Ingress", 3, timeout=60)]
        report["scale_up_s"] = round(time.monotonic() - t0, 1)
        print("sticky: three replicas", three, report)
        assert set(two) < set(three), "adding a replica restarted the running ones"
        (new,) = set(three) - set(two)
        for webrtc_id, threshold in zip(ids_owned_by(new, three, 2), (0.95, 0.0)):
            await wait_routed_to(url, new, webrtc_id)
            client = await open_session(url, face, webrtc_id, threshold)
            assert client.replica == new
            clients.append(client)
        for c in clients:
            await expect_frames(c, FPS)
        await check_parameters(clients)

        # Back to two: one replica goes, and with it its sessions, told why.
        t0 = time.monotonic()
        deploy_declarative("sticky", "/sticky", args, [{"name": "Ingress", "num_replicas": 2}])
        survivors = {r["replica_id"] for r in wait_replicas("sticky", "Ingress", 2, timeout=60)}
        report["scale_down_s"] = round(time.monotonic() - t0, 1)
        (removed,) = set(three) - survivors
        report["removed"] = "new" if removed == new else "old"
        gone = [c for c in clients if c.replica == removed]
        kept = [c for c in clients if c.replica != removed]
        assert len(gone) == 2 and len(kept) == 4
        for c in gone:
            await asyncio.wait_for(c.ended.wait(), 10)
            assert c.messages[-1] == {"type": "end", "reason": "server_shutdown"}, c.messages
            await wait_for(lambda c=c: c.pc.connectionState in ("closed", "failed"), 10,
                           what="the removed replica's peer connection closing")
        # Survivors never noticed: frames keep coming, parameters unchanged.
        for c in kept:
            assert not c.ended.is_set(), c.messages
            await expect_frames(c, 2 * FPS)
        await check_parameters(kept)

        # Each survivor ends at its own time limit, counted from its own connection.
        lateness = []
        for c in kept:
            left = c.connected_at + limit - time.monotonic()
            await asyncio.wait_for(c.ended.wait(), max(left, 0) + 5)
            lateness.append(round(c.ended_at - (c.connected_at + limit), 2))
            assert c.messages[-1] == {"type": "end", "reason": "time_limit"}, c.messages
        report["time_limit_lateness_s"] = lateness
        # Measured from the client's side of `connected` (+-1 poll) to the end message's
        # arrival; slack for a loaded 2-core CI machine.
        assert all(-1.5 < late < 3.0 for late in lateness), lateness
        print("ingress scaling:", report)
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        delete_declarative()
