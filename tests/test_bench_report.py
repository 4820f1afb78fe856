"""The bench report's judging rules, on the committed run's raw data (no bench run)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.report import FULL_RATE_FPS, summarize

COMMITTED = Path(__file__).resolve().parent.parent / "bench" / "results-committed" / "results.json"


def test_ingress_cost_is_judged_at_the_most_sessions_still_at_full_rate():
    """Not at whichever step's fps jittered highest: among the steps that got the
    camera's rate back, the one with the most sessions (their fixed cost shared)."""
    results = json.loads(COMMITTED.read_text())
    summary = summarize(results)
    judged = 0
    for run in results["served"]["runs"]:
        full = [s for s in run["steps"] if (s["delivered_fps"]["mean"] or 0) >= FULL_RATE_FPS]
        if not full:
            continue
        at = summary["models"][run["model"]]["ingress_cores_at"]
        most = max(full, key=lambda s: s["sessions"])
        assert at["sessions"] == most["sessions"], (run["model"], at)
        assert summary["models"][run["model"]]["ingress_cores_per_30fps_session_1"] == most["media_cores_per_30fps_session"]
        judged += 1
    assert judged >= 1
