"""A two-node Ray cluster across two network namespaces, the app on it, a session
through it, and the ingress -> detector hop timed across the nodes.

Run by tests/test_cluster_nodes.py inside namespace A:
`ip netns exec A python tests/support/cluster_netns_nodes.py TEMP_DIR ADDR_A ADDR_B NETNS_B`.
Node A (`ray start --head` on ADDR_A) holds `detector_node`; node B (`ray start
--address ADDR_A:PORT` inside NETNS_B, on ADDR_B) holds `ingress_node`. Plain Ray: no
setting or patch of Ray internals. The session's media goes from this process (on A)
to the ingress on B's address; its frames go from B to the detectors on A. Prints one
JSON line; everything it started is stopped on the way out (by process).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cluster_pids(temp_dir: str) -> list[int]:
    """Processes of the cluster rooted at `temp_dir`: those naming it on their command
    line (GCS, raylets, agents) and their children (workers), this script excepted."""
    roots = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmdline and Path(__file__).name not in cmdline:
            roots.append(int(entry.name))
    children = []
    for pid in roots:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        children += [int(p) for p in out.split()]
    return sorted(set(roots + children))


def stop_cluster(temp_dir: str, grace: float = 5.0) -> int:
    """Stop every process of that cluster (never `ray stop`, which would stop every Ray
    on the machine, other test sessions' included)."""
    pids = cluster_pids(temp_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.1)
    return len(pids)

GCS_PORT = 6379  # each node has its own network stack: Ray's default ports are free
HTTP_PORT = 8000


def ray_env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env.update(
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    return env


def ray_start(prefix: list[str], args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [*prefix, sys.executable, "-m", "ray.scripts.scripts", "start", *args]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def hop_times(handle, n: int) -> dict:
    """Round trips of a Detector call from this process, in ms."""
    from deployments.models import ModelSpec, build_preprocessor
    from tests.support.images import photo

    model_input = build_preprocessor(ModelSpec())(photo("astronaut"))
    out = {}
    for name, call in (("stats", lambda: handle.stats.remote()), ("detect", lambda: handle.detect.remote(model_input))):
        call().result(timeout_s=30)  # warm
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            call().result(timeout_s=30)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        out[name] = {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(0.95 * (n - 1))], 2)}
    return out


async def stream(url: str, host_a: str, seconds: float) -> dict:
    from component.ice import IceConfig, claim_process_ice
    from tests.support.client import StreamClient
    from tests.support.images import green_mask, photo

    claim_process_ice(IceConfig(host_addresses=(host_a,)), owner="cluster_netns_nodes' client")
    client = StreamClient(url, photo("astronaut")[:256, 128:384].copy(), fps=10)
    try:
        answer = await client.connect()
        await client.wait_connected(30)
        deadline = time.monotonic() + 30
        boxed = False
        while time.monotonic() < deadline and not boxed:
            await asyncio.sleep(0.2)
            boxed = client.received.latest is not None and int(green_mask(client.latest_image()).sum()) > 300
        start = client.received.count
        await asyncio.sleep(seconds)
        pair = None
        for transceiver in client.pc.getTransceivers():
            dtls = transceiver.sender.transport
            nominated = dtls.transport._connection._nominated.get(1) if dtls else None
            if nominated:
                pair = [f"{nominated.local_candidate.host}", f"{nominated.remote_candidate.host}"]
        return {
            "answer_candidates": sorted({l.split()[4] for l in answer["sdp"].splitlines() if l.startswith("a=candidate:")}),
            "media_pair": pair,
            "face_box_drawn": boxed,
            "fps": round((client.received.count - start) / seconds, 1),
        }
    finally:
        await client.close()


def main(temp_dir: str, addr_a: str, addr_b: str, netns_b: str) -> dict:
    started = time.monotonic()
    env = ray_env(secrets.token_hex(32))
    common = ["--num-cpus", "2", "--temp-dir", temp_dir, "--object-store-memory", str(80 * 1024 * 1024),
              "--disable-usage-stats"]
    head = ray_start([], ["--head", "--node-ip-address", addr_a, "--port", str(GCS_PORT), "--include-dashboard",
                          "false", "--resources", json.dumps({"detector_node": 2}), *common], env)
    if head.returncode != 0:
        return {"error": f"ray start --head: {(head.stderr or head.stdout)[-1500:]}"}
    worker = ray_start(["ip", "netns", "exec", netns_b],
                       ["--address", f"{addr_a}:{GCS_PORT}", "--node-ip-address", addr_b,
                        "--resources", json.dumps({"ingress_node": 2}), *common], env)
    if worker.returncode != 0:
        return {"error": f"ray start --address (node B): {(worker.stderr or worker.stdout)[-1500:]}"}
    timings = {"ray_start_s": round(time.monotonic() - started, 1)}

    os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    os.environ.update({k: env[k] for k in ("RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")})
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client

    from serve_app import AppArgs, app
    from tests.support.app import app_args

    ray.init(address=f"{addr_a}:{GCS_PORT}", _node_ip_address=addr_a, log_to_driver=False)
    alive = [n for n in ray.nodes() if n["Alive"]]
    address_of = {n["NodeID"]: n["NodeManagerAddress"] for n in alive}

    t0 = time.monotonic()
    serve.start(proxy_location="HeadOnly", http_options={"host": addr_a, "port": HTTP_PORT})
    args = AppArgs(**app_args(
        ice_host_addresses=[addr_b],  # the ingress runs on node B: media on B's address
        detector_num_cpus=0.5,
        detector_min_replicas=1,
        detector_max_replicas=1,
        detector_resources={"detector_node": 1},
        ingress_resources={"ingress_node": 1},
        time_limit=60,
    ))
    serve.run(app(args), name="netns", route_prefix="/")
    timings["serve_up_s"] = round(time.monotonic() - t0, 1)
    details = _get_global_client().get_serve_details()["applications"]["netns"]["deployments"]
    placement = {
        name: [address_of[r["node_id"]] for r in dep["replicas"] if r["state"] == "RUNNING"]
        for name, dep in details.items()
    }
    session = asyncio.run(stream(f"http://{addr_a}:{HTTP_PORT}", addr_a, seconds=4))

    # The hop the frames take, timed from each node: a task pinned to node B (where the
    # ingress calls from) and one on node A (the detector's own node) call the same
    # Detector replica through a DeploymentHandle, as the ingress does.
    @ray.remote(num_cpus=0)
    def timed(n: int) -> dict:
        from ray import serve as s

        return hop_times(s.get_deployment_handle("Detector", "netns"), n)

    hops = {
        "from_ingress_node": ray.get(timed.options(resources={"ingress_node": 0.01}).remote(40), timeout=120),
        "from_detector_node": ray.get(timed.options(resources={"detector_node": 0.01}).remote(40), timeout=120),
    }
    timings["total_s"] = round(time.monotonic() - started, 1)
    serve.shutdown()
    ray.shutdown()
    return {
        "node_addresses": sorted(address_of.values()),
        "placement": placement,
        "session": session,
        "hops_ms": hops,
        "timings": timings,
    }


if __name__ == "__main__":
    temp = sys.argv[1]

    def _terminate(*_):
        stop_cluster(temp)
        os._exit(143)

    signal.signal(signal.SIGTERM, _terminate)
    try:
        result = main(*sys.argv[1:5])
    except Exception as exc:  # reported as a failure with its cause
        import traceback

        result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
    finally:
        stopped = stop_cluster(temp)
    result["stopped_processes"] = stopped
    print("RESULT " + json.dumps(result), flush=True)
