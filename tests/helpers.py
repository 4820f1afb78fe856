"""Shared test utilities: paths, images and condition waits (never bare sleeps)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_MODELS = ROOT.parent / "shared" / "models"
LOOPBACK = "127.0.0.1"

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def photo(name: str) -> np.ndarray:
    """A scikit-image bundled photo as BGR (astronaut: a face/person, chelsea: cat, coffee: cup)."""
    import skimage.data

    return cv2.cvtColor(getattr(skimage.data, name)(), cv2.COLOR_RGB2BGR)


def green_mask(image_bgr: np.ndarray) -> np.ndarray:
    """Pixels of the annotation colour, with room for video compression."""
    b, g, r = (image_bgr[..., i].astype(int) for i in range(3))
    return (g > 170) & (r < 110) & (b < 110)


async def wait_for(
    check: Callable[[], Awaitable[T] | T], timeout: float, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


# Every test app is deployed with this admin token, so tests can read per-session
# detail from `GET /webrtc/sessions` (the public `/webrtc/stats` has counts only).
ADMIN_TOKEN = "test-admin-token"
ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN_TOKEN}"}


async def admin_stats(base_url: str, headers: dict | None = None) -> dict:
    """Per-session detail and the process snapshot of the replica that answers."""
    import httpx

    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        resp = await http.get(f"{base_url}/webrtc/sessions", headers={**(headers or {}), **ADMIN_HEADERS})
    resp.raise_for_status()
    return resp.json()


async def session_stats(base_url: str, webrtc_id: str) -> dict | None:
    """One session's entry in `admin_stats`, or None once it is gone."""
    body = await admin_stats(base_url)
    return next((s for s in body["sessions"] if s["webrtc_id"] == webrtc_id), None)
