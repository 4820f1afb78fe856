"""One Ray cluster and one Serve instance per test session, on loopback only.

Two apps are deployed side by side: `main` at `/` (long time limit) and `short` at
`/short` (a 3 s time limit, 2 sessions per replica), so time-limit and admission
tests don't wait on or crowd the streaming tests.
"""

from __future__ import annotations

import os

# Ray turns 127.0.0.1 into the machine's interface address unless it is told this is
# a single-machine setup; with this, every Ray process talks over loopback only.
# (Read by Ray at import time, so it is set before anything imports ray.)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import pytest

from component.ice import IceConfig, claim_process_ice
from tests.support.app import ServedApp, deploy_app
from tests.support.ports import LOOPBACK, free_port

# Both ends of every test peer connection gather on loopback only: the test session is
# the host that owns this process's ICE settings (tests that need others for a while
# use `component.ice.scoped_process_ice`).
claim_process_ice(IceConfig(host_addresses=(LOOPBACK,)), owner="the test session (tests/conftest.py)")

METRICS_PORT = free_port()


@pytest.fixture(scope="session")
def serve_instance():
    import ray
    from ray import serve

    ray.init(
        # Logical CPUs: several small apps share this session's cluster.
        num_cpus=8,
        include_dashboard=False,
        _node_ip_address=LOOPBACK,
        log_to_driver=os.environ.get("RAYRTC_TEST_RAY_LOGS") == "1",
        _metrics_export_port=METRICS_PORT,
        # Export metrics every second (default 10 s) so tests can watch them move.
        _system_config={"metrics_report_interval_ms": 1000},
    )
    port = free_port()
    serve.start(http_options={"host": LOOPBACK, "port": port})
    yield f"http://{LOOPBACK}:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def metrics_url(serve_instance) -> str:
    """This node's Prometheus endpoint (Ray's metrics agent)."""
    return f"http://{LOOPBACK}:{METRICS_PORT}/metrics"


@pytest.fixture(scope="session")
def main_app(serve_instance) -> ServedApp:
    return deploy_app(serve_instance, "main", "/", time_limit=120, max_sessions=8)


@pytest.fixture(scope="session")
def short_app(serve_instance) -> ServedApp:
    return deploy_app(serve_instance, "short", "/short", time_limit=3, max_sessions=2)


@pytest.fixture
async def serve_stream():
    """A `StreamServer` behind uvicorn on loopback, no Ray: `await serve_stream(fn,
    routes={...}, render=..., **StreamPolicy fields)` -> (base url, server). Torn down after the test."""
    import asyncio

    import uvicorn
    from fastapi import FastAPI

    from component import IceConfig, StreamConfig, StreamServer, mount_offer_routes
    from component.policy import StreamPolicy
    from tests.support.waits import wait_for

    servers = []

    async def start(fn, routes: dict | None = None, render: str = "server", **policy):
        stream = StreamServer(
            StreamConfig(fn=fn, policy=StreamPolicy(**policy), render=render),
            IceConfig(host_addresses=(LOOPBACK,)), default_inputs=[0.5],
        )
        app = FastAPI()
        mount_offer_routes(app, stream, **(routes or {}))
        port = free_port()
        http = uvicorn.Server(uvicorn.Config(
            # proxy_headers off: uvicorn would otherwise rewrite the client address from
            # X-Forwarded-For itself for loopback peers, before our own trusted-proxy logic.
            app, host=LOOPBACK, port=port, log_level="warning", lifespan="off", proxy_headers=False,
        ))
        task = asyncio.create_task(http.serve())
        await wait_for(lambda: http.started, 10, what="uvicorn to start")
        servers.append((http, task, stream))
        return f"http://{LOOPBACK}:{port}", stream

    yield start
    for http, task, stream in servers:
        await stream.close_all()
        http.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture(scope="module")
def netns():
    """A network namespace with a veth pair to this one (see `tests.support.netns.Netns`),
    one per test module, deleted after it."""
    from tests.support.netns import Netns

    ns = Netns.create()
    try:
        yield ns
    finally:
        ns.delete()
