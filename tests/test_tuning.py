"""Batch settings change on a live app through the Detector's `user_config`, the way a
`serve deploy` of an edited config file does it: the running replica takes them (same
replica, same process, counters kept) and its batch-size histogram moves. A bad
`user_config` fails the deploy with the offending key's name."""

from __future__ import annotations

import asyncio
import time

import pytest
from ray import serve

from deployments.models import Detections, ModelSpec, build_preprocessor
from tests.support.app import app_args
from tests.support.cluster import delete_declarative, deploy_declarative, replicas, wait_replicas
from tests.support.images import photo
from tests.support.waits import wait_for

APP, PREFIX = "tuning", "/tuning"
# One frame per forward pass to start with; a long wait, so that once larger batches
# are allowed, concurrent callers surely share one. A batched face model (the Haar
# backend itself runs frame by frame, so the replica never batches it).
MODEL = dict(model="callable", model_callable="tests.support.cluster:faces_batch", model_batched=True)
ARGS = app_args(max_batch_size=1, batch_wait_timeout_s=0.05, **MODEL)
CALLERS = 6
EVERY_STATE = ("STARTING", "UPDATING", "RECOVERING", "RUNNING", "STOPPING", "PENDING_MIGRATION")


def retune(user_config: dict) -> None:
    """What `serve deploy` of the same file with only the Detector's user_config edited does."""
    deploy_declarative(APP, PREFIX, ARGS, [{"name": "Detector", "user_config": user_config}])


def grown(before: dict, after: dict) -> dict[int, int]:
    """Batches formed between two `stats()` snapshots, by size."""
    sizes = {size: n - before["batch_sizes"].get(size, 0) for size, n in after["batch_sizes"].items()}
    return {size: n for size, n in sizes.items() if n > 0}


def identity(app: str) -> list[tuple[str, str, int]]:
    return sorted((r["replica_id"], r["actor_id"], r["pid"]) for r in replicas(app, "Detector", EVERY_STATE))


@pytest.fixture(scope="module")
def tuning_app(serve_instance):
    deploy_declarative(APP, PREFIX, ARGS, [])
    wait_replicas(APP, "Detector", 1, timeout=90)
    yield serve.get_deployment_handle("Detector", app_name=APP)
    delete_declarative()


@pytest.fixture(scope="module")
def face():
    return build_preprocessor(ModelSpec(kind="callable", callable=MODEL["model_callable"], batched=True))(
        photo("astronaut")
    )


async def burst(handle, item) -> None:
    """CALLERS concurrent calls, as that many sessions' frames arriving at once."""
    results = await asyncio.gather(*(handle.detect.remote(item) for _ in range(CALLERS)))
    # Each caller gets its own frame's detections (no FrameFailure, no mix-up).
    assert all(isinstance(r, Detections) and any(d.label == "face" for d in r) for r in results), results


async def test_batch_settings_change_on_the_running_replica(tuning_app, face):
    handle = tuning_app
    start = await handle.stats.remote()
    assert (start["max_batch_size"], start["batch_wait_timeout_s"]) == (1, 0.05)
    started_as = identity(APP)
    assert len(started_as) == 1, started_as

    await burst(handle, face)
    single = await handle.stats.remote()
    assert grown(start, single) == {1: CALLERS}

    t0 = time.monotonic()
    retune({"max_batch_size": 4, "batch_wait_timeout_s": 0.1})

    async def retuned() -> bool:
        now = await handle.stats.remote()
        return (now["max_batch_size"], now["batch_wait_timeout_s"]) == (4, 0.1)

    await wait_for(retuned, 30, what="the replica to take the new settings")
    retune_s = time.monotonic() - t0

    # Batches of up to four now form across the concurrent callers.
    async def shared_batch() -> dict[int, int] | None:
        await burst(handle, face)
        new = grown(single, await handle.stats.remote())
        return new if max(new) > 1 else None

    batches = await wait_for(shared_batch, 20, what="a batch of more than one frame")
    assert max(batches) <= 4, batches
    after = await handle.stats.remote()
    # The same replica, the same process: nothing restarted, the histogram kept its past.
    assert identity(APP) == started_as
    assert after["batch_sizes"][1] >= single["batch_sizes"][1]
    assert after["frames"] > single["frames"]
    print(f"retuned in {retune_s:.1f} s; batches since: {batches}")


async def test_a_bad_user_config_fails_the_deploy_naming_the_key(tuning_app):
    from ray.serve.context import _get_global_client

    retune({"max_batch_size": 0, "batch_wait_timeout_s": 0.05})

    def detector_status() -> dict | None:
        app = _get_global_client().get_serve_details()["applications"].get(APP) or {}
        return app.get("deployments", {}).get("Detector")

    def reported() -> dict | None:
        status = detector_status()
        return status if status and "max_batch_size" in (status.get("message") or "") else None

    status = await wait_for(reported, 60, what="the Detector's status to name the bad key")
    assert "Detector user_config" in status["message"]
    assert "greater than or equal to 1" in status["message"]
    # Not taken quietly: the deployment is not healthy on its old settings meanwhile
    # (Serve replaces the replica, and the replacements refuse the config too).
    assert str(status["status"]).rsplit(".", 1)[-1] in ("UPDATING", "DEPLOY_FAILED"), status["status"]
