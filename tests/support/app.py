"""Test apps on the session's Serve instance: the `AppArgs` every test app starts from
(loopback ICE, a small detector, the admin token, no offer rate limit) and the deploy
the conftest fixtures and single-purpose test modules share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.support.admin import ADMIN_TOKEN
from tests.support.ports import LOOPBACK


@dataclass(frozen=True)
class ServedApp:
    name: str
    url: str
    args: "object"


def deploy_app(base: str, name: str, prefix: str, **overrides) -> ServedApp:
    """Deploy one more app on the session's Serve instance (loopback ICE, small detector)."""
    from ray import serve

    from serve_app import AppArgs, app

    args = AppArgs(
        ice_host_addresses=[LOOPBACK],
        detector_num_cpus=0.5,
        detector_max_replicas=1,
        default_threshold=0.3,
        **{"offer_rate_per_s": None, "admin_token": ADMIN_TOKEN, **overrides},
    )
    serve.run(app(args), name=name, route_prefix=prefix)
    return ServedApp(name=name, url=base + (prefix if prefix != "/" else ""), args=args)


def app_args(**overrides: Any) -> dict[str, Any]:
    """AppArgs for a test app on loopback; switches off offer rate limiting (tests
    open sessions back to back) and the idle-client timeout (a starved CI machine can
    stall a test client's camera for seconds) where the app has them."""
    from serve_app.args import AppArgs

    base: dict[str, Any] = {
        "ice_host_addresses": [LOOPBACK],
        "detector_num_cpus": 0.25,
        "detector_max_replicas": 1,
    }
    for optional in ("offer_rate_per_s", "idle_timeout"):
        if optional in AppArgs.model_fields:
            base[optional] = None
    if "admin_token" in AppArgs.model_fields:
        base["admin_token"] = ADMIN_TOKEN
    base.update(overrides)
    return base
