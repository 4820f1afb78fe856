"""The detector's autoscaling policy counts frames, not calls. Its inputs are Serve's
`AutoscalingContext` fields; a namespace stands in for the context here (the policy is
a pure function of them). The real path, replica metric to controller to replicas,
is test_cluster_autoscale's."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

from deployments.autoscaling import FRAMES_IN_FLIGHT, frames_in_flight_policy


def context(replicas: int, requests: float, frames: dict | None, target: float = 4.0) -> SimpleNamespace:
    return SimpleNamespace(
        current_num_replicas=replicas,
        target_num_replicas=replicas,
        total_num_requests=requests,
        aggregated_metrics={FRAMES_IN_FLIGHT: frames} if frames is not None else {},
        config=SimpleNamespace(get_target_ongoing_requests=lambda: target),
    )


def test_packed_frames_count_as_frames():
    # Two calls carrying 12 frames between two replicas: 12 / 4 -> 3 replicas.
    desired, _ = frames_in_flight_policy(context(2, requests=2, frames={"a": 5.0, "b": 7.0}))
    assert desired == 3.0


def test_calls_without_frame_reports_still_count_one_frame_each():
    assert frames_in_flight_policy(context(1, requests=8, frames=None))[0] == 2.0
    assert frames_in_flight_policy(context(1, requests=8, frames={"a": 1.0}))[0] == 2.0


def test_no_replicas_keeps_the_current_target():
    ctx = context(0, requests=3, frames=None)
    ctx.target_num_replicas = 1
    assert frames_in_flight_policy(ctx)[0] == 1


def test_serve_can_ship_the_policy_by_value(tmp_path):
    """Serve cloudpickles the policy's module by value into its controller, which may
    not have our code on its path: it must load and run in an interpreter where importing
    our packages fails (blocked in `sys.modules`, since CI has them installed)."""
    from ray.serve.config import AutoscalingPolicy

    from deployments.autoscaling import POLICY

    shipped = tmp_path / "policy.pkl"
    shipped.write_bytes(AutoscalingPolicy(policy_function=POLICY).get_serialized_policy_def())
    probe = (
        "import pickle, sys, types\n"
        "for blocked in ('deployments', 'serve_app', 'component'): sys.modules[blocked] = None\n"
        "policy = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "cfg = types.SimpleNamespace(get_target_ongoing_requests=lambda: 4.0)\n"
        "ctx = types.SimpleNamespace(current_num_replicas=1, target_num_replicas=1, total_num_requests=1,\n"
        "    aggregated_metrics={'frames_in_flight': {'a': 8.0}}, config=cfg)\n"
        "print(policy(ctx)[0])\n"
        "assert not [m for m in sys.modules if m.startswith('deployments.')]\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", probe, str(shipped)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2.0"
