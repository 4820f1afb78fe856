"""Our app on Ray Serve for the bench: a local Ray on 127.0.0.1 and one app per
configuration (model, batch size, detector replicas)."""

from __future__ import annotations

import os
from typing import Any, Optional

from tests.support.ports import LOOPBACK, free_port

# The bench's own apps only listen on loopback; the token opens GET /webrtc/sessions
# (per-session counters), which the load generator reads.
ADMIN_TOKEN = "rayrtc-bench-admin"

# Ray turns 127.0.0.1 into the machine's interface address unless told this is a
# single-machine setup; read at `import ray`, so set before anything imports it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def start_ray(num_cpus: Optional[int] = None) -> str:
    """ray.init + serve.start on loopback; returns the HTTP base URL."""
    import ray
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=False,
        _node_ip_address=LOOPBACK,
        log_to_driver=False,
    )
    port = free_port()
    serve.start(http_options={"host": LOOPBACK, "port": port})
    return f"http://{LOOPBACK}:{port}"


def stop_ray() -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def app_args(model: str, model_path: Optional[str], max_batch_size: int, replicas: Optional[int],
             detector_num_cpus: Optional[float] = None, **overrides: Any):
    """The app's defaults, except: loopback ICE, no time limit, room for the sessions,
    and the configuration under test. `replicas=None` keeps the default autoscaling."""
    from serve_app import AppArgs

    kw: dict[str, Any] = dict(
        ice_host_addresses=[LOOPBACK],
        time_limit=None,
        max_sessions=64,
        model=model,
        model_path=model_path,
        max_batch_size=max_batch_size,
    )
    if "offer_rate_per_s" in AppArgs.model_fields:
        kw["offer_rate_per_s"] = None  # every bench peer comes from 127.0.0.1
    if "admin_token" in AppArgs.model_fields:
        kw["admin_token"] = ADMIN_TOKEN
    if replicas is not None:
        kw.update(detector_min_replicas=replicas, detector_max_replicas=replicas)
    if detector_num_cpus is not None:
        kw["detector_num_cpus"] = detector_num_cpus
    kw.update(overrides)
    return AppArgs(**kw)


def loop_codec(args) -> str:
    """The codec the app's answer asks the camera for (as the SDP names it), for the load
    generator's pre-encoded loops."""
    return args.camera_codec.upper()


def deploy(base_url: str, name: str, route_prefix: str, args) -> str:
    """serve.run the app; returns its URL."""
    from ray import serve

    from serve_app import app

    serve.run(app(args), name=name, route_prefix=route_prefix)
    return base_url + (route_prefix if route_prefix != "/" else "")


def delete(name: str) -> None:
    from ray import serve

    serve.delete(name, _blocking=True)


def running_replicas(app_name: str, deployment: str = "Detector") -> Optional[int]:
    from ray import serve

    try:
        status = serve.status().applications[app_name].deployments[deployment]
        return int(status.replica_states.get("RUNNING", 0))
    except Exception:
        return None


def detector_stats_fn(app_name: str):
    """A callable returning the Detector's stats() (exact with one replica; with more,
    whichever replica answers, so the batch histogram is then marked partial)."""
    from ray import serve

    handle = serve.get_deployment_handle("Detector", app_name=app_name)

    def stats() -> Optional[dict]:
        try:
            data = handle.stats.remote().result(timeout_s=10)
        except Exception:
            return None
        data["replicas"] = running_replicas(app_name)
        return data

    return stats
