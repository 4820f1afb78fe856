"""What one measured window says about each session and about a step: fps, round trips,
detection messages, fairness, and whether lag grows within the window."""

from __future__ import annotations

from typing import Optional

import numpy as np


def percentiles(values_ms: list[float]) -> dict:
    if not values_ms:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    arr = np.asarray(values_ms, dtype=float)
    return {
        "p50": round(float(np.percentile(arr, 50)), 1),
        "p95": round(float(np.percentile(arr, 95)), 1),
        "max": round(float(arr.max()), 1),
        "n": int(arr.size),
    }


def percentiles_ms(values_s: list[float]) -> dict:
    """`percentiles` of values given in seconds, reported in ms."""
    return percentiles([v * 1e3 for v in values_s])


def spread(values: list[float]) -> dict:
    if not values:
        return {"min": None, "mean": None, "max": None}
    return {
        "min": round(float(min(values)), 2),
        "mean": round(float(np.mean(values)), 2),
        "max": round(float(max(values)), 2),
    }


def fairness(rates: list[Optional[float]]) -> Optional[float]:
    """Slowest / fastest of the sessions' rates (1.0: all equal)."""
    got = [r for r in rates if r is not None]
    if not got or max(got) <= 0:
        return None
    return round(min(got) / max(got), 3)


def p95_slices(points: list[tuple[float, float]], t0: float, t1: float, slices: int) -> list[Optional[float]]:
    """p95 (ms) of `points` ((time, value ms)) in each of `slices` equal parts of [t0, t1)."""
    width = (t1 - t0) / slices
    out: list[Optional[float]] = []
    for i in range(slices):
        lo, hi = t0 + i * width, t0 + (i + 1) * width
        values = [v for at, v in points if lo <= at < hi]
        out.append(round(float(np.percentile(values, 95)), 1) if values else None)
    return out


def growth(slices: list[Optional[float]]) -> Optional[float]:
    """Last slice's p95 minus the first's: > 0 when lag builds up inside the window."""
    if len(slices) < 2 or slices[0] is None or slices[-1] is None:
        return None
    return round(slices[-1] - slices[0], 1)


def seq_gaps(seqs: list[int]) -> tuple[int, int]:
    """(numbers missing between consecutive seqs, seqs that did not increase)."""
    missing = backwards = 0
    for prev, cur in zip(seqs, seqs[1:]):
        if cur <= prev:
            backwards += 1
        else:
            missing += cur - prev - 1
    return missing, backwards


def session_window(client, t0: float, t1: float) -> dict:
    """One session's numbers over [t0, t1). `client` is a bench.clients.BenchClient.

    The keys starting with `_` carry (time, ms) points for the step's pooled figures
    and are removed before the step is recorded."""
    window = max(t1 - t0, 1e-6)
    sent = [index for index, _, at in client.track.log.sends if t0 <= at < t1]
    recv = [(at, index, lat) for at, index, lat in client.recv_log if t0 <= at < t1]
    matched = [(at, index, lat) for at, index, lat in recv if index is not None]
    # Frames skipped on the way (newest-frame-wins): sends between the first and the
    # last one returned in the window that never came back.
    skipped = 0
    if matched:
        returned = {index for _, index, _ in matched}
        lo, hi = min(returned), max(returned)
        skipped = sum(1 for i in range(lo, hi + 1) if i not in returned)
    dets = [(at, seq, age, n) for at, seq, age, n in client.detections_log if t0 <= at < t1]
    missing, backwards = seq_gaps([seq for _, seq, _, _ in dets])
    out = {
        "webrtc_id": client.webrtc_id,
        "render": client.render,
        "codec": client.answer_codec,
        "sent_fps": round(len(sent) / window, 2),
        "delivered_fps": round(len(recv) / window, 2),
        "latency_ms": percentiles([lat * 1e3 for _, _, lat in matched]),
        # Sent in the window minus returned in the window: skipped or still queued.
        "not_returned": max(0, len(sent) - len(recv)) if client.render == "server" else None,
        "skipped": skipped,
        "unreadable_ids": sum(1 for _, index, _ in recv if index is None),
        "keyframe_requests": client.track.keyframe_requests,
        "loadgen_queued_frames": _queued(client, t0, t1),
        "error": client.error,
        "_latencies": [(at, lat * 1e3) for at, _, lat in matched],
    }
    if client.render == "browser":
        out.update(
            detection_messages_per_s=round(len(dets) / window, 2),
            age_ms=percentiles([age for _, _, age, _ in dets]),
            seq_missing=missing,
            seq_backwards=backwards,
            malformed=sum(1 for at in client.malformed_log if t0 <= at < t1),
            items_mean=round(float(np.mean([n for *_, n in dets])), 2) if dets else None,
            _ages=[(at, age) for at, _, age, _ in dets],
        )
    return out


def _queued(client, t0: float, t1: float) -> Optional[dict]:
    """Frames waiting inside this load generator (decoded + still encoded), mean and max."""
    qs = [d + e for at, d, e in client.queue_log if t0 <= at < t1 and d >= 0 and e >= 0]
    if not qs:
        return None
    return {"mean": round(float(np.mean(qs)), 1), "max": int(max(qs))}
