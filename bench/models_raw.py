"""Raw model throughput on this machine, no serving: the ceiling the served numbers
are compared against.

For each backend (haar, fastestdet, yolox_nano) it times, on a 640x480 photo:
preprocess per frame, `infer` of a batch of 1 (latency) and `infer` of a batch of 8
(throughput). Each measurement stops after `--seconds` (default 1.5 s), so a run
takes a few seconds per model. Prints a Markdown table, or JSON with `--json`.

`--gpu` runs the ONNX backends on onnxruntime's CUDA provider (`num_gpus=1`, as a GPU
detector replica does; the row's provider column says what it really got) and
`--batches 1,8,32` adds throughput at other batch sizes: on a GPU batching is where the
throughput comes from (on an H200, FastestDet ran 3.2x as many frames a second at batch 8
as at batch 1, and fewer again past 8; BENCHMARKS.md, "GPU").

    python bench/models_raw.py [--json] [--seconds 1.5] [--models ../shared/models]
    python bench/models_raw.py --gpu --only fastestdet yolox_nano --batches 1,8,32,64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployments.models import ModelSpec, build_preprocessor, load_backend  # noqa: E402

DEFAULT_MODELS = ROOT.parent / "shared" / "models"


def test_frame() -> np.ndarray:
    """skimage's astronaut at 640x480 (a face and a person), else a fixed noise frame."""
    import cv2

    try:
        from skimage import data

        img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
        return cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA)
    except ImportError:
        return np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def timed(fn: Callable[[], object], seconds: float, warmup: int = 2, max_runs: int = 500) -> list[float]:
    """Wall-clock seconds of each call, after `warmup` untimed calls, within a budget."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q))


def measure(name: str, spec: ModelSpec, frame: np.ndarray, seconds: float,
            batches: tuple[int, ...] = ()) -> dict:
    import cv2

    pre = build_preprocessor(spec)
    cv2_threads = cv2.getNumThreads()
    try:
        return _measure(name, spec, pre, frame, seconds, batches)
    finally:
        cv2.setNumThreads(cv2_threads)  # a spec's num_threads bounds OpenCV process-wide


def _measure(name: str, spec: ModelSpec, pre: Callable, frame: np.ndarray, seconds: float,
             batches: tuple[int, ...] = ()) -> dict:
    backend = load_backend(spec)
    pre_t = timed(lambda: pre(frame), seconds / 4)
    item = pre(frame)
    one = timed(lambda: backend.infer([item]), seconds)
    eight = timed(lambda: backend.infer([item] * 8), seconds)
    more = {n: timed(lambda n=n: backend.infer([item] * n), seconds) for n in batches}
    return {
        "backend": name,
        "model": backend.name,
        "provider": getattr(backend, "provider", "OpenCV CPU"),
        "batched_forward": bool(getattr(backend, "batched", False)),
        "preprocess_ms_p50": 1e3 * statistics.median(pre_t),
        "batch1_ms_p50": 1e3 * statistics.median(one),
        "batch1_ms_p90": 1e3 * pct(one, 90),
        "batch1_fps": 1.0 / statistics.median(one),
        "batch8_ms_p50": 1e3 * statistics.median(eight),
        "batch8_fps": 8.0 / statistics.median(eight),
        "detections": len(backend.infer([item])[0]),
        "runs": {"batch1": len(one), "batch8": len(eight)},
        "threads": spec.num_threads,
        "num_gpus": spec.num_gpus,
        "batch_fps": {str(n): n / statistics.median(t) for n, t in more.items()},
        "batch_ms_p50": {str(n): 1e3 * statistics.median(t) for n, t in more.items()},
    }


def specs(models: Path, num_gpus: float = 0.0) -> dict[str, Optional[ModelSpec]]:
    out: dict[str, Optional[ModelSpec]] = {"haar": ModelSpec(kind="haar")}
    for name, file in (("fastestdet", "fastestdet.onnx"), ("yolox_nano", "yolox_nano.onnx")):
        path = models / file
        out[name] = ModelSpec(kind="onnx", path=str(path), num_gpus=num_gpus) if path.is_file() else None
    return out


def machine() -> dict:
    import cv2
    import onnxruntime as ort

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "opencv": cv2.__version__,
        "ort_providers": ort.get_available_providers(),
    }


def markdown(rows: list[dict], skipped: list[str], info: dict) -> str:
    lines = [
        f"Raw model speed, no serving: {info['cpus']} CPUs, onnxruntime {info['onnxruntime']}, "
        f"OpenCV {info['opencv']}, 640x480 input.",
        "",
        "| backend | provider | batched forward | preprocess ms | batch 1 ms p50 (p90) | batch 1 fps | batch 8 fps | batch 8 gain |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['provider']} | {'yes' if r['batched_forward'] else 'no (frame by frame)'} "
            f"| {r['preprocess_ms_p50']:.2f} | {r['batch1_ms_p50']:.1f} ({r['batch1_ms_p90']:.1f}) "
            f"| {r['batch1_fps']:.0f} | {r['batch8_fps']:.0f} | {r['batch8_fps'] / r['batch1_fps']:.2f}x |"
        )
    lines += [f"| {name} | skipped: weights not found | | | | | | |" for name in skipped]
    more = sorted({int(n) for r in rows for n in r.get("batch_fps", {})})
    if more:
        lines += ["", "| backend | provider | " + " | ".join(f"batch {n} fps (ms)" for n in more) + " |",
                  "|---|---|" + "---:|" * len(more)]
        for r in rows:
            cells = [f"{r['batch_fps'][str(n)]:.0f} ({r['batch_ms_p50'][str(n)]:.1f})" if str(n) in r["batch_fps"]
                     else "" for n in more]
            lines.append(f"| {r['backend']} | {r['provider']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    ap.add_argument("--seconds", type=float, default=1.5, help="time budget per measurement")
    ap.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="folder with the ONNX weights")
    ap.add_argument("--only", nargs="*", help="backends to run (haar fastestdet yolox_nano)")
    ap.add_argument("--gpu", action="store_true", help="ONNX backends on the CUDA provider (num_gpus=1)")
    ap.add_argument("--batches", default="", help="extra batch sizes to time, e.g. 1,8,32")
    args = ap.parse_args(argv)
    batches = tuple(int(n) for n in args.batches.split(",") if n.strip())

    frame = test_frame()
    rows, skipped = [], []
    for name, spec in specs(args.models, 1.0 if args.gpu else 0.0).items():
        if args.only and name not in args.only:
            continue
        if spec is None:
            skipped.append(name)
            continue
        rows.append(measure(name, spec, frame, args.seconds, batches))
    info = machine()
    if args.json:
        print(json.dumps({"machine": info, "results": rows, "skipped": skipped}, indent=2))
    else:
        print(markdown(rows, skipped, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
