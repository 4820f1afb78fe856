"""How often Gradio's event queue polls when it has nothing to do.

Gradio 6's `Queue` (gradio/queueing.py) runs two loops on the app's event loop: one
checks for queued events every 1 ms while idle (`sleep_when_free`), the other for
progress updates every 10 ms (`progress_update_sleep_when_free`). In the ingress that
event loop also carries every session's media, so an idle replica wakes 1,100 times a
second and spent 0.04 core of its 0.066 idle core there (per-thread CPU of a live
replica, 10 s). The WebRTC path never goes through that queue (offers arrive on
`component_server` or `/webrtc/offer`, the page relays the stream's inputs in its own
JS), so the host may let it poll slower: queued events of the app's other components
then start up to `idle_poll_s` later.

This is the host's choice (the Serve ingress makes it; a plain Gradio app may), applied
to one `Blocks`. `Blocks.queue(...)` builds a new `Queue` with Gradio's defaults: call
this after it. Relies on the two attributes above (tests/test_gradio_queue.py fails if
a Gradio upgrade renames them).
"""

from __future__ import annotations

from typing import Any

# Idle polls: queued events wait at most this long to start.
IDLE_POLL_S = 0.02
# Progress updates of running events are forwarded this often.
PROGRESS_POLL_S = 0.1

_ATTRS = ("sleep_when_free", "progress_update_sleep_when_free")


def slow_idle_polling(demo: Any, idle_poll_s: float = IDLE_POLL_S, progress_poll_s: float = PROGRESS_POLL_S) -> None:
    """Make `demo`'s Gradio queue poll every `idle_poll_s` while idle (Gradio: 1 ms)
    and forward progress every `progress_poll_s` (Gradio: 10 ms)."""
    if idle_poll_s <= 0 or progress_poll_s <= 0:
        raise ValueError("poll intervals must be > 0")
    queue = getattr(demo, "_queue", None)
    missing = [a for a in _ATTRS if not isinstance(getattr(queue, a, None), (int, float))]
    if missing:
        raise RuntimeError(
            f"Gradio's Queue has no {', '.join(missing)} (a Gradio upgrade?): "
            "component/gradio_queue.py must follow it"
        )
    queue.sleep_when_free = idle_poll_s
    queue.progress_update_sleep_when_free = progress_poll_s
