"""The benchmark instrument end to end, in a few seconds: the load generator against a
served app on the session's Ray (its own app name and route), then the report built
from what it measured. Numbers are not judged here, only that they exist and are sane."""

from __future__ import annotations

import json
import os
import time

import pytest

from bench import report
from bench.loadgen import SCHEMA, ServedTarget, StepOptions, run_step
from bench.procs import CpuMeter, cpu_seconds

STEP_KEYS = {
    "target", "sessions", "connected", "window_s", "sent_fps", "delivered_fps", "detections_per_s",
    "latency_ms", "not_returned", "skipped", "cpu", "media_cores_per_30fps_session", "detector",
    "drained", "failures", "per_session",
}
SESSION_KEYS = {
    "webrtc_id", "sent_fps", "delivered_fps", "latency_ms", "not_returned", "skipped", "detections_per_s",
}


@pytest.fixture(scope="module")
def bench_app(serve_instance):
    from ray import serve

    from bench import served

    args = served.app_args("haar", None, max_batch_size=4, replicas=1, detector_num_cpus=0.5)
    url = served.deploy(serve_instance, "bench_smoke", "/bench-smoke", args)
    yield url, served.detector_stats_fn("bench_smoke")
    serve.delete("bench_smoke")


def test_cpu_seconds_reads_this_process():
    t0 = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert t0 is not None and cpu_seconds(os.getpid()) >= t0
    meter = CpuMeter(extra={"me": [os.getpid()]})
    meter.start()
    cpu = meter.stop()
    assert cpu["cores"]["me"] >= 0 and cpu["processes"]["me"] == 1


async def test_loadgen_step_and_report(bench_app, tmp_path):
    url, detector_stats = bench_app
    target = ServedTarget(url, "bench_smoke", detector_stats)
    started = time.monotonic()
    step = await run_step(target, StepOptions(2, seconds=3.0, warmup=1.0, extra={"model": "haar"}))
    assert time.monotonic() - started < 60

    assert STEP_KEYS <= step.keys()
    assert step["connected"] == 2, step["failures"]
    assert step["delivered_fps"]["min"] > 0
    assert 0 < step["sent_fps"]["mean"] <= 45  # 30 fps paced; less only on a starved machine
    assert step["latency_ms"]["n"] > 0 and 0 < step["latency_ms"]["p50"] <= step["latency_ms"]["p95"] <= step["latency_ms"]["max"]
    assert step["detections_per_s"]["total"] > 0
    assert step["cpu"]["processes"]["ingress"] == 1, step["cpu"]
    assert step["cpu"]["cores"]["ingress"] > 0
    assert step["detector"] is not None and step["detector"]["frames_per_s"] > 0
    assert step["drained"]
    for s in step["per_session"]:
        assert SESSION_KEYS <= s.keys()
        assert s["latency_ms"]["n"] > 0 and s["detections_per_s"] > 0

    # The same through two load-generator processes (what bigger machines use by default).
    split = await run_step(target, StepOptions(2, seconds=2.0, warmup=0.5, procs=2, extra={"model": "haar"}))
    assert split["loadgen_procs"] == 2 and split["connected"] == 2, split["failures"]
    assert split["cpu"]["processes"]["loadgen"] == 3
    assert split["latency_ms"]["n"] > 0 and split["delivered_fps"]["min"] > 0
    assert {s["webrtc_id"] for s in split["per_session"]}.isdisjoint({s["webrtc_id"] for s in step["per_session"]})
    assert time.monotonic() - started < 90

    results = {
        "schema": SCHEMA,
        "started_at": "now",
        "command": "test",
        "duration_s": 0,
        "machine": {"cpus": 2, "cpu_model": "", "memory_gb": 1, "platform": "", "python": "", "versions": {}},
        "loadavg_before": [0, 0, 0],
        "loadavg_after": [0, 0, 0],
        "options": {"models": ["haar"], "skipped_models": [], "max_sessions": 2, "min_fps": 15.0,
                    "seconds": 3.0, "warmup": 1.0, "batch_sessions": 2},
        "raw": {"results": [], "skipped": []},
        "reference": {"runs": [], "error": "not run in tests"},
        "served": {"runs": [{"target": "served", "model": "haar", "steps": [step], "error": None}],
                   "handle": [], "batch_sweep": [], "config": {"stream_every": 0.05}},
    }
    results["summary"] = report.summarize(results)
    m = results["summary"]["models"]["haar"]
    assert m["served_peak_detections_per_s"] == step["detections_per_s"]["total"]
    assert m["ingress_cores_at"]["cores_per_session"] > 0
    json.dumps(results)  # serialisable as written by the sweep
    md = report.markdown(results, report.plots(results, tmp_path), tmp_path)
    assert "| served | 2 |" in md and "### Targets" in md
    bench_md = tmp_path / "BENCHMARKS.md"
    bench_md.write_text(f"# B\n\nhand-written\n\n{report.BEGIN}\nOLD-GENERATED\n{report.END}\n\nafter\n")
    report.update_benchmarks(bench_md, md)
    text = bench_md.read_text()
    assert "hand-written" in text and "after" in text and "OLD-GENERATED" not in text and "| served | 2 |" in text
