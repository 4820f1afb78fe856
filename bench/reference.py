"""The `gradio_webrtc` 0.0.31 reference, in a virtualenv the bench creates and reuses.

`gradio_webrtc` works only with gradio <= 5.45 (its compiled frontend cannot load in
gradio 6), so it cannot share this project's environment. The venv lives outside the
work tree (default `~/.cache/rayrtc-bench/reference-venv`, or `$RAYRTC_BENCH_VENV`) and
gets, besides the reference, the same onnxruntime / onnx / OpenCV versions as the main
environment, so the reference runs the very same detector code at the same speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import httpx

from tests.support.ports import LOOPBACK, free_port

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "bench" / "reference_app.py"
DEFAULT_VENV = Path(os.environ.get("RAYRTC_BENCH_VENV", "~/.cache/rayrtc-bench/reference-venv")).expanduser()
REFERENCE_PACKAGES = ["gradio==5.45.0", "gradio_webrtc==0.0.31", "requests"]


class ReferenceUnavailable(RuntimeError):
    """The reference could not be installed or started; the message says why."""


def _version(dist: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def model_packages() -> list[str]:
    """The model runtime pinned to the main environment's versions."""
    pins = []
    for dist in ("onnxruntime", "onnx", "opencv-python-headless", "numpy"):
        v = _version(dist)
        pins.append(f"{dist}=={v}" if v else dist)
    return pins


def venv_python(venv: Path = DEFAULT_VENV) -> Path:
    return venv / "bin" / "python"


def _check(python: Path, wanted: list[str]) -> bool:
    code = (
        "import sys\nfrom importlib.metadata import version\n"
        "import gradio_webrtc, onnxruntime, cv2, onnx\n"
        "pins = sys.argv[1:]\n"
        "bad = [p for p in pins if '==' in p and version(p.split('==')[0]) != p.split('==')[1]]\n"
        "sys.exit(1 if bad else 0)\n"
    )
    try:
        return subprocess.run([str(python), "-c", code, *wanted], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_venv(venv: Path = DEFAULT_VENV, log=print) -> Path:
    """Create (or reuse) the reference venv; returns its python. Raises ReferenceUnavailable."""
    python = venv_python(venv)
    wanted = REFERENCE_PACKAGES + model_packages()
    if python.exists() and _check(python, wanted):
        return python
    log(f"reference: creating {venv} with {' '.join(wanted)} (a few minutes the first time)")
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        proc = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *wanted],
            capture_output=True, text=True, timeout=1200,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ReferenceUnavailable(f"could not create the reference venv at {venv}: {exc}") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ReferenceUnavailable(f"pip install {' '.join(wanted)} failed:\n{tail}")
    if not _check(python, wanted):
        raise ReferenceUnavailable("the reference venv installed but `import gradio_webrtc, onnxruntime, cv2` fails")
    return python


def discover(url: str, timeout: float = 10.0) -> dict:
    """component_id of the WebRTC component and fn_index of its `tick` event (from
    Gradio's /config), and the server's pid (from /bench/stats)."""
    with httpx.Client(timeout=timeout, trust_env=False) as http:
        config = http.get(url.rstrip("/") + "/config").json()
        stats = http.get(url.rstrip("/") + "/bench/stats").json()
    component_id = next(c["id"] for c in config["components"] if c.get("type") == "webrtc")
    tick = None
    for i, dep in enumerate(config["dependencies"]):
        targets = [tuple(t) for t in dep.get("targets", [])]
        if (component_id, "tick") in targets:
            tick = dep.get("id", i)
    if tick is None:
        raise ReferenceUnavailable("the reference's /config has no tick event on its WebRTC component")
    return {"component_id": component_id, "tick_fn_index": tick, "pid": stats["pid"], "model": stats.get("model")}


class ReferenceServer:
    """bench/reference_app.py running in the reference venv, on 127.0.0.1."""

    def __init__(self, python: Path, model: str, model_path: Optional[str] = None, log_path: Optional[Path] = None) -> None:
        self.python = python
        self.model = model
        self.model_path = model_path
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen] = None
        self.info: dict = {}

    def start(self, timeout: float = 120.0) -> dict:
        cmd = [str(self.python), str(APP), "--repo", str(ROOT), "--port", str(self.port), "--model", self.model]
        if self.model_path:
            cmd += ["--model-path", self.model_path]
        if self.log_path is None:
            import tempfile

            self.log_path = Path(tempfile.mkstemp(prefix="rayrtc-reference-", suffix=".log")[1])
        out = open(self.log_path, "w")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ReferenceUnavailable(
                    f"the reference server exited with {self.proc.returncode}; last lines of {self.log_path}:\n"
                    + self.log_tail()
                )
            try:
                self.info = discover(self.url)
                return self.info
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.5)
        self.stop()
        raise ReferenceUnavailable(
            f"the reference server did not come up in {timeout} s ({last}); log:\n" + self.log_tail()
        )

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except (OSError, TypeError):
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> "ReferenceServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
