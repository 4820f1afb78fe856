"""Where the repository and the shared model weights are."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Beside the checkout, read-only; tests that need weights skip when it is absent.
SHARED_MODELS = ROOT.parent / "shared" / "models"


def load_example(name: str = "plain_gradio_demo"):
    """`examples/<name>.py` as a module (the examples are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
