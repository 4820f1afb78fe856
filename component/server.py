"""The server side of a `WebRTC` stream: offers in, sessions tracked, capped and reaped.

One `StreamServer` per stream (per `webrtc_stream` call) per process. It is plain
instance state owned by the component, so two components or two apps in one process
never share sessions by accident. Its `StreamConfig` is fixed when it is made: what
the stream runs and its `StreamPolicy` (`component/policy.py`), which it hands to
every session as is.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from aiortc import RTCPeerConnection

from component.client_address import ClientAddress
from component.fair_order import FairOrder
from component.ice import IceConfig, check_process_ice, strip_mdns_candidates
from component.media_load import LoopLagProbe, MediaLoad
from component.memory import release_free_memory
from component.metrics import StreamMetrics
from component.policy import StreamPolicy
from component.ratelimit import RateLimiter
from component.protocol import ErrorCode, OfferAnswer, OfferError, parse_offer
from component.scheduler import StreamFn
from component.session import Render, Session
from component.upload_rate import UPDATE_PERIOD_S, FairShare

log = logging.getLogger("rayrtc.server")

# Least seconds between two returns of freed memory to the OS (see `component.memory`).
TRIM_INTERVAL_S = 2.0


@dataclass(frozen=True)
class StreamConfig:
    """What one stream runs (known to the component that wires it) and under which
    policy (chosen by the host)."""

    fn: StreamFn
    policy: StreamPolicy = StreamPolicy()
    # Where the frame goes among fn's arguments (the component's place in `inputs`).
    frame_index: int = 0
    # "server": annotated video comes back; "browser": detections on the data channel,
    # drawn by the page over its own camera (no video is sent back).
    render: Render = "server"


def _first_media_section(lines: list[str]) -> list[str]:
    starts = [i for i, line in enumerate(lines) if line.startswith("m=")]
    if not starts:
        return []
    return lines[starts[0] : starts[1] if len(starts) > 1 else len(lines)]


def _usable_offer_sdp(sdp: str) -> str:
    """The offer as aiortc should see it: without `.local` candidates (resolving them
    sends mDNS multicast).

    aiortc's ICE runs on the first media section's transport (BUNDLE). If that section
    declares its candidates complete but carries none, ICE fails before it gathers
    and the answer has no candidates: the offer's fault (400), not a lack of ports.
    If only `.local` candidates were there, the end marker goes instead, so the
    browser's checks can still reach us (peer-reflexive candidates)."""
    stripped = strip_mdns_candidates(sdp)
    first = _first_media_section(stripped.splitlines())
    if any(line.startswith("a=candidate:") for line in first) or "a=end-of-candidates" not in first:
        return stripped
    if not any(line.startswith("a=candidate:") for line in _first_media_section(sdp.splitlines())):
        raise OfferError(
            ErrorCode.INVALID_OFFER,
            "offer's first media section declares its ICE candidates complete but carries none",
        )
    return "".join(line for line in stripped.splitlines(keepends=True) if not line.startswith("a=end-of-candidates"))


