"""`StreamPolicy`: how one stream treats its sessions, as one typed, frozen value.

Every knob of a stream (call spacing, time limits, admission, offer rate limit, the
outgoing video's encoding) is declared here once, with its one default and its
bounds. The rest only hands the object down: the Serve app builds it once from
`AppArgs` (`AppArgs.stream_policy()`), a plain Gradio app from `webrtc_stream`'s
keyword arguments (whose defaults are read from here); `StreamServer` and each
`Session` read it and never copy its fields.

Why a module of its own rather than more fields on `StreamConfig`: `StreamConfig`
says what a stream runs (the fn, where the frame goes among its arguments, where
detections are drawn), which only the component knows; the policy is what a host
decides, and the Serve app's arguments build it without a fn or a component. It is a
pydantic model so that a bad value fails when the policy is made, naming the field,
and so that it crosses process boundaries (Serve pickles it to the ingress replica).

The component's defaults are the reference `gradio_webrtc`'s (no time limit, no cap
on sessions, no offer rate limit); the Serve app sets its own where a public service
needs one (see `serve_app/args.py`).
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from component.client_address import parse_networks
from component.encoding import VideoEncoding


class StreamPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    stream_every: float = Field(
        0.05, ge=0.0, description="least seconds between two calls of the fn for one session"
    )
    time_limit: Optional[float] = Field(
        None, gt=0, description="seconds a session may stream after it connects; None: no limit"
    )
    concurrency_limit: Optional[int] = Field(
        None, ge=1, description="sessions this stream holds at once; offers beyond are refused (503)"
    )
    connect_timeout: float = Field(
        15.0, gt=0, description="seconds an answered session may take to connect (both ends give up then)"
    )
    idle_timeout: Optional[float] = Field(
        10.0, gt=0, description="no camera frame for this long ends a session (a browser that vanished)"
    )
    disconnected_grace: float = Field(
        5.0, ge=0, description="ICE 'disconnected' often recovers: seconds it gets before the session ends"
    )
    offer_rate: Optional[float] = Field(
        None, gt=0, description="offers per second per client address (bursts up to offer_burst); None: no limit"
    )
    offer_burst: int = Field(20, ge=1, description="offers one client address may make at once")
    trusted_proxies: tuple[str, ...] = Field(
        (), description="proxies whose X-Forwarded-For / Forwarded names the client for the rate limit"
    )
    encoding: VideoEncoding = Field(
        VideoEncoding(), description="the outgoing video's codec preference and encoder options"
    )
    media_threads: int = Field(
        4, ge=1, description="threads doing all sessions' pixel work (frame conversion, drawing, encoding)"
    )
    media_lag_target_ms: Optional[float] = Field(
        50.0, gt=0,
        description="when the media event loop wakes later than this (90th percentile, two seconds running), "
        "every session's upload (server render) is capped lower until it does not (component.media_load); None: never",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_networks(value)  # raises naming the bad entry
        return value

    @classmethod
    def default_of(cls, name: str) -> Any:
        """The default of one field: what a keyword argument or an `AppArgs` field that
        mirrors it takes as its own default, so it is written only here."""
        return cls.model_fields[name].get_default(call_default_factory=True)
