"""bench/models_raw.py runs and reports every backend it can load (tiny time budget)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "models_raw.py"


def test_models_bench_raw_smoke(capsys, tmp_path):
    spec = importlib.util.spec_from_file_location("models_raw", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # an empty models folder: haar runs, the ONNX rows are reported as skipped
    assert mod.main(["--json", "--seconds", "0.05", "--models", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["backend"] for r in report["results"]] == ["haar"]
    assert report["skipped"] == ["fastestdet", "yolox_nano"]
    row = report["results"][0]
    assert row["batch1_ms_p50"] > 0 and row["batch8_fps"] > 0
    assert "| haar |" in mod.markdown(report["results"], report["skipped"], report["machine"])
