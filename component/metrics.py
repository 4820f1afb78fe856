"""Hooks the media path calls so a host can count what happens.

The component itself stays free of any metrics backend (it runs in a plain Gradio app
too); the Serve ingress plugs in Ray Serve's metrics (see `deployments/metrics.py`).
Every hook is called on the media event loop and must be cheap and non-blocking.
"""

from __future__ import annotations


class StreamMetrics:
    """No-op base: override what you export."""

    def offer_accepted(self) -> None: ...

    def offer_rejected(self, code: str) -> None: ...

    def sessions_active(self, count: int) -> None: ...

    def session_closed(self, reason: str) -> None: ...

    def frames_in(self, count: int = 1) -> None: ...

    def frames_out(self, count: int = 1) -> None: ...

    def frames_dropped(self, count: int) -> None: ...

    def fn_call(self, latency_s: float, ok: bool) -> None: ...
