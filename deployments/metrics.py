"""Prometheus metrics through Ray Serve's metrics API (exported by each Ray node's
metrics agent, scraped by Prometheus, graphed in Ray's dashboard/Grafana).

Names start with `rayrtc_`; Ray prefixes them with `ray_` on export.
"""

from __future__ import annotations

import time

from ray.serve import metrics

from component.metrics import StreamMetrics

LATENCY_BOUNDS_S = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
BATCH_BOUNDS = [1, 2, 4, 8, 16, 32, 64]


# Per-frame counts reach Ray at most this often: recording one costs tens of
# microseconds on the media loop, at every frame of every session (about 2 % of a
# browser-render ingress at 16 sessions, py-spy), and Ray exports every 10 s anyway.
FLUSH_INTERVAL_S = 1.0


class _PendingCount:
    """A Ray counter fed in batches: counts add up locally and go out when the last
    flush is `FLUSH_INTERVAL_S` old (the first one at once), or on `flush()`."""

    __slots__ = ("_counter", "_pending", "_flushed_at")

    def __init__(self, counter: metrics.Counter) -> None:
        self._counter, self._pending, self._flushed_at = counter, 0, float("-inf")

    def add(self, count: int) -> None:
        self._pending += count
        now = time.monotonic()
        if now - self._flushed_at >= FLUSH_INTERVAL_S:
            self._flushed_at = now
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._counter.inc(self._pending)
            self._pending = 0


class ServeStreamMetrics(StreamMetrics):
    """The ingress's sessions, frames and offers."""

    def __init__(self) -> None:
        self._active = metrics.Gauge("rayrtc_sessions_active", description="Sessions held by this ingress replica.")
        self._offers = metrics.Counter(
            "rayrtc_offers_total", description="Offers answered, by result.", tag_keys=("result",)
        )
        self._closed = metrics.Counter(
            "rayrtc_sessions_closed_total", description="Sessions ended, by reason.", tag_keys=("reason",)
        )
        self._in = _PendingCount(metrics.Counter("rayrtc_frames_in_total", description="Camera frames received."))
        self._out = _PendingCount(
            metrics.Counter("rayrtc_frames_out_total", description="Frames sent back to browsers.")
        )
        self._dropped = _PendingCount(metrics.Counter(
            "rayrtc_frames_dropped_total",
            description="Camera frames skipped because a newer one arrived while the detector was busy.",
        ))
        self._calls = metrics.Counter(
            "rayrtc_fn_calls_total", description="Stream fn (detector round trip) calls.", tag_keys=("ok",)
        )
        self._latency = metrics.Histogram(
            "rayrtc_fn_latency_seconds",
            description="Frame decoded to detections back (preprocess + queue + batch + forward).",
            boundaries=LATENCY_BOUNDS_S,
        )

    def offer_accepted(self) -> None:
        self._offers.inc(tags={"result": "accepted"})

    def offer_rejected(self, code: str) -> None:
        self._offers.inc(tags={"result": code})

    def sessions_active(self, count: int) -> None:
        self._active.set(count)

    def session_closed(self, reason: str) -> None:
        self._closed.inc(tags={"reason": reason})
        for pending in (self._in, self._out, self._dropped):  # totals complete when a session ends
            pending.flush()

    def frames_in(self, count: int = 1) -> None:
        self._in.add(count)

    def frames_out(self, count: int = 1) -> None:
        self._out.add(count)

    def frames_dropped(self, count: int) -> None:
        self._dropped.add(count)

    def fn_call(self, latency_s: float, ok: bool) -> None:
        self._calls.inc(tags={"ok": "true" if ok else "false"})
        if ok:
            self._latency.observe(latency_s)


class DetectorMetrics:
    """Batch sizes and forward latency of one detector replica."""

    def __init__(self) -> None:
        self.batch_size = metrics.Histogram(
            "rayrtc_detector_batch_size", description="Frames per detector forward pass.", boundaries=BATCH_BOUNDS
        )
        self.latency = metrics.Histogram(
            "rayrtc_detector_forward_seconds", description="Detector forward pass time per batch.",
            boundaries=LATENCY_BOUNDS_S,
        )
        self.errors = metrics.Counter("rayrtc_detector_errors_total", description="Frames the detector could not process (after their batch raised, each frame is retried alone).")
