"""One browser's peer connection and everything that lives and dies with it.

A session owns its tasks, its timers and its data channel. `close(reason)` is the
one way out, idempotent, and always frees everything; the reason travels to the
browser on the data channel first so the page can say why the stream ended.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from concurrent.futures import Executor
from typing import Any, Awaitable, Callable, Literal, Optional, Sequence

from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription
from av import VideoFrame

from component.detections import Detections
from component.encoding import codec_first, install_encoder
from component.fair_order import FairOrder
from component.media_load import MediaLoad
from component.metrics import StreamMetrics
from component.overlay_channel import IMAGES_IN_BROWSER_RENDER, ImagesNotDrawable, OverlayChannel
from component.policy import StreamPolicy
from component.receive import ReceiveStats, bound_track
from component.scheduler import FrameScheduler, StreamFn
from component.source import Exhausted, FrameSource, SourceTrack
from component.tracks import CameraFrame, Latest, OutgoingTrack, pump_latest
from component.upload_rate import UPDATE_PERIOD_S, FairShare, UploadRate, upload_message

log = logging.getLogger("rayrtc.session")

# Where detections are drawn: on the returned video ("server") or by the page over its
# own camera picture ("browser", see `component.overlay_channel`).
Render = Literal["server", "browser"]

# How long an end message may take to leave before the connection is closed anyway.
END_FLUSH_TIMEOUT_S = 0.5


async def _close_peer(pc: RTCPeerConnection, webrtc_id: str) -> None:
    """`pc.close()`, and if aiortc trips over a half-negotiated connection (a malformed
    offer can leave a transceiver without a transport), stop each transport that does
    exist, so no ICE socket outlives the session."""
    try:
        await pc.close()
        return
    except Exception:
        log.warning("session %s: peer connection did not close cleanly; stopping its transports",
                    webrtc_id, exc_info=True)
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    transports += [pc.sctp.transport] if pc.sctp is not None else []
    for dtls in {id(t): t for t in transports if t is not None}.values():
        try:
            await dtls.stop()
            await dtls.transport.stop()
        except Exception:
            log.warning("session %s: a transport did not stop", webrtc_id, exc_info=True)


class Session:
    def __init__(
        self,
        webrtc_id: str,
        pc: RTCPeerConnection,
        fn: StreamFn,
        frame_index: int,
        inputs: Sequence[Any],
        policy: StreamPolicy,
        executor: Executor,
        on_closed: Callable[["Session"], None],
        metrics: Optional[StreamMetrics] = None,
        render: Render = "server",
        upload_share: Optional[FairShare] = None,
        media_load: Optional[MediaLoad] = None,
        fair_order: Optional[FairOrder] = None,
    ) -> None:
        """`upload_share`: the server's `FairShare` of browser-render upload caps;
        `media_load`: the server's upload ceiling (server render; see `StreamServer`);
        `fair_order`: the server's queue order for a shared model (`component.fair_order`)."""
        self.webrtc_id = webrtc_id
        self.render = render
        self.pc = pc
        # Its time limits, stream_every and encoding; a browser that vanishes without
        # closing leaves ICE consent to expire (~30 s), `idle_timeout` ends it sooner.
        self.policy = policy
        self.created_at = time.monotonic()
        self.connected_at: Optional[float] = None
        self._inputs: tuple[Any, ...] = tuple(inputs)
        self._on_closed = on_closed
        self._channel: Optional[RTCDataChannel] = None
        self._tasks: set[asyncio.Task] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._closing: Optional[asyncio.Task] = None
        self._metrics = metrics or StreamMetrics()
        self.last_frame_at: Optional[float] = None
        self._fn, self._frame_index = fn, frame_index
        self._executor = executor
        # mode="receive" only: the fn as a picture source (see `component.source`).
        self.source: Optional[FrameSource] = None
        self.receive_stats: Optional[ReceiveStats] = None

        self.camera: Latest[CameraFrame] = Latest()
        self.detections: Latest[Detections] = Latest()
        self.images: Latest[VideoFrame] = Latest()
        self.outgoing = OutgoingTrack(
            self.camera, self.detections, self.images, executor, self._metrics.frames_out
        )
        # render="browser": results leave as messages on the data channel, no video.
        self.overlay = OverlayChannel(lambda: self._channel) if render == "browser" else None
        # The page uploads only the frames the server can use (`component.upload_rate`):
        # in browser render what the fn takes; in server render what goes back out
        # (set in `answer` once we know a camera comes in and video goes back).
        self.upload = UploadRate(policy.stream_every) if render == "browser" else None
        self._upload_share = upload_share if render == "browser" else None
        self._media_load = media_load
        self.frames_received = 0
        self.scheduler = FrameScheduler(
            webrtc_id, fn, policy.stream_every, frame_index, self.camera, self.detections, self.images,
            lambda: self._inputs, executor, self._metrics,
            on_result=self._overlay_result if self.overlay is not None else None,
            fair_order=fair_order,
        )
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_state)

    # -- inputs -----------------------------------------------------------------
    @property
    def inputs(self) -> tuple[Any, ...]:
        return self._inputs

    def set_inputs(self, values: Sequence[Any]) -> None:
        """Latest values of the stream's extra inputs (e.g. a threshold slider)."""
        self._inputs = tuple(values)

    # -- negotiation --------------------------------------------------------------
    async def answer(self, offer_sdp: str) -> str:
        """Apply the browser's offer and return our answer; raises on a bad SDP."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        if not any(t.kind == "video" for t in self.pc.getTransceivers()):
            raise ValueError("offer has no video transceiver")
        codec_first(self.pc, self.policy.encoding.camera_codec)  # what the answer asks the peer to send
        sent: Optional[MediaStreamTrack] = None
        if self.overlay is not None:
            # The page draws on its own camera picture: we only receive (no track added,
            # so the answer is recvonly and nothing is ever encoded).
            if not self._receives_video():
                raise ValueError("render='browser' needs the browser's camera, but the offer sends no video")
        elif self._receives_video():
            # addTrack reuses the browser's video transceiver and makes it send our track.
            self.pc.addTrack(self.outgoing)
            sent = self.outgoing
            self.upload = UploadRate.returned_video()
        else:
            # mode="receive": no camera comes in; the fn makes the picture on a clock,
            # from the moment the connection is up.
            self.source = FrameSource(
                self._fn, self.policy.stream_every, self._frame_index, lambda: self._inputs,
                self.images, self._executor, self.scheduler.record_error,
            )
            sent = SourceTrack(self.images, self._metrics.frames_out)
            self.pc.addTrack(sent)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        codec_first(self.pc, self.policy.encoding.codec)  # what our sender sends
        if sent is not None:
            encoder = install_encoder(self.pc, sent, self.policy.encoding)
            if sent is self.outgoing:
                # It encodes in its drawing hop; aiortc's sender encodes made frames itself.
                self.outgoing.use_encoder(encoder)
        self._call_later(self.policy.connect_timeout, self._connect_timeout)
        return self.pc.localDescription.sdp

    def gathered_candidates(self) -> bool:
        """Whether ICE gathered any local candidate, on any of this session's transports
        (an answer can lack them because we could not bind, or because the offer left
        no media section to put them in)."""
        dtls = [t.receiver.transport for t in self.pc.getTransceivers()]
        if self.pc.sctp is not None:
            dtls.append(self.pc.sctp.transport)
        return any(d is not None and d.transport.iceGatherer.getLocalCandidates() for d in dtls)

    # -- events -------------------------------------------------------------------
    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{name}:{self.webrtc_id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session %s: task %s failed", self.webrtc_id, task.get_name(),
                      exc_info=task.exception())
            self.close("internal_error")

    def _call_later(self, delay: float, callback: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        # The idle check re-arms itself every second: forget timers that already fired,
        # so a long session does not accumulate handles.
        self._timers = [t for t in self._timers if not t.cancelled() and t.when() > loop.time()]
        self._timers.append(loop.call_later(delay, callback))

    def _on_track(self, track) -> None:
        if track.kind != "video":
            return
        # At most a couple of frames between the network and `self.camera`.
        self.receive_stats = bound_track(self.pc, track)
        self._spawn(pump_latest(track, self.camera, self._frame_arrived), "pump")
        self._spawn(self.scheduler.run(), "scheduler")

    def _frame_arrived(self) -> None:
        self.last_frame_at = time.monotonic()
        self.frames_received += 1
        self._metrics.frames_in()

    def _update_upload(self) -> None:
        """Once a second: tell the page the upload cap (when it changed). Browser render
        counts the frames the fn took; server render the frames that went back out
        against those that reached the decoder (dropped ones included: they cost their
        SRTP and RTP work too)."""
        if self.upload is None or self._closing is not None:
            return
        if self.overlay is not None:
            arrived, used = self.frames_received, self.scheduler.stats.calls
        else:
            arrived = self.receive_stats.encoded_in if self.receive_stats is not None else self.frames_received
            used = self.outgoing.sent
        share, load = self._upload_share, self._media_load
        cap = self.upload.observe(
            arrived, used, time.monotonic(), share.floor_fps() if share is not None else 0.0,
            load.ceiling_fps if load is not None else None,
        )
        if share is not None and self.upload.taken_fps is not None:
            share.report(self.webrtc_id, self.upload.taken_fps)
        if load is not None and self.upload.received_fps is not None:
            load.report(self.webrtc_id, self.upload.received_fps)
        if cap is not None and not self.send(upload_message(cap)):
            self.upload.unsent()
        self._call_later(UPDATE_PERIOD_S, self._update_upload)

    def _check_idle(self) -> None:
        idle = self.policy.idle_timeout
        if idle is None or self._closing is not None:
            return
        if self.last_frame_at is None:
            # No frame yet: a loaded decoder can take seconds to produce the first one,
            # so a silent start gets the connect timeout, not the idle timeout.
            last, idle = self.connected_at or self.created_at, max(idle, self.policy.connect_timeout)
        else:
            last = self.last_frame_at
        if time.monotonic() - last > idle:
            self.close("client_gone")
        else:
            self._call_later(min(1.0, idle / 2), self._check_idle)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self._channel = channel
        channel.on("message", self._on_message)

    def _on_message(self, message: Any) -> None:
        """Control from the browser on its own data channel. Unknown messages are ignored."""
        if not isinstance(message, str) or len(message) > 4096:
            return
        try:
            data = json.loads(message)
        except ValueError:
            return
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "ping":
            pong = {"type": "pong", "t": data.get("t")}
            if self.detections.value is not None:  # for the page's stats line
                pong["detections"] = len(self.detections.value)
            self.send(pong)
        elif kind == "stop":
            self.close("client_stop")
        elif kind == "inputs":
            self._inputs_message(data.get("values"))

    def _inputs_message(self, values: Any) -> None:
        """New values for the stream's extra inputs, sent by the page on this session's
        own channel: unlike an HTTP event, it always reaches the replica that owns the
        session. Only a list of JSON scalars of the right length is taken."""
        if not isinstance(values, list) or len(values) != len(self._inputs):
            return
        if not all(v is None or isinstance(v, (str, int, float, bool)) for v in values):
            return
        self.set_inputs(values)

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("session %s: connection %s", self.webrtc_id, state)
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
            if self.policy.time_limit is not None:
                self._call_later(self.policy.time_limit, lambda: self.close("time_limit"))
            if self.policy.idle_timeout is not None and self._receives_video():
                self._call_later(min(1.0, self.policy.idle_timeout / 2), self._check_idle)
            if self.source is not None:
                self._spawn(self._run_source(self.source), "source")
            if self.upload is not None:
                self._update_upload()  # the baseline; then once a second
        elif state == "disconnected":
            self._call_later(self.policy.disconnected_grace, self._disconnected_timeout)
        elif state in ("failed", "closed"):
            self.close(f"connection_{state}")

    def _receives_video(self) -> bool:
        """Whether the browser's offer sends us video (the camera). Read from the
        offer itself: aiortc's transceivers say what *we* may do, not what it sends."""
        remote = self.pc.remoteDescription
        return remote is not None and any(
            m.kind == "video" and m.direction in ("sendrecv", "sendonly")
            for m in SessionDescription.parse(remote.sdp).media
        )

    async def _run_source(self, source: FrameSource) -> None:
        try:
            await source.run()
        except Exhausted:
            self.close("stream_finished")

    def _connect_timeout(self) -> None:
        if self.connected_at is None:
            self.close("connect_timeout")

    def _disconnected_timeout(self) -> None:
        if self.pc.connectionState == "disconnected":
            self.close("connection_lost")

    # -- output ---------------------------------------------------------------------
    def _overlay_result(self, result: Any, arrived_at: float) -> None:
        assert self.overlay is not None
        try:
            self.overlay.publish(result, arrived_at)
        except ImagesNotDrawable:
            # Every frame would fail the same way: end the session and tell the page why.
            log.error("session %s: the stream fn returns images, which render='browser' cannot send",
                      self.webrtc_id)
            self.close(IMAGES_IN_BROWSER_RENDER)
            raise

    def send(self, message: dict) -> bool:
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return False
        channel.send(json.dumps(message))
        return True

    def stats(self) -> dict[str, Any]:
        s = self.scheduler.stats
        return {
            "webrtc_id": self.webrtc_id,
            "state": self.pc.connectionState,
            "age_s": round(time.monotonic() - self.created_at, 3),
            "calls": s.calls,
            "errors": s.errors,
            "skipped": s.skipped,
            "last_error": s.last_error,
            "inputs": list(self._inputs),
            "render": self.render,
            **({"overlay_sent": self.overlay.sent, "overlay_skipped": self.overlay.skipped}
               if self.overlay is not None else {}),
            **({"upload_max_fps": round(self.upload.cap, 1)} if self.upload is not None else {}),
            # What the bounded receive seam dropped (see `component.receive`).
            **({"receive": dataclasses.asdict(self.receive_stats)} if self.receive_stats is not None else {}),
        }

    # -- shutdown -------------------------------------------------------------------
    def close(self, reason: str) -> asyncio.Task:
        """End the session (idempotent); returns the task that finishes closing."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(reason))
        return self._closing

    async def _close(self, reason: str) -> None:
        log.info("session %s: closing (%s)", self.webrtc_id, reason)
        self._metrics.session_closed(reason)
        for timer in self._timers:
            timer.cancel()
        if self._upload_share is not None:
            self._upload_share.forget(self.webrtc_id)
        if self._media_load is not None:
            self._media_load.forget(self.webrtc_id)
        try:
            if self.send({"type": "end", "reason": reason}):
                await self._flush_channel()
        except Exception:  # the peer may already be gone; closing must go on
            log.debug("session %s: end message not sent", self.webrtc_id, exc_info=True)
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.camera.close()
        self.images.close()
        self.outgoing.stop()
        try:
            await _close_peer(self.pc, self.webrtc_id)
        finally:
            self._on_closed(self)

    async def _flush_channel(self) -> None:
        channel = self._channel
        deadline = time.monotonic() + END_FLUSH_TIMEOUT_S
        while channel is not None and channel.bufferedAmount > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # bufferedAmount reaches 0 when SCTP has taken the chunk; give it one tick to leave.
        await asyncio.sleep(0.05)
