"""The whole benchmark, one command: raw model speed, the `gradio_webrtc` reference and
our app on Ray Serve, side by side on this machine, then the report.

    python -m bench run                      # everything, ~15 min on 2 cores
    python -m bench run --models haar --max-sessions 3 --seconds 4 --out /tmp/b

Order, to keep them out of each other's way: raw models (no server), the reference
(one process per model, Ray not started yet), then Ray + our app per model, a
detector-only throughput check through a DeploymentHandle, and a batch-size sweep.
Writes results.json, results.md and PNG plots to `--out`, and replaces the generated
part of BENCHMARKS.md (between its `bench:begin`/`bench:end` markers).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import models_raw
from deployments.priority import inference_threads  # noqa: E402
from bench.loadgen import SCHEMA, ReferenceTarget, ServedTarget, StepOptions, bench_image, run_step, step_line  # noqa: E402
from bench.procs import loadavg  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results-committed"
DEFAULT_MODELS = ROOT.parent / "shared" / "models"
MODEL_FILES = {"fastestdet": "fastestdet.onnx", "yolox_nano": "yolox_nano.onnx"}

log = logging.getLogger("bench.sweep")


def say(msg: str) -> None:
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def model_spec_args(name: str, models_dir: Path) -> Optional[tuple[str, Optional[str]]]:
    """(AppArgs.model, model_path) for a bench model name; None if its weights are absent."""
    if name == "haar":
        return ("haar", None)
    path = models_dir / MODEL_FILES[name]
    return ("onnx", str(path)) if path.is_file() else None


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("ray", "gradio", "aiortc", "av", "onnxruntime", "opencv-python-headless", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def machine_info() -> dict:
    cpu_model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(),
    }


# ----------------------------------------------------------------------------- parts
def held_server(step: dict, opts: argparse.Namespace) -> bool:
    """A server-render step held: every session up, the slowest >= --min-fps and the
    pooled round-trip p95 < --p95-ms."""
    p95 = step["latency_ms"]["p95"]
    return (step["connected"] == step["sessions"] and (step["delivered_fps"]["min"] or 0) >= opts.min_fps
            and p95 is not None and p95 < opts.p95_ms)


def held_browser(step: dict, opts: argparse.Namespace) -> bool:
    """A browser-render step held: every session up, each with >= --browser-min-detections
    detections/s, slowest/fastest >= --min-fairness."""
    return (step["connected"] == step["sessions"]
            and (step["detections_per_s"]["min"] or 0) >= opts.browser_min_detections
            and (step["detections_fairness"] or 0) >= opts.min_fairness)


async def session_sweep(target, model: str, opts: argparse.Namespace, extra: dict, run: dict,
                        counts: list[int], go_on) -> None:
    """Steps at each of `counts` sessions into `run["steps"]` while `go_on(step)` says
    so (and every session connected); a step that fails outright ends the sweep with
    `run["error"]`."""
    for n in counts:
        try:
            step = await run_step(
                target,
                StepOptions(n, seconds=opts.seconds, warmup=opts.warmup, procs=opts.loadgen_procs,
                            extra={"model": model, **extra}),
            )
        except Exception as exc:
            run["error"] = f"step with {n} sessions failed: {type(exc).__name__}: {exc}"
            say(f"{target.kind} {model}: {run['error']}")
            return
        say(step_line(step))
        run["steps"].append(step)
        if step["connected"] < n or not go_on(step):
            return


async def overload_step(target, model: str, opts: argparse.Namespace, extra: dict, held: int) -> dict:
    """Twice the sessions that were held (at least 2), over a long window: does p95 stay
    bounded and flat, does every session still get frames and a fair share?"""
    n = max(2, 2 * held)
    step = await run_step(target, StepOptions(n, seconds=opts.overload_seconds, warmup=opts.warmup,
                                              procs=opts.loadgen_procs,
                                              extra={"model": model, "overload_of": held, **extra}))
    say("overload: " + step_line(step) + f", p95 by thirds {step['latency_p95_slices_ms']}")
    return step


def run_raw(models: list[str], opts: argparse.Namespace) -> dict:
    frame = models_raw.test_frame()
    rows, skipped = [], []
    for name, spec in models_raw.specs(opts.models_dir).items():
        if name not in models:
            continue
        if spec is None:
            skipped.append(name)
            continue
        say(f"raw: {name}")
        rows.append(models_raw.measure(name, spec, frame, opts.raw_seconds))
    return {"results": rows, "skipped": skipped, "machine": models_raw.machine()}


def run_reference(models: list[str], opts: argparse.Namespace) -> dict:
    from bench.reference import ReferenceServer, ReferenceUnavailable, ensure_venv

    out: dict[str, Any] = {"runs": [], "error": None}
    try:
        python = ensure_venv(log=say)
    except ReferenceUnavailable as exc:
        out["error"] = str(exc)
        say(f"reference unavailable: {exc}")
        return out
    for model in models:
        spec = model_spec_args(model, opts.models_dir)
        if spec is None:
            continue
        log_path = Path(opts.out) / f"reference-{model}.log" if opts.keep_logs else None
        server = ReferenceServer(python, spec[0], spec[1], log_path=log_path)
        run: dict[str, Any] = {"target": "reference", "model": model, "steps": [], "error": None}
        try:
            info = server.start()
            say(f"reference up: {model} at {server.url}")
            target = ReferenceTarget(server.url, info["pid"], info["component_id"], info["tick_fn_index"])
            # The reference never skips, so its lag grows without bound: it is swept on fps alone.
            asyncio.run(session_sweep(target, model, opts, {}, run, opts.session_counts,
                                      lambda st: (st["delivered_fps"]["min"] or 0) >= opts.min_fps))
        except Exception as exc:
            run["error"] = f"{type(exc).__name__}: {exc}"
            say(f"reference {model} failed: {run['error']}")
        finally:
            server.stop()
        out["runs"].append(run)
    return out


async def handle_throughput(app_name: str, model_args: tuple[str, Optional[str]], concurrency: int, seconds: float) -> dict:
    """Detector-only throughput: `concurrency` callers, one call in flight each (like
    sessions), preprocessed 640x480 frames, through a DeploymentHandle, no video."""
    from ray import serve

    from deployments.models import ModelSpec, build_preprocessor

    spec = ModelSpec(kind=model_args[0], path=model_args[1])
    item = build_preprocessor(spec)(bench_image())
    handle = serve.get_deployment_handle("Detector", app_name=app_name)
    await handle.detect.remote(item)  # warm
    done = 0
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    async def caller() -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            await handle.detect.remote(item)
            latencies.append(time.monotonic() - t0)
            done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.monotonic() - t0
    from bench.loadgen import percentiles_ms

    return {"concurrency": concurrency, "calls_per_s": round(done / elapsed, 2), "latency_ms": percentiles_ms(latencies)}


def browser_args(spec: tuple[str, Optional[str]], max_batch_size: int, replicas: Optional[int]):
    """AppArgs in browser render, or the reason this app cannot do it (issue 11 not in it)."""
    from bench import served

    try:
        return served.app_args(spec[0], spec[1], max_batch_size, replicas, render="browser"), None
    except Exception as exc:  # pydantic's "extra fields not permitted" when the app has no render
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


def run_served(models: list[str], opts: argparse.Namespace) -> dict:
    from bench import served

    out: dict[str, Any] = {"runs": [], "browser_runs": [], "handle": [], "batch_sweep": [], "raw_near": [],
                           "error": None, "browser_error": None, "config": {}}
    raw_specs = models_raw.specs(opts.models_dir)
    frame = models_raw.test_frame()
    say("starting Ray + Serve on 127.0.0.1")
    try:
        base = served.start_ray(opts.ray_cpus)
    except Exception as exc:
        out["error"] = f"could not start Ray: {exc}"
        return out
    try:
        app_name = "bench"
        defaults = served.app_args("haar", None, 8, None)
        out["config"] = {
            "stream_every": defaults.stream_every,
            "max_batch_size": defaults.max_batch_size,
            "batch_wait_timeout_s": defaults.batch_wait_timeout_s,
            "detector_replicas": f"{defaults.detector_min_replicas}..{defaults.detector_max_replicas} (autoscaled)",
            "detector_num_cpus": defaults.detector_num_cpus,
            "ray_num_cpus": opts.ray_cpus or os.cpu_count(),
        }
        _, out["browser_error"] = browser_args(("haar", None), defaults.max_batch_size, None)
        if out["browser_error"]:
            say(f"browser render not run: the app does not take render='browser' ({out['browser_error']})")
        for model in models:
            spec = model_spec_args(model, opts.models_dir)
            if spec is None:
                continue
            run: dict[str, Any] = {"target": "served", "render": "server", "model": model, "steps": [],
                                   "overload": None, "error": None}
            try:
                # Raw speed again, right before this model's served steps: the machine is
                # shared, so the ratio uses a ceiling measured under the same conditions.
                if raw_specs.get(model) is not None:
                    out["raw_near"].append(models_raw.measure(model, raw_specs[model], frame, opts.raw_seconds))
                    say(f"raw (again): {model}: batch 8 {out['raw_near'][-1]['batch8_fps']:.1f} fps")
                args = served.app_args(spec[0], spec[1], defaults.max_batch_size, None)
                url = served.deploy(base, app_name, "/bench", args)
                say(f"served up: {model} at {url}")
                target = ServedTarget(url, app_name, served.detector_stats_fn(app_name), admin_token=served.ADMIN_TOKEN,
                                      codec=served.loop_codec(args))
                # A short throwaway step: first calls, handles, autoscaler.
                asyncio.run(run_step(target, StepOptions(1, seconds=1.0, warmup=1.0)))
                extra = {"max_batch_size": args.max_batch_size}
                asyncio.run(session_sweep(target, model, opts, extra, run, opts.session_counts,
                                          lambda st: held_server(st, opts)))
                if opts.overload_seconds > 0:
                    held = max((st["sessions"] for st in run["steps"] if held_server(st, opts)), default=0)
                    run["overload"] = asyncio.run(overload_step(target, model, opts, extra, held))
                if opts.handle_seconds > 0:
                    h = asyncio.run(handle_throughput(app_name, spec, opts.handle_concurrency, opts.handle_seconds))
                    h.update(model=model, replicas=served.running_replicas(app_name), max_batch_size=args.max_batch_size)
                    say(f"handle: {model}: {h}")
                    out["handle"].append(h)
            except Exception as exc:
                run["error"] = f"{type(exc).__name__}: {exc}"
                say(f"served {model} failed: {run['error']}")
            out["runs"].append(run)
            if out["browser_error"] or not opts.browser_session_counts:
                continue
            brun: dict[str, Any] = {"target": "served", "render": "browser", "model": model, "steps": [], "error": None}
            try:
                args, _ = browser_args(spec, defaults.max_batch_size, None)
                url = served.deploy(base, app_name, "/bench", args)
                say(f"served up (browser render): {model} at {url}")
                target = ServedTarget(url, app_name, served.detector_stats_fn(app_name), render="browser",
                                      admin_token=served.ADMIN_TOKEN, codec=served.loop_codec(args))
                asyncio.run(run_step(target, StepOptions(1, seconds=1.0, warmup=1.0)))
                asyncio.run(session_sweep(target, model, opts, {"max_batch_size": args.max_batch_size}, brun,
                                          opts.browser_session_counts, lambda st: held_browser(st, opts)))
            except Exception as exc:
                brun["error"] = f"{type(exc).__name__}: {exc}"
                say(f"served {model} (browser render) failed: {brun['error']}")
            out["browser_runs"].append(brun)
        spec = model_spec_args(opts.batch_model, opts.models_dir) if opts.batch_sizes else None
        if spec and raw_specs.get(opts.batch_model) and opts.batch_model not in {r["backend"] for r in out["raw_near"]}:
            out["raw_near"].append(models_raw.measure(opts.batch_model, raw_specs[opts.batch_model], frame, opts.raw_seconds))
        if spec and raw_specs.get(opts.batch_model):
            # The ceiling on the cores the detector gets: its replica bounds the model's
            # threads to its num_cpus (deployments/priority.py), so the raw model is
            # timed with the same bound, beside the all-cores figure above.
            threads = inference_threads(defaults.detector_num_cpus)
            bounded = raw_specs[opts.batch_model].model_copy(update={"num_threads": threads})
            out["raw_detector_threads"] = {**models_raw.measure(opts.batch_model, bounded, frame, opts.raw_seconds),
                                           "threads": threads}
            say(f"raw ({threads} thread(s), as the detector replica): {opts.batch_model}: "
                f"batch 8 {out['raw_detector_threads']['batch8_fps']:.1f} fps")
        # Detector-bound: browser render when the app has it (no video to encode, so the
        # detector saturates first), else server render.
        render = "server" if out["browser_error"] else "browser"
        for size in opts.batch_sizes if spec else []:
            entry: dict[str, Any] = {"model": opts.batch_model, "max_batch_size": size, "replicas": 1, "render": render}
            try:
                if render == "browser":
                    args, _ = browser_args(spec, size, 1)
                else:
                    args = served.app_args(spec[0], spec[1], size, 1)
                url = served.deploy(base, app_name, "/bench", args)
                target = ServedTarget(url, app_name, served.detector_stats_fn(app_name), render=render,
                                      admin_token=served.ADMIN_TOKEN, codec=served.loop_codec(args))
                asyncio.run(run_step(target, StepOptions(1, seconds=1.0, warmup=1.0)))
                step = asyncio.run(run_step(target, StepOptions(
                    opts.batch_sessions, seconds=opts.seconds, warmup=opts.warmup, procs=opts.loadgen_procs,
                    extra={"model": opts.batch_model, "max_batch_size": size})))
                say(f"batch {size}: " + step_line(step))
                entry["step"] = step
                if opts.handle_seconds > 0:
                    entry["handle"] = asyncio.run(handle_throughput(app_name, spec, opts.handle_concurrency, opts.handle_seconds))
                    say(f"batch {size}: handle {entry['handle']}")
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
                say(f"batch {size} failed: {entry['error']}")
            out["batch_sweep"].append(entry)
    finally:
        try:
            served.stop_ray()
        except Exception:
            pass
    return out


# ----------------------------------------------------------------------------- main
def parse(argv: Optional[list[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="haar,fastestdet,yolox_nano", help="comma-separated; ONNX ones skip without weights")
    ap.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    ap.add_argument("--sessions", default="1,2,3,4,6,8,10,12",
                    help="session counts of the server-render and reference sweeps (each stops at the first step not held)")
    ap.add_argument("--browser-sessions", default="2,4,8,12,16,20,24",
                    help="session counts of the browser-render sweep ('' to skip)")
    ap.add_argument("--max-sessions", type=int, default=None, help="cap both session lists")
    ap.add_argument("--min-fps", type=float, default=15.0, help="held: the slowest session gets at least this fps")
    ap.add_argument("--p95-ms", type=float, default=250.0, help="held: round-trip p95 below this")
    ap.add_argument("--browser-min-detections", type=float, default=5.0,
                    help="browser render held: each session gets at least this many detections/s")
    ap.add_argument("--min-fairness", type=float, default=0.8, help="browser render held: slowest/fastest detections")
    ap.add_argument("--seconds", type=float, default=6.0, help="measured window per step")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--overload-seconds", type=float, default=30.0,
                    help="window of the overload step (2x the sessions held); 0 to skip")
    ap.add_argument("--raw-seconds", type=float, default=1.5)
    ap.add_argument("--batch-sizes", default="1,4,8", help="detector max_batch_size sweep ('' to skip)")
    ap.add_argument("--batch-model", default="fastestdet")
    ap.add_argument("--batch-sessions", type=int, default=16, help="sessions of the detector-bound batch-size steps (enough to saturate one replica)")
    ap.add_argument("--handle-seconds", type=float, default=4.0, help="detector-only throughput check (0 to skip)")
    ap.add_argument("--handle-concurrency", type=int, default=8)
    ap.add_argument("--ray-cpus", type=int, default=None)
    ap.add_argument("--loadgen-procs", type=int, default=0,
                    help="load-generator processes per step (0: one per 8 sessions, at most CPUs/2)")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--no-served", action="store_true")
    ap.add_argument("--keep-logs", action="store_true", help="keep the reference server's log in --out")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--benchmarks-md", default=str(ROOT / "BENCHMARKS.md"),
                    help="file whose generated section to replace ('' to skip)")
    opts = ap.parse_args(argv)
    opts.batch_sizes = [int(x) for x in opts.batch_sizes.split(",") if x.strip()]
    cap = opts.max_sessions or 10_000
    opts.session_counts = [n for n in (int(x) for x in opts.sessions.split(",") if x.strip()) if n <= cap]
    opts.browser_session_counts = [n for n in (int(x) for x in opts.browser_sessions.split(",") if x.strip()) if n <= cap]
    return opts


def main(argv: Optional[list[str]] = None) -> int:
    opts = parse(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from component.ice import IceConfig, claim_process_ice

    claim_process_ice(IceConfig(host_addresses=("127.0.0.1",)), owner="bench sweep")
    opts.out.mkdir(parents=True, exist_ok=True)
    models = [m.strip() for m in opts.models.split(",") if m.strip()]
    unknown = [m for m in models if m != "haar" and m not in MODEL_FILES]
    if unknown:
        raise SystemExit(f"unknown models: {unknown}")
    present = [m for m in models if model_spec_args(m, opts.models_dir) is not None]
    skipped = [m for m in models if m not in present]

    started = time.monotonic()
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m bench run " + " ".join(argv if argv is not None else sys.argv[2:]),
        "machine": machine_info(),
        "loadavg_before": loadavg(),
        "options": {
            "models": models, "skipped_models": skipped, "sessions": opts.session_counts,
            "browser_sessions": opts.browser_session_counts, "min_fps": opts.min_fps, "p95_ms": opts.p95_ms,
            "browser_min_detections": opts.browser_min_detections, "min_fairness": opts.min_fairness,
            "seconds": opts.seconds, "warmup": opts.warmup, "overload_seconds": opts.overload_seconds,
            "send_fps": 30, "frame": "640x480 astronaut + moving 112px patch + luma noise, pre-encoded VP8 loop",
            "batch_sizes": opts.batch_sizes, "batch_model": opts.batch_model,
            "batch_sessions": opts.batch_sessions,
        },
    }
    say(f"load before: {results['loadavg_before']}; models {present} (skipped: {skipped})")
    results["raw"] = run_raw(models, opts)
    results["reference"] = {"runs": [], "error": "skipped (--no-reference)"} if opts.no_reference else run_reference(present, opts)
    results["served"] = {"runs": [], "error": "skipped (--no-served)"} if opts.no_served else run_served(present, opts)
    results["loadavg_after"] = loadavg()
    results["duration_s"] = round(time.monotonic() - started, 1)

    from bench import report

    results["summary"] = report.summarize(results)
    (opts.out / "results.json").write_text(json.dumps(results, indent=1))
    plots = report.plots(results, opts.out)
    md = report.markdown(results, plots, opts.out)
    (opts.out / "results.md").write_text(md)
    if opts.benchmarks_md:
        target_md = Path(opts.benchmarks_md)
        rel = os.path.relpath(opts.out, target_md.parent)
        report.update_benchmarks(target_md, report.markdown(results, plots, opts.out, link_base=rel))
    say(f"done in {results['duration_s']} s; load after: {results['loadavg_after']}; wrote {opts.out}")
    print(report.headline(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
