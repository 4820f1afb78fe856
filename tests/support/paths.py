"""Where the repository and the shared model weights are."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Beside the checkout, read-only; tests that need weights skip when it is absent.
SHARED_MODELS = ROOT.parent / "shared" / "models"
