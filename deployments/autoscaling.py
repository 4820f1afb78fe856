"""Detector autoscaling on frames in flight, not calls.

Serve's default policy scales on ongoing requests. The ingress packs several
sessions' frames into one call (`deployments.frame_packer`), so under load a call
carries up to `max_batch_size` frames and the request count understates the work by
that factor. Each detector replica reports the frames it holds
(`Detector.record_autoscaling_stats`); this policy sizes the deployment so each replica
holds about `target_ongoing_requests` frames, which keeps that setting's meaning
(roughly: busy sessions per replica) whatever the packing.

Serve pickles this module by value into its controller, so it imports nothing beyond
the standard library. Serve applies `min/max_replicas`, the up/downscale delays and
factors around it.
"""

from __future__ import annotations

from typing import Any

FRAMES_IN_FLIGHT = "frames_in_flight"
POLICY = "deployments.autoscaling:frames_in_flight_policy"


def frames_in_flight_policy(ctx: Any) -> tuple[float, dict[str, Any]]:
    """Desired replicas = frames held (averaged over `look_back_period_s`) / target.

    Calls that did not report frames (a caller using `Detector.detect` directly, a
    replica whose first report has not arrived) still count, one frame per call:
    the larger of the two totals is used."""
    if ctx.current_num_replicas == 0:
        return ctx.target_num_replicas, {}
    reported = (ctx.aggregated_metrics or {}).get(FRAMES_IN_FLIGHT) or {}
    frames = max(float(sum(reported.values())), float(ctx.total_num_requests))
    return frames / ctx.config.get_target_ongoing_requests(), {}
