"""Helpers for the cluster tests: sticky clients, replica lookup, the consistent-hash
ring as Serve computes it, declarative deploys and a slow model for autoscaling."""

from __future__ import annotations

import bisect
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

import httpx
import numpy as np

from tests.support.admin import ADMIN_HEADERS
from tests.support.client import StreamClient

SESSION_HEADER = "x-session-id"  # Serve's default RAY_SERVE_SESSION_ID_HEADER_KEY
REPLICA_HEADER = "x-rayrtc-replica"  # set by the ingress on every response


class StickyClient(StreamClient):
    """A `StreamClient` whose HTTP requests carry `x-session-id: <webrtc_id>`, so the
    consistent-hash router sends its offer and its follow-ups to one ingress replica."""

    ended_at: Optional[float] = None

    def _on_message(self, message: Any) -> None:
        super()._on_message(message)
        if self.ended.is_set() and self.ended_at is None:
            self.ended_at = time.monotonic()

    @property
    def headers(self) -> dict[str, str]:
        return {**self._extra_headers, SESSION_HEADER: self.webrtc_id}

    @headers.setter
    def headers(self, value: dict[str, str]) -> None:
        self._extra_headers = dict(value)

    @property
    def replica(self) -> Optional[str]:
        """The ingress replica that answered this session's offer."""
        return self.offer_response_headers.get(REPLICA_HEADER)

    def set_inputs(self, *values: Any) -> None:
        """What the page's slider does: the values on the session's own data channel."""
        self.send({"type": "inputs", "values": list(values)})

    async def replica_stats(self) -> tuple[str | None, dict]:
        """`/webrtc/sessions` of the replica this session's header routes to."""
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            resp = await http.get(f"{self.base_url}/webrtc/sessions", headers={**self.headers, **ADMIN_HEADERS})
        resp.raise_for_status()
        return resp.headers.get(REPLICA_HEADER), resp.json()


# --- the router's ring, as ray.serve.experimental.consistent_hash_router builds it -----
def ring_owner(key: str, replica_ids: Iterable[str]) -> str:
    from ray.serve.experimental.consistent_hash_router import DEFAULT_NUM_VIRTUAL_NODES, _hash_bytes

    ring = sorted(
        (_hash_bytes(f"{rid}:{i}".encode()), rid)
        for rid in replica_ids
        for i in range(DEFAULT_NUM_VIRTUAL_NODES)
    )
    hashes = [h for h, _ in ring]
    index = bisect.bisect_right(hashes, _hash_bytes(key.encode()))
    return ring[index % len(ring)][1]


def ids_owned_by(replica: str, replica_ids: Iterable[str], count: int, prefix: str = "") -> list[str]:
    """`count` fresh session ids that the ring maps to `replica`."""
    replica_ids = list(replica_ids)
    found: list[str] = []
    while len(found) < count:
        candidate = prefix + uuid.uuid4().hex
        if ring_owner(candidate, replica_ids) == replica:
            found.append(candidate)
    return found


# --- Serve state ---------------------------------------------------------------------
def replicas(app: str, deployment: str, states: tuple[str, ...] = ("RUNNING",)) -> list[dict]:
    """The deployment's replicas ({replica_id, node_id, state, ...}) as the controller sees them."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    app_details = details.get("applications", {}).get(app)
    if not app_details:
        return []
    dep = app_details["deployments"].get(deployment)
    if not dep:
        return []
    return [r for r in dep["replicas"] if r["state"] in states]


def wait_replicas(app: str, deployment: str, count: int, timeout: float, exact: bool = True) -> list[dict]:
    """Poll until `count` replicas are RUNNING (and, with `exact`, no others exist)."""
    deadline = time.monotonic() + timeout
    last: list[dict] = []
    while time.monotonic() < deadline:
        running = replicas(app, deployment)
        every = replicas(app, deployment, states=("STARTING", "UPDATING", "RECOVERING", "RUNNING", "STOPPING", "PENDING_MIGRATION"))
        if len(running) == count and (not exact or len(every) == count):
            return running
        last = every
        time.sleep(0.1)
    raise AssertionError(
        f"{app}/{deployment}: wanted {count} running replicas within {timeout} s; have "
        f"{[(r['replica_id'], r['state']) for r in last]}"
    )


def deploy_declarative(name: str, route_prefix: str, args: dict[str, Any], deployments: list[dict]) -> None:
    """Deploy like `serve deploy config.yaml` / KubeRay do: through the controller's
    declarative API, where changing only `num_replicas` is a lightweight update that
    keeps the running replicas (an imperative `serve.run` replaces them all)."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    app = ServeApplicationSchema(
        name=name,
        route_prefix=route_prefix,
        import_path="serve_app:app",
        args=args,
        deployments=deployments,
    )
    _get_global_client().deploy_apps(ServeDeploySchema(applications=[app]))


def delete_declarative() -> None:
    """Remove every app this module deployed declaratively (imperative apps stay)."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    _get_global_client().deploy_apps(ServeDeploySchema(applications=[]))


# --- a model whose latency is known, for autoscaling ----------------------------------
SLOW_MODEL_S = 0.2


def faces_batch(frames: list[np.ndarray]) -> list[list[tuple]]:
    """Batched user callable: OpenCV's frontal-face cascade on each BGR frame of the
    batch. The Haar backend runs frames one by one (the replica sends it one frame
    per pass); this gives tests a real face model whose batches grow with the
    replica's `max_batch_size`."""
    import cv2

    from deployments.models.haar import DEFAULT_CASCADE

    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / DEFAULT_CASCADE))
    out = []
    for frame in frames:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        boxes = cascade.detectMultiScale(grey, scaleFactor=1.15, minNeighbors=4, minSize=(24, 24))
        out.append([(x, y, x + w, y + h, "face", 0.9) for x, y, w, h in np.asarray(boxes).reshape(-1, 4)])
    return out


def slow_batch(frames: list[np.ndarray]) -> list[list[tuple]]:
    """Batched user callable: one fixed box per frame after SLOW_MODEL_S, whatever
    the batch size, so every session keeps one frame in flight most of the time."""
    time.sleep(SLOW_MODEL_S)
    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        out.append([(w * 0.25, h * 0.25, w * 0.75, h * 0.75, "slow", 0.9)])
    return out