class StreamServer:
    def __init__(
        self,
        config: StreamConfig,
        ice: IceConfig,
        default_inputs: Sequence[Any] = (),
        metrics: Optional[StreamMetrics] = None,
    ) -> None:
        if config.render not in ("server", "browser"):
            raise ValueError(f"render must be 'server' or 'browser', not {config.render!r}")
        self.config = config
        self.ice = ice
        self.default_inputs = tuple(default_inputs)
        self.metrics = metrics or StreamMetrics()
        policy = self.policy = config.policy
        self._limiter = RateLimiter(policy.offer_rate, policy.offer_burst) if policy.offer_rate else None
        self.client_address = ClientAddress(policy.trusted_proxies)
        self._sessions: dict[str, Session] = {}
        # Browser-render upload caps never fall below the sessions' fair share.
        self._upload_share = FairShare()
        # The order a shared model should serve the sessions' frames in (read by fns
        # through `current_stream()`; the Serve app's detector queues by it).
        self._fair_order = FairOrder()
        # One upload ceiling for every session, from the media loop's lag (started with
        # the first offer, on the loop that carries the media). Server render only: in
        # browser render the upload already follows what the fn takes (`FairShare`), and
        # a ceiling there starved the detector (see `component.media_load`).
        target_ms = policy.media_lag_target_ms
        self._media_load = (
            MediaLoad(target_ms / 1000) if target_ms is not None and config.render == "server" else None
        )
        self._media_load_task: Optional[asyncio.Task] = None
        self._trim_pending = False
        self._executor: Optional[ThreadPoolExecutor] = None
        # Host addresses, port range and advertised address are the host's to set for the
        # whole process (`component.ice.claim_process_ice`): refused here if they differ.
        check_process_ice(ice, user="StreamServer")

    # -- queries ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, webrtc_id: str) -> Optional[Session]:
        return self._sessions.get(webrtc_id)

    def stats(self) -> dict[str, Any]:
        """Aggregate counts only: safe to show anyone who may use the app. Session ids
        and per-session detail are in `session_stats` (operators only)."""
        states: dict[str, int] = {}
        for session in self._sessions.values():
            state = session.pc.connectionState
            states[state] = states.get(state, 0) + 1
        return {"active": len(self._sessions), "limit": self.policy.concurrency_limit, "states": states}

    def session_stats(self) -> dict[str, Any]:
        """Every session's id, state and counters, and the media loop's load: for
        operators (an admin route)."""
        load = {"media_load": self._media_load.stats()} if self._media_load is not None else {}
        return {**self.stats(), **load, "sessions": [s.stats() for s in self._sessions.values()]}

    # -- offers -------------------------------------------------------------------
    async def offer(self, body: bytes | str | dict, client: Optional[str] = None) -> OfferAnswer:
        """Validate an offer, admit it and answer it; raises `OfferError`.

        `client` (the caller's address) keys the per-client rate limit. A refused or
        failed offer leaves nothing behind: the peer connection is closed and the id
        released before the error propagates.
        """
        try:
            if self._limiter is not None and client is not None:
                wait = self._limiter.take(client)
                if wait > 0:
                    raise OfferError(
                        ErrorCode.RATE_LIMITED, "too many offers from this client",
                        retry_after_s=round(wait, 2),
                    )
            answer = await self._offer(body)
        except OfferError as err:
            self.metrics.offer_rejected(err.code.value)
            raise
        self.metrics.offer_accepted()
        self.metrics.sessions_active(len(self._sessions))
        return answer

    async def _offer(self, body: bytes | str | dict) -> OfferAnswer:
        req = parse_offer(body)
        if req.webrtc_id in self._sessions:
            raise OfferError(
                ErrorCode.CONNECTION_ALREADY_EXISTS, f"session {req.webrtc_id!r} already exists"
            )
        limit = self.policy.concurrency_limit
        if limit is not None and len(self._sessions) >= limit:
            raise OfferError(
                ErrorCode.CONCURRENCY_LIMIT_REACHED,
                f"this server holds its maximum of {limit} sessions",
                limit=limit,
            )
        session = Session(
            webrtc_id=req.webrtc_id,
            pc=RTCPeerConnection(configuration=self.ice.rtc_configuration()),
            fn=self.config.fn,
            frame_index=self.config.frame_index,
            inputs=self.default_inputs,
            policy=self.policy,
            executor=self._media_executor(),
            on_closed=self._forget,
            metrics=self.metrics,
            render=self.config.render,
            upload_share=self._upload_share,
            media_load=self._media_load,
            fair_order=self._fair_order,
        )
        self._watch_media_load()
        # Registered before the first await so a concurrent duplicate id gets 409.
        self._sessions[req.webrtc_id] = session
        try:
            sdp = await session.answer(_usable_offer_sdp(req.sdp))
            if "a=candidate:" not in sdp:
                raise self._candidateless_answer(session)
        except asyncio.CancelledError:
            # The client hung up mid-request (a closed tab, a proxy timeout). The close
            # runs as its own task, so it finishes although this one is cancelled.
            session.close("offer_aborted")
            raise
        except OfferError:
            await session.close("invalid_offer")
            raise
        except Exception as exc:
            await session.close("invalid_offer")
            raise OfferError(ErrorCode.INVALID_OFFER, f"offer rejected: {exc}") from None
        except BaseException:
            session.close("offer_aborted")
            raise
        log.info("session %s: answered (%d active)", req.webrtc_id, len(self._sessions))
        return OfferAnswer(sdp=sdp, webrtc_id=req.webrtc_id)

    @staticmethod
    def _candidateless_answer(session: Session) -> OfferError:
        """An answer without candidates could never connect. If we gathered some, the
        offer left them no media section to go in (its fault: 400); if we gathered
        none, aioice could not bind (e.g. the UDP port range is used up: 503)."""
        if session.gathered_candidates():
            return OfferError(ErrorCode.INVALID_OFFER, "offer accepts no media section this server can answer")
        return OfferError(
            ErrorCode.NO_MEDIA_PORT, "no UDP port available for media on this server; try again later"
        )

    async def close(self, webrtc_id: str, reason: str = "closed_by_server") -> bool:
        session = self._sessions.get(webrtc_id)
        if session is None:
            return False
        await session.close(reason)
        return True

    async def close_all(self, reason: str = "server_shutdown") -> None:
        await asyncio.gather(
            *(s.close(reason) for s in list(self._sessions.values())), return_exceptions=True
        )
        if self._media_load_task is not None:
            self._media_load_task.cancel()
            self._media_load_task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -- internals ----------------------------------------------------------------
    def _watch_media_load(self) -> None:
        if self._media_load is None or self._media_load_task is not None:
            return
        self._media_load_task = asyncio.get_running_loop().create_task(
            _watch_media_load(self._media_load), name="rayrtc-media-load"
        )
        self._media_load_task.add_done_callback(_log_failure)

    def _forget(self, session: Session) -> None:
        if self._sessions.get(session.webrtc_id) is session:
            del self._sessions[session.webrtc_id]
        self.metrics.sessions_active(len(self._sessions))
        self._schedule_trim()

    def _schedule_trim(self) -> None:
        """Trim freed frame memory once things calm down: at most one trim per
        `TRIM_INTERVAL_S`, in a worker thread."""
        if self._trim_pending:
            return
        self._trim_pending = True
        loop = asyncio.get_running_loop()

        def trim() -> None:
            self._trim_pending = False
            loop.run_in_executor(None, release_free_memory)

        loop.call_later(TRIM_INTERVAL_S, trim)

    def _media_executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.policy.media_threads, thread_name_prefix="rayrtc-media"
            )
        return self._executor


async def _watch_media_load(load: MediaLoad) -> None:
    """Probe the loop's lag and judge it once per upload update period, for the
    server's lifetime (cancelled by `close_all`)."""
    probe = LoopLagProbe()
    probing = asyncio.ensure_future(probe.run())
    try:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(UPDATE_PERIOD_S)
            load.update(probe.take(), loop.time())
    finally:
        probing.cancel()


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the media load watch stopped; uploads are no longer capped for load",
                  exc_info=task.exception())
