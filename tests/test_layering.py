"""Each layer imports only what it needs: the detector side never loads the web stack.

A detector replica (and anyone using the model backends alone) must not import Gradio,
aiortc or PyAV: they cost seconds and memory per replica and tie the models to the
browser-facing packages. FastAPI is fine (Ray Serve brings it). Checked in a fresh
interpreter, since this test process has long since imported everything.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import component

ROOT = Path(__file__).resolve().parents[1]

# Top-level packages of the web stack: Gradio, aiortc (and its ICE/SRTP layers), PyAV.
WEB_STACK = ("gradio", "gradio_client", "aiortc", "aioice", "pylibsrtp", "av")

# Imports the named modules and, if asked, every module under deployments/models/
# (found with pkgutil, so a new backend is covered without editing this test), then
# prints which web-stack packages ended up in sys.modules.
PROBE = """
import importlib, json, pkgutil, sys
for name in {modules!r}:
    importlib.import_module(name)
backends = []
if {with_backends!r}:
    import deployments.models as models
    backends = [m.name for m in pkgutil.iter_modules(models.__path__, models.__name__ + ".")]
    for name in backends:
        importlib.import_module(name)
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({web!r}))
print(json.dumps({{"backends": backends, "loaded": loaded}}))
"""


def _probe(*modules: str, with_backends: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = PROBE.format(modules=list(modules), with_backends=with_backends, web=WEB_STACK)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_detector_and_model_backends_do_not_import_the_web_stack():
    found = _probe("deployments.detector", with_backends=True)
    # The discovery really walked the backends (an empty walk would pass vacuously).
    assert {"deployments.models.base", "deployments.models.haar", "deployments.models.onnx"} <= set(found["backends"])
    assert found["loaded"] == [], f"detector side imported {found['loaded']}"


# The value types a stream fn returns, and the box drawing the bench's reference app
# (a Gradio 5 venv) loads from this repo beside the model backends.
@pytest.mark.parametrize("module", ["component.detections", "component.annotate"])
def test_component_value_modules_alone_stay_clean(module: str):
    found = _probe(module)
    assert found["loaded"] == [], f"`import {module}` imported {found['loaded']}"


def test_lazy_exports_match_all_and_type_checking_imports():
    """`__all__`, the lazy name table and the imports type checkers read list the same
    names from the same modules, and every name resolves."""
    assert set(component.__all__) == set(component._EXPORTS)
    tree = ast.parse(Path(component.__file__).read_text())
    guarded = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    seen = {alias.name: node.module for node in guarded.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert seen == component._EXPORTS
    for name in component.__all__:
        assert getattr(component, name) is not None
