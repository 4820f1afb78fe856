"""The files under cluster/ stay true to the code: the committed `serve build` output
matches a fresh one, and every Serve config (YAMLs and the RayService's embedded one)
validates against Serve's schema and `AppArgs`. No Ray cluster needed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support.paths import ROOT

CLUSTER = ROOT / "cluster"


def normalised(config: dict) -> dict:
    """Order-insensitive parts put in one order: `deployments` lists follow the app
    graph's traversal, which is not part of the config's meaning; sort them by name."""
    config = json.loads(json.dumps(config))
    for app in config.get("applications", []):
        app["deployments"] = sorted(app.get("deployments", []), key=lambda d: d["name"])
    return config


def serve_build(target: Path) -> float:
    serve = shutil.which("serve") or str(Path(sys.executable).parent / "serve")
    started = time.monotonic()
    proc = subprocess.run(
        [serve, "build", "serve_app:default_app", "-o", str(target)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return time.monotonic() - started


def test_committed_serve_build_output_is_current(tmp_path):
    fresh = tmp_path / "serve-default.yaml"
    elapsed = serve_build(fresh)
    committed = yaml.safe_load((CLUSTER / "serve-default.yaml").read_text())
    regenerated = yaml.safe_load(fresh.read_text())
    assert normalised(committed) == normalised(regenerated), (
        "cluster/serve-default.yaml is stale: run "
        "`serve build serve_app:default_app -o cluster/serve-default.yaml` and commit it"
    )
    print(f"serve build took {elapsed:.1f} s")


def serve_configs() -> list[tuple[str, dict]]:
    configs = [(name, yaml.safe_load((CLUSTER / name).read_text()))
               for name in ("serve-cpu.yaml", "serve-gpu.yaml", "serve-default.yaml")]
    service = yaml.safe_load((CLUSTER / "rayservice.yaml").read_text())
    assert service["kind"] == "RayService"
    configs.append(("rayservice.yaml", yaml.safe_load(service["spec"]["serveConfigV2"])))
    return configs


@pytest.mark.parametrize("name,config", serve_configs(), ids=lambda v: v if isinstance(v, str) else "")
def test_serve_configs_validate(name, config):
    from ray.serve.schema import ServeDeploySchema

    from deployments.autoscaling import POLICY as AUTOSCALING_POLICY
    from deployments.batch_config import BatchConfig
    from serve_app.args import AppArgs

    schema = ServeDeploySchema.model_validate(config)
    for app in schema.applications:
        args = AppArgs.model_validate(app.args or {})
        deployments = {d.name: d for d in app.deployments}
        assert set(deployments) <= {"Ingress", "Detector"}, f"{name}: unknown deployment names"
        detector = deployments.get("Detector")
        # The batch settings the replicas run: the config's user_config wins over args.
        batch = args.detector_batch_config()
        if detector is not None and "user_config" in detector.model_fields_set:
            batch = BatchConfig.from_user_config(detector.user_config)
        if detector is not None and detector.autoscaling_config:
            # A batch never exceeds the replica's ongoing requests: leave room for it.
            limit = detector.max_ongoing_requests
            if isinstance(limit, int):
                assert limit >= batch.max_batch_size, f"{name}: max_ongoing_requests below max_batch_size"
            # A YAML autoscaling_config replaces the code's whole dict: without the policy,
            # packed calls would be counted as one frame each.
            policy = dict(detector.autoscaling_config).get("policy") or {}
            assert dict(policy).get("policy_function") == AUTOSCALING_POLICY, f"{name}: default policy"
        if name != "serve-default.yaml":
            # Cluster configs pin media to a port range on nodes that have it open.
            assert args.ice_port_min and args.ice_port_max, f"{name}: no UDP port range"
            assert args.ingress_resources, f"{name}: ingress replicas are not pinned"


def test_gpu_config_shares_gpus_between_detector_replicas():
    config = yaml.safe_load((CLUSTER / "serve-gpu.yaml").read_text())
    from serve_app.args import AppArgs

    args = AppArgs.model_validate(config["applications"][0]["args"])
    assert args.model == "onnx" and 0 < args.detector_num_gpus < 1


def test_cluster_launcher_config_validates():
    jsonschema = pytest.importorskip("jsonschema")
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / "cluster-launcher.yaml").read_text())
    jsonschema.validate(config, schema)
    media = config["available_node_types"]["media"]["resources"]
    assert media.get("media_ports") == 1


# --- AppArgs -> deployment options --------------------------------------------------------
def test_cluster_args_validate_with_their_names():
    from serve_app.args import AppArgs

    for bad, message in [
        ({"ice_port_min": 40000}, "ice_port_min and ice_port_max"),
        ({"ice_port_min": 40010, "ice_port_max": 40000}, "exceeds ice_port_max"),
        ({"ice_advertised_address": "my.host"}, "ice_advertised_address"),
        ({"ingress_router": "random"}, "ingress_router"),
    ]:
        with pytest.raises(ValueError, match=message):
            AppArgs(**bad)
    # CLI form: `serve run serve_app:app ingress_resources='{"media_ports": 1}' ice_port_min=40000 ...`
    args = AppArgs(ingress_resources='{"media_ports": 1}', ice_port_min="40000", ice_port_max="40099",
                   ice_advertised_address="203.0.113.7", detector_look_back_period_s="null")
    ice = args.ice()
    assert (ice.port_range, ice.advertised_address) == ((40000, 40099), "203.0.113.7")
    assert args.ingress_resources == {"media_ports": 1.0}


def test_builder_pins_ingress_and_sets_the_router():
    from serve_app import CONSISTENT_HASH_ROUTER, AppArgs, app

    built = app(AppArgs(ingress_replicas=3, ingress_resources={"media_ports": 1}, detector_look_back_period_s=12))
    ingress = built._bound_deployment
    assert ingress.num_replicas == 3
    assert ingress.ray_actor_options["resources"] == {"media_ports": 1}
    router = ingress._deployment_config.request_router_config
    assert router.request_router_class == CONSISTENT_HASH_ROUTER
    assert router.request_router_kwargs == {"num_fallback_replicas": 0}
    assert AppArgs(detector_look_back_period_s=12).detector_autoscaling()["look_back_period_s"] == 12
    assert "look_back_period_s" not in AppArgs().detector_autoscaling()  # Serve's default

    plain = app(AppArgs(ingress_router="power_of_two"))._bound_deployment
    assert "resources" not in plain.ray_actor_options
    assert plain._deployment_config.request_router_config.request_router_class != CONSISTENT_HASH_ROUTER
