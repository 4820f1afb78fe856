"""A two-node Ray cluster on this machine, the app on it, and sessions through it.

Run as a script (a driver connects to one cluster only, and the test session already
runs its own): `python tests/cluster_two_nodes.py TEMP_DIR`. It starts a head node
(1 CPU, resource `ingress_node`) and a second node (1 CPU, resource `detector_node: 2`)
with `ray start`, deploys the app with `detector_resources={"detector_node": 1}` and
`ingress_resources={"ingress_node": 1}`, streams two sessions and prints one JSON line:
node ids, where every replica runs, frames and detections seen, timings; or
`{"skip": reason}` when `ray start` cannot run here. Everything it started is stopped
on the way out (by process, never `ray stop`, which would stop every Ray on the machine).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repo importable
    sys.path.insert(0, str(ROOT))
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def cluster_pids(temp_dir: str) -> list[int]:
    """Processes of the cluster rooted at `temp_dir`: those naming it on their command
    line (GCS, raylets, agents) and their children (workers)."""
    roots = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmdline and "cluster_two_nodes.py" not in cmdline:
            roots.append(int(entry.name))
    children = []
    for pid in roots:
        try:
            out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        except OSError:
            continue
        children += [int(p) for p in out.split()]
    return sorted(set(roots + children))


def stop_cluster(temp_dir: str, grace: float = 5.0) -> int:
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


# `ray start` for the second node. Ray keeps 127.0.0.1 as a node's address only while
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ("single machine": otherwise it swaps loopback for
# the machine's interface address), and in that mode refuses to join a second node.
# This runs the same CLI with only those two decisions changed, so both nodes, the GCS
# and every worker stay on loopback.
JOIN_ON_LOOPBACK = """
import sys
import ray._private.ray_constants as constants
import ray._private.services as services
constants.ENABLE_RAY_CLUSTER = True
_resolve = services.resolve_ip_for_localhost
services.resolve_ip_for_localhost = lambda host: host if host.split(":")[0] == "127.0.0.1" else _resolve(host)
from ray.scripts.scripts import main
sys.argv[0] = "ray"
sys.exit(main())
"""


def ray_env(token: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
        # A private token for this cluster only (never written to ~/.ray).
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    return env


def ray_start(args: list[str], env: dict[str, str], timeout: float, join: bool = False) -> subprocess.CompletedProcess:
    cli = [sys.executable, "-c", JOIN_ON_LOOPBACK] if join else [sys.executable, "-m", "ray.scripts.scripts"]
    return subprocess.run([*cli, "start", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


async def stream(url: str, seconds: float) -> list[dict]:
    from component.client import StreamClient
    from tests.helpers import green_mask, photo

    image = photo("astronaut")[:256, 128:384].copy()
    clients = [StreamClient(url, image, fps=8) for _ in range(2)]
    try:
        for c in clients:
            await c.connect()
        for c in clients:
            await c.wait_connected(30)
        deadline = time.monotonic() + 30
        boxed = [False] * len(clients)
        while time.monotonic() < deadline and not all(boxed):
            await asyncio.sleep(0.2)
            for i, c in enumerate(clients):
                if c.received.latest is not None:
                    boxed[i] = boxed[i] or int(green_mask(c.latest_image()).sum()) > 300
        start = [c.received.count for c in clients]
        await asyncio.sleep(seconds)
        return [
            {
                "frames": c.received.count,
                "fps": round((c.received.count - s) / seconds, 1),
                "face_box_drawn": boxed[i],
            }
            for i, (c, s) in enumerate(zip(clients, start))
        ]
    finally:
        await asyncio.gather(*(c.close() for c in clients))


def main(temp_dir: str) -> dict:
    started = time.monotonic()
    token = secrets.token_hex(32)
    env = ray_env(token)
    gcs_port = free_port()
    common = ["--node-ip-address", LOOPBACK, "--num-cpus", "1", "--temp-dir", temp_dir,
              "--object-store-memory", str(80 * 1024 * 1024), "--disable-usage-stats"]
    head = ray_start(
        ["--head", "--port", str(gcs_port), "--include-dashboard", "false",
         "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
         "--resources", json.dumps({"ingress_node": 1}), *common],
        env, timeout=90,
    )
    if head.returncode != 0:
        return {"skip": f"ray start --head failed here: {(head.stderr or head.stdout)[-800:]}"}
    worker = ray_start(
        ["--address", f"{LOOPBACK}:{gcs_port}", "--dashboard-agent-listen-port", str(free_port()),
         "--resources", json.dumps({"detector_node": 2}), *common],
        env, timeout=90, join=True,
    )
    if worker.returncode != 0:
        return {"skip": f"ray start (second node) failed here: {(worker.stderr or worker.stdout)[-800:]}"}
    timings = {"ray_start_s": round(time.monotonic() - started, 1)}

    os.environ.update({k: env[k] for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED",
                                           "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")})
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client

    from component.ice import set_host_addresses
    from serve_app import AppArgs, app
    from tests.cluster_support import app_args

    set_host_addresses([LOOPBACK])
    ray.init(address=f"{LOOPBACK}:{gcs_port}", log_to_driver=False)
    alive = [n for n in ray.nodes() if n["Alive"]]
    nodes = {n["NodeID"]: n["Resources"] for n in alive}
    node_addresses = sorted({n["NodeManagerAddress"] for n in alive})
    detector_nodes = [nid for nid, res in nodes.items() if res.get("detector_node")]
    ingress_nodes = [nid for nid, res in nodes.items() if res.get("ingress_node")]

    http_port = free_port()
    t0 = time.monotonic()
    # One proxy, on the head: both nodes share this machine's ports.
    serve.start(proxy_location="HeadOnly", http_options={"host": LOOPBACK, "port": http_port})
    args = AppArgs(**app_args(
        detector_num_cpus=0.5,
        detector_min_replicas=2,
        detector_max_replicas=2,
        detector_resources={"detector_node": 1},
        ingress_resources={"ingress_node": 1},
        time_limit=60,
    ))
    serve.run(app(args), name="two", route_prefix="/")
    timings["serve_up_s"] = round(time.monotonic() - t0, 1)

    details = _get_global_client().get_serve_details()["applications"]["two"]["deployments"]
    placement = {
        name: [r["node_id"] for r in dep["replicas"] if r["state"] == "RUNNING"]
        for name, dep in details.items()
    }
    sessions = asyncio.run(stream(f"http://{LOOPBACK}:{http_port}", seconds=4))
    detector = serve.get_deployment_handle("Detector", "two")
    stats = [detector.stats.remote().result(timeout_s=30) for _ in range(4)]
    timings["total_s"] = round(time.monotonic() - started, 1)
    serve.shutdown()
    ray.shutdown()
    return {
        "nodes": sorted(nodes),
        "node_addresses": node_addresses,
        "detector_nodes": detector_nodes,
        "ingress_nodes": ingress_nodes,
        "placement": placement,
        "sessions": sessions,
        "detector_stats": stats,
        "timings": timings,
    }


if __name__ == "__main__":
    temp = sys.argv[1]

    def _terminate(*_):
        stop_cluster(temp)
        os._exit(143)

    signal.signal(signal.SIGTERM, _terminate)
    try:
        result = main(temp)
    except Exception as exc:  # reported as a failure with its cause
        result = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        stopped = stop_cluster(temp)
    result["stopped_processes"] = stopped
    print("RESULT " + json.dumps(result), flush=True)
