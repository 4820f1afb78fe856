"""The detector deployment: one batch queue per replica, fed by every session of every
ingress replica, so frames from different browsers share one forward pass. The queue
(`deployments.fair_batch`) takes the least-served sessions' frames first."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from ray import serve

from deployments.autoscaling import FRAMES_IN_FLIGHT
from deployments.batch_config import DEFAULT_BATCH, BatchConfig
from deployments.fair_batch import FairBatchQueue
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
        self._queue: FairBatchQueue[ModelInput, Detections | FrameFailure] = FairBatchQueue(
            self._detect_batch, self._frames_per_pass(DEFAULT_BATCH), DEFAULT_BATCH.batch_wait_timeout_s
        )
        self._batch_sizes: Counter[int] = Counter()
        self._frames = 0
        self._busy_s = 0.0
        # CPU seconds of the forward passes themselves (the worker thread's own clock):
        # against the process's CPU this splits the replica's cost into model and
        # serving overhead, and against `_busy_s` shows time lost waiting for a core.
        self._forward_cpu_s = 0.0
        # Frames received and not yet answered: what the autoscaler scales on
        # (`record_autoscaling_stats`, `deployments.autoscaling`).
        self._in_flight = 0
        self._packs: Counter[int] = Counter()
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
        self._queue.configure(self._frames_per_pass(batch), batch.batch_wait_timeout_s)
        self._batch = batch
        log.info("detector batching: max_batch_size=%d, batch_wait_timeout_s=%g",
                 batch.max_batch_size, batch.batch_wait_timeout_s)

    def _frames_per_pass(self, batch: BatchConfig) -> int:
        """`max_batch_size`, or 1 for a backend that runs frames one by one."""
        return batch.max_batch_size if self.backend.batched else 1

    async def detect(self, model_input: ModelInput) -> Detections | FrameFailure:
        """One frame, batched with whatever else is queued (its `priority` orders it).
        A frame that failed inside a batch of several is a `FrameFailure`; a lone
        frame's model error is raised."""
        return await self._queue.submit(model_input, model_input.priority)

    async def _detect_batch(self, inputs: list[ModelInput]) -> list[Detections | FrameFailure]:
        """One forward pass for the batch. If a batch of several frames raises, each
        frame is run alone: a bad frame fails only itself (a `FrameFailure` in its
        place), never the other sessions' frames that shared its batch. A lone frame
        that raises fails its caller, as any model error does."""
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

    async def detect_pack(self, inputs: list[ModelInput]) -> list[Detections | FrameFailure]:
        """Several sessions' frames sent as one call (`deployments.frame_packer`): one
        call's fixed cost instead of one per frame. Each frame joins the batch queue
        on its own, so batches still form across packs and callers, and each gets
        its own answer: a frame that fails is a `FrameFailure` in its place."""
        self._packs[len(inputs)] += 1
        self._in_flight += len(inputs)
        try:
            answers = await asyncio.gather(*(self.detect(item) for item in inputs), return_exceptions=True)
        finally:
            self._in_flight -= len(inputs)
        results: list[Detections | FrameFailure] = []
        for answer in answers:
            if isinstance(answer, asyncio.CancelledError):
                raise answer
            if isinstance(answer, BaseException):
                results.append(FrameFailure(f"{type(answer).__name__}: {answer}"))
            else:
                results.append(answer)
        return results

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's custom autoscaling metric: frames in this replica, not calls (a
        pack of eight frames is one call). See `deployments.autoscaling`."""
        return {FRAMES_IN_FLIGHT: float(self._in_flight)}

    def _infer(self, inputs: list[ModelInput]) -> list[Detections]:
        started = time.thread_time()
        try:
            results = self.backend.infer(inputs)
        finally:
            self._forward_cpu_s += time.thread_time() - started
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
            "frames_per_pass": self._queue.max_batch_size,
            "frames": self._frames,
            "busy_s": round(self._busy_s, 4),
            "forward_cpu_s": round(self._forward_cpu_s, 4),
            "batch_sizes": dict(self._batch_sizes),
            "pack_sizes": dict(self._packs),
            **current_priority(),
        }
