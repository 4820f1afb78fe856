"""The page uploads only the frames the server can use.

In browser render the picture the user watches is the local camera; the upload only
feeds the detector. Every uploaded frame still costs the server its SRTP, RTP and VP8
decode, whether or not the scheduler ever hands it to the fn (newest frame wins). At
30 fps in and a few detections per second out, most of that work is thrown away, and
it is most of what a browser-render session costs the server.

So the server tells the page how many frames per second are worth sending, on the
session's data channel:

    {"type": "upload_cap", "max_fps": <float>}

and the page caps its video sender there (`RTCRtpSender.setParameters`:
`maxFramerate`, and `maxBitrate` in proportion, so each frame keeps its bits). A client
that ignores the message loses nothing: the server keeps the newest frame as before.

The rule (`UploadRate.update`, once a second): when the fn takes nearly every frame
that arrives, the upload is what limits detections, so the cap rises by a step; when
it takes fewer, the cap follows the rate it does take, with headroom, so a frame is
always waiting when the fn is ready. Under overload every session's cap falls with its
share of the detector, and the server's receive work with it.

Server render uses the same rule with "taken" meaning the frames that went back out
(`UploadRate.returned_video`): under overload the page sends what the ingress can
return, not frames it would drop after paying for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

# The page's camera rate we assume until told otherwise, and the most we ever ask for.
MAX_UPLOAD_FPS = 30.0
# Never below: keyframe recovery and a fresh first frame after a pause stay quick.
MIN_UPLOAD_FPS = 5.0
# Cap = this many frames per frame the fn takes: one is always waiting for it.
HEADROOM = 1.5
# When the upload is the limit (the fn took at least this share of arrivals)...
UPLOAD_BOUND_SHARE = 0.8
# ...the cap rises by this factor per update.
STEP_UP = 1.25
# A new cap is sent only when it differs from the last one sent by this fraction (or
# reaches a bound).
MIN_CHANGE = 0.1
# Seconds between updates.
UPDATE_PERIOD_S = 1.0


def upload_message(max_fps: float) -> dict[str, Any]:
    return {"type": "upload_cap", "max_fps": round(max_fps, 1)}


@dataclass
class UploadRate:
    """The upload cap of one session, from its counts of frames received and frames
    the fn took. `stream_every` bounds what the fn can ever take (1 / stream_every per
    second), so the cap never asks for more than that, with headroom."""

    stream_every: float = 0.0
    min_fps: float = MIN_UPLOAD_FPS
    max_fps: float = MAX_UPLOAD_FPS
    # True: the uncapped page is the starting state, so nothing is said until the cap
    # falls below the maximum (server render); False: the first update always speaks.
    quiet_at_max: bool = False
    cap: float = field(init=False)
    # Frames per second the fn took, and that arrived, in the last window (None before the first).
    taken_fps: Optional[float] = field(init=False, default=None)
    received_fps: Optional[float] = field(init=False, default=None)
    _sent: Optional[float] = field(init=False, default=None)
    # (received, taken, time) at the last `observe`: the session passes running totals.
    _last: Optional[tuple[int, int, float]] = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.stream_every > 0:
            self.max_fps = max(self.min_fps, min(self.max_fps, HEADROOM / self.stream_every))
        self.cap = self.max_fps
        if self.quiet_at_max:
            self._sent = self.max_fps

    @classmethod
    def returned_video(cls) -> "UploadRate":
        """Server render: "taken" is the frames that went back out as video. While the
        ingress returns nearly every frame, the page is left alone (no message, so no
        bitrate cap either); under overload, when it returns fewer, the upload follows
        what it does return, so the frames it would drop are never sent, decrypted and
        decoded. A fn that returns images slower than the camera caps it likewise."""
        return cls(0.0, quiet_at_max=True)

    def observe(
        self, received_total: int, taken_total: int, now: float, floor_fps: float = 0.0,
        ceiling_fps: Optional[float] = None,
    ) -> Optional[float]:
        """The session's running totals at `now`: the first call sets the baseline,
        each later one applies `update` to what changed since the previous call."""
        last, self._last = self._last, (received_total, taken_total, now)
        if last is None:
            return None
        return self.update(received_total - last[0], taken_total - last[1], now - last[2], floor_fps, ceiling_fps)

    def update(
        self, received: int, taken: int, elapsed_s: float, floor_fps: float = 0.0,
        ceiling_fps: Optional[float] = None,
    ) -> Optional[float]:
        """Counts over the last `elapsed_s` seconds; returns the cap to send, or None
        when the page already has one close enough. The first update always sends,
        so the page learns the cap even when it stays at the maximum. The cap never
        goes below `floor_fps` (the server's fair share, see `FairShare`) nor above
        `ceiling_fps` (the server's CPU, see `component.media_load`), which wins."""
        if elapsed_s <= 0:
            return None
        if received > 0:
            self.taken_fps = taken / elapsed_s
            self.received_fps = received / elapsed_s
            if taken >= UPLOAD_BOUND_SHARE * received:
                self.cap = self.cap * STEP_UP
            else:
                self.cap = HEADROOM * self.taken_fps
            self.cap = min(self.max_fps, max(self.min_fps, floor_fps, self.cap))
            if ceiling_fps is not None:
                self.cap = max(self.min_fps, min(self.cap, ceiling_fps))
        at_bound = self.cap in (self.min_fps, self.max_fps)
        if self._sent is not None and (
            self.cap == self._sent or (not at_bound and abs(self.cap - self._sent) < MIN_CHANGE * self._sent)
        ):
            return None
        self._sent = self.cap
        return self.cap

    def unsent(self) -> None:
        """The last cap returned did not leave (channel not open yet): send it again
        at the next update."""
        self._sent = None


class SessionRates:
    """One frames-per-second figure per session of a server, and their mean: what the
    server-wide rules (`FairShare`, `component.media_load.MediaLoad`) read. Sessions
    report each update and are forgotten when they close. One event loop owns it (the
    server's), so it needs no lock."""

    def __init__(self) -> None:
        self._rates: dict[str, float] = {}

    def report(self, key: str, fps: float) -> None:
        self._rates[key] = fps

    def forget(self, key: str) -> None:
        self._rates.pop(key, None)

    def mean(self) -> Optional[float]:
        """None while no session has reported."""
        return sum(self._rates.values()) / len(self._rates) if self._rates else None


class FairShare(SessionRates):
    """The rate the fn takes frames at, across one server's browser-render sessions:
    no session's cap goes below HEADROOM x their mean.

    Why: a session capped lower waits longer for its next frame after each answer, so
    its fn takes fewer, so its cap (HEADROOM x what it took) falls further. Without a
    floor, sessions that started a little behind stay behind (measured: 5.0 against
    6.7 detections/s at 16 FastestDet sessions, fairness 0.75). With it, the lowest
    cap is what an average session needs, and the detector's share evens out.
    Sessions report the rate their fn took."""

    def floor_fps(self) -> float:
        mean = self.mean()
        return 0.0 if mean is None else HEADROOM * mean
