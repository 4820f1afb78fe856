"""What a running stream fn may know about the session that called it.

Inside a stream fn (an async fn on the loop, or a sync fn in its worker thread),
`current_stream()` returns the calling session's `StreamContext`; outside one it returns
None. Why a context variable and not another fn argument: `webrtc_stream(fn, inputs=...)`
fixes the fn's arguments to the frame and the Gradio inputs (the reference's signature),
and most fns never need this. The Serve ingress reads it to tag each frame with the
session's queue key (`component.fair_order`), so the detector serves the sessions in a
fair order (`deployments.fair_batch`).
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Optional

from component.fair_order import FairOrder


class StreamContext:
    """The calling session, as its stream fn sees it.

    `last_answer_at`: wall-clock time (`time.time()`) when the session's previous fn
    call ended, or when the session started. `queue_key`: this call's place in a
    shared model's queue, lower first, in wall-clock seconds (comparable across
    processes; see `component.fair_order`), taken when the scheduler decided to make
    the call, before the frame's conversion: time the server then spends before the
    fn runs (its worker threads are busy encoding video under overload) does not
    move the session back in line. The scheduler calls `start`, `call` before every
    fn call, `answered` after it, and `stop`; the session is in the server's
    `FairOrder` (when it has one) between `start` and `stop`."""

    __slots__ = ("session_id", "last_answer_at", "queue_key", "_order")

    def __init__(self, session_id: str, order: Optional[FairOrder] = None) -> None:
        self.session_id = session_id
        self.last_answer_at = self.queue_key = time.time()
        self._order = order

    def start(self) -> None:
        if self._order is not None:
            self._order.add(self.session_id)

    def stop(self) -> None:
        if self._order is not None:
            self._order.forget(self.session_id)

    def answered(self) -> None:
        self.last_answer_at = time.time()
        if self._order is not None:
            self._order.answered(self.session_id)

    def call(self) -> None:
        """A fn call starts: take its queue key (without a server's order: now)."""
        self.queue_key = time.time() if self._order is None else self._order.key(self.session_id)


_current: ContextVar[Optional[StreamContext]] = ContextVar("rayrtc_stream_context", default=None)


def current_stream() -> Optional[StreamContext]:
    """The session whose stream fn is running, or None outside a stream fn."""
    return _current.get()


def enter_stream(context: StreamContext) -> None:
    """Make `context` current for the calling task (the session's scheduler task) and
    whatever it awaits or copies its context into."""
    _current.set(context)
