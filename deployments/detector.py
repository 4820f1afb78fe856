"""The detector deployment: one `@serve.batch` queue per replica, fed by every session
of every ingress replica, so frames from different browsers share one forward pass."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from ray import serve

from deployments.batch_config import DEFAULT_BATCH, BatchConfig
from deployments.metrics import DetectorMetrics
from deployments.models import Detections, FrameFailure, ModelInput, ModelSpec, load_backend
from deployments.priority import Priority, current_priority, lower_priority

log = logging.getLogger("ray.serve")


@serve.deployment(name="Detector")
class Detector:
    """Batch settings come as the deployment's `user_config` (see `reconfigure`),
    not as constructor arguments, so they can change without a restart."""

    def __init__(self, spec: ModelSpec, priority: Priority = "normal") -> None:
        # Video first on shared cores: see `deployments.priority`.
        lower_priority(priority)
        # Loading fails here, at replica start, with the backend's own message.
        self.backend = load_backend(spec)
        self._batch = DEFAULT_BATCH
        self._batch_sizes: Counter[int] = Counter()
        self._frames = 0
        self._busy_s = 0.0
        self._metrics = DetectorMetrics()
        log.info("detector ready: %s", self.backend.name)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve calls this after `__init__` and whenever a deploy changes only the
        `user_config`, on the running replica. Async: it runs on the event loop that
        forms the batches, so the settings change between two of its steps (a batch
        already formed finishes as it was). A bad config raises: Serve then
        replaces the replica and, as every new one raises too, marks the deployment
        DEPLOY_FAILED with this message (see cluster/README.md); it never runs on with
        the old settings as if the change had taken."""
        batch = BatchConfig.from_user_config(user_config)
        self.detect.set_max_batch_size(batch.max_batch_size)
        self.detect.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)
        self._batch = batch
        log.info("detector batching: max_batch_size=%d, batch_wait_timeout_s=%g",
                 batch.max_batch_size, batch.batch_wait_timeout_s)

    # The decorator's values serve a Detector deployed without a `user_config`.
    @serve.batch(max_batch_size=DEFAULT_BATCH.max_batch_size, batch_wait_timeout_s=DEFAULT_BATCH.batch_wait_timeout_s)
    async def detect(self, inputs: list[ModelInput]) -> list[Detections | FrameFailure]:
        """One forward pass for the batch. If a batch of several frames raises, each
        frame is run alone: a bad frame fails only itself (a `FrameFailure` in its
        place), never the other sessions' frames that shared its batch. A lone frame
        that raises fails its call, as any model error does."""
        started = time.perf_counter()
        # The forward pass runs off the replica's event loop so batching keeps
        # collecting the next frames meanwhile.
        try:
            results = await asyncio.to_thread(self._infer, inputs)
        except Exception as exc:
            if len(inputs) == 1:
                self._metrics.errors.inc()
                raise
            log.warning("batch of %d failed (%s: %s); retrying frame by frame",
                        len(inputs), type(exc).__name__, exc)
            results = await asyncio.to_thread(self._infer_each, inputs)
        elapsed = time.perf_counter() - started
        self._busy_s += elapsed
        self._metrics.latency.observe(elapsed)
        self._metrics.batch_size.observe(len(inputs))
        self._batch_sizes[len(inputs)] += 1
        self._frames += len(inputs)
        return results

    def _infer(self, inputs: list[ModelInput]) -> list[Detections]:
        results = self.backend.infer(inputs)
        if len(results) != len(inputs):
            raise RuntimeError(
                f"{self.backend.name} returned {len(results)} results for {len(inputs)} frames"
            )
        return results

    def _infer_each(self, inputs: list[ModelInput]) -> list[Detections | FrameFailure]:
        results: list[Detections | FrameFailure] = []
        for item in inputs:
            try:
                results.append(self._infer([item])[0])
            except Exception as exc:
                self._metrics.errors.inc()
                results.append(FrameFailure(f"{type(exc).__name__}: {exc}"))
        return results

    def stats(self) -> dict[str, Any]:
        """Batch-size histogram, live batch settings and work done by this replica
        (tests, benchmarks)."""
        return {
            "model": self.backend.name,
            **self._batch.user_config(),
            "frames": self._frames,
            "busy_s": round(self._busy_s, 4),
            "batch_sizes": dict(self._batch_sizes),
            **current_priority(),
        }
