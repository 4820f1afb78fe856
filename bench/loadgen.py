"""Load generator: N aiortc peers, each streaming a 640x480 photo with a moving patch at
30 fps (frame numbers coded in the pixels), reading the returned video back.

One *step* connects N sessions, lets them warm up, then measures a window of
`seconds`: per session the delivered fps, the round-trip latency of each returned
frame (send time of the frame id read back from its pixels), frames not returned,
detector calls per second (from the server's per-session counters), and the CPU of
the server's processes and of this load generator.

Against a running app (ours, `serve run serve_app:app ice_host_addresses=127.0.0.1`):

    python -m bench loadgen --url http://127.0.0.1:8000 --sessions 4 --seconds 8

Every peer gathers on 127.0.0.1 only and uses an explicit, empty ICE configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.procs import CpuMeter, loadavg, serve_patterns  # noqa: E402
from component.client import ImageTrack, OfferRejected, StreamClient, read_frame_id, stamp_frame_id  # noqa: E402
from component.ice import IceConfig, set_host_addresses  # noqa: E402

log = logging.getLogger("bench.loadgen")

LOOPBACK = "127.0.0.1"
WIDTH, HEIGHT = 640, 480
SCHEMA = "rayrtc-bench/1"


# --------------------------------------------------------------------------- images
def bench_image() -> np.ndarray:
    """scikit-image's astronaut (a face, a person) at 640x480 BGR; noise without skimage."""
    import cv2

    try:
        from skimage import data

        img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    except ImportError:
        img = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    return cv2.resize(img, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


def patch_image(size: int = 112) -> np.ndarray:
    """The moving patch: scikit-image's cat (textured, so the encoder has work to do)."""
    import cv2

    try:
        from skimage import data

        img = cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR)
    except ImportError:
        img = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


class MovingPatchTrack(ImageTrack):
    """`ImageTrack` with a patch bouncing across the lower right of the frame (motion
    for the encoder, clear of the face and of the frame-id strip at the bottom left),
    the frame number stamped in the pixels, and every send time kept."""

    def __init__(self, image: np.ndarray, fps: float = 30.0, patch: Optional[np.ndarray] = None) -> None:
        super().__init__(image, fps, stamp_ids=True)
        self.patch = patch if patch is not None else patch_image()
        self.sent_log: list[tuple[int, float]] = []  # (frame id, monotonic send time)
        self.sent_at: dict[int, float] = {}

    def compose(self, index: int) -> np.ndarray:
        image = self.image.copy()
        h, w = image.shape[:2]
        ph, pw = self.patch.shape[:2]
        x_min, x_max = w // 2, w - pw
        y_min, y_max = h // 2, h - ph - 24
        span_x, span_y = max(1, x_max - x_min), max(1, y_max - y_min)
        tx, ty = (index * 6) % (2 * span_x), (index * 3) % (2 * span_y)
        x = x_min + (tx if tx < span_x else 2 * span_x - tx)
        y = y_min + (ty if ty < span_y else 2 * span_y - ty)
        image[y : y + ph, x : x + pw] = self.patch
        stamp_frame_id(image, index)
        return image

    def on_sent(self, index: int, at: float) -> None:
        # Every send time, unbounded: a bench run is bounded in time.
        self.sent_at[index] = at
        self.sent_log.append((index, at))


# --------------------------------------------------------------------------- clients
class BenchClient(StreamClient):
    """`StreamClient` with the moving-patch track and a log of every returned frame:
    (arrival time, frame id read from its pixels, round-trip seconds or None)."""

    def __init__(self, base_url: str, image: np.ndarray, fps: float = 30.0, **kwargs: Any) -> None:
        super().__init__(base_url, image, fps=fps, ice=IceConfig(), measure_latency=False, **kwargs)
        self.track = MovingPatchTrack(image, fps)
        self.recv_log: list[tuple[float, int, Optional[float]]] = []
        # (time, decoded frames waiting for us, encoded frames waiting for the decoder):
        # frames queued on the load generator's side, i.e. lag that is the bench's own.
        self.queue_log: list[tuple[float, int, int]] = []
        self.error: Optional[str] = None

    def _queues(self, track: MediaStreamTrack) -> tuple[int, int]:
        """Sizes of aiortc's receive queues for `track` (private attributes; -1 if absent)."""
        decoded = getattr(getattr(track, "_queue", None), "qsize", lambda: -1)()
        encoded = -1
        for receiver in self.pc.getReceivers():
            if receiver.track is track:
                q = getattr(receiver, "_RTCRtpReceiver__decoder_queue", None)
                encoded = q.qsize() if q is not None else -1
        return decoded, encoded

    async def _read(self, track: MediaStreamTrack) -> None:
        r = self.received
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if r.count % 10 == 0:
                    self.queue_log.append((now, *self._queues(track)))
                r.count += 1
                r.first_at = r.first_at or now
                r.last_at = now
                r.latest = frame
                frame_id = read_frame_id(frame.to_ndarray(format="gray"))
                sent = self.track.sent_at.get(frame_id)
                self.recv_log.append((now, frame_id, None if sent is None else now - sent))
                event, self._new_frame = self._new_frame, asyncio.Event()
                event.set()
        except MediaStreamError:
            pass

    async def start(self) -> None:
        """Anything the server needs after the connection is up (ours: nothing)."""

    async def close(self) -> None:
        try:
            self.send({"type": "stop"})
        except Exception:
            pass
        await super().close()


class ReferenceClient(BenchClient):
    """A browser of the `gradio_webrtc` 0.0.31 reference, as its compiled frontend does it:
    the offer through Gradio's `component_server` (`fn_name: "offer"`), then, once
    connected, the component's `tick` event through `queue/join` with
    `[webrtc_id, threshold]`, which hands the session its arguments (until then the
    reference returns the camera frames untouched)."""

    def __init__(
        self,
        base_url: str,
        image: np.ndarray,
        component_id: int,
        tick_fn_index: int,
        threshold: float = 0.3,
        fps: float = 30.0,
    ) -> None:
        super().__init__(base_url, image, fps=fps)
        self.component_id = component_id
        self.tick_fn_index = tick_fn_index
        self.threshold = threshold
        self.session_hash = uuid.uuid4().hex[:11]
        self._sse: Optional[asyncio.Task] = None
        self.started = asyncio.Event()

    async def connect(self, timeout: float = 20.0) -> dict:
        self.pc.addTrack(self.track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {
            "session_hash": self.session_hash,
            "component_id": self.component_id,
            "fn_name": "offer",
            "data": {"sdp": self.pc.localDescription.sdp, "type": "offer", "webrtc_id": self.webrtc_id},
        }
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            resp = await http.post(self.base_url + "/gradio_api/component_server", json=body)
        data = resp.json() if resp.content else None
        if resp.status_code != 200 or not isinstance(data, dict) or data.get("status") == "failed":
            await self.close()
            raise OfferRejected(resp.status_code, data)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type=data["type"]))
        return data

    async def start(self, timeout: float = 20.0) -> None:
        body = {
            "data": [self.webrtc_id, self.threshold],
            "event_data": None,
            "fn_index": self.tick_fn_index,
            "trigger_id": self.component_id,
            "session_hash": self.session_hash,
        }
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            resp = await http.post(self.base_url + "/gradio_api/queue/join", json=body)
            resp.raise_for_status()
        self._sse = asyncio.ensure_future(self._listen())
        await asyncio.wait_for(self.started.wait(), timeout)

    async def _listen(self) -> None:
        url = f"{self.base_url}/gradio_api/queue/data?session_hash={self.session_hash}"
        async with httpx.AsyncClient(timeout=None, trust_env=False) as http:
            async with http.stream("GET", url) as resp:
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    try:
                        msg = json.loads(line[5:])
                    except ValueError:
                        continue
                    if msg.get("msg") == "process_completed":
                        if not msg.get("success", True):
                            self.error = f"tick event failed: {msg.get('output')}"
                        self.started.set()
                    elif msg.get("msg") == "close_stream":
                        return

    async def close(self) -> None:
        if self._sse is not None:
            self._sse.cancel()
            await asyncio.gather(self._sse, return_exceptions=True)
        await super().close()


# --------------------------------------------------------------------------- targets
class Target:
    """What a step runs against: how to make a client, read its counters, find its
    processes and wait until it is idle again."""

    kind = "target"

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def client(self, image: np.ndarray, fps: float) -> BenchClient:
        raise NotImplementedError

    async def counters(self, http: httpx.AsyncClient) -> dict:
        """{"sessions": {webrtc_id: {"calls", "errors", ...}}, "total_calls": int | None}."""
        raise NotImplementedError

    def client_spec(self) -> dict:
        """What a load-generator worker process needs to build this target's clients."""
        return {"kind": self.kind, "url": self.url}

    def cpu_meter(self, extra_loadgen: list[int] = ()) -> CpuMeter:
        raise NotImplementedError

    async def drain(self, http: httpx.AsyncClient, timeout: float = 15.0) -> bool:
        """Wait until the target holds no session (False if it still does at `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if (await self.counters(http))["active"] == 0:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
        return False

    def detector_stats(self) -> Optional[dict]:
        return None


class ServedTarget(Target):
    """Our app: offers at `/webrtc/offer`, counters at `/webrtc/stats`."""

    kind = "served"

    def __init__(
        self,
        url: str,
        app_name: str = "default",
        detector_stats: Optional[Callable[[], Optional[dict]]] = None,
    ) -> None:
        super().__init__(url)
        self.app_name = app_name
        self._detector_stats = detector_stats

    def client(self, image: np.ndarray, fps: float) -> BenchClient:
        return BenchClient(self.url, image, fps=fps)

    async def counters(self, http: httpx.AsyncClient) -> dict:
        resp = await http.get(self.url + "/webrtc/stats")
        resp.raise_for_status()
        data = resp.json()
        return {
            "active": data.get("active"),
            "sessions": {s["webrtc_id"]: s for s in data.get("sessions", [])},
            "total_calls": None,
        }

    def cpu_meter(self, extra_loadgen: list[int] = ()) -> CpuMeter:
        return CpuMeter(patterns=serve_patterns(self.app_name), extra={"loadgen": [os.getpid(), *extra_loadgen]})

    def detector_stats(self) -> Optional[dict]:
        return self._detector_stats() if self._detector_stats else None


class ReferenceTarget(Target):
    """`gradio_webrtc` 0.0.31 (bench/reference_app.py) in its own process."""

    kind = "reference"

    def __init__(self, url: str, pid: int, component_id: int, tick_fn_index: int, threshold: float = 0.3) -> None:
        super().__init__(url)
        self.pid = pid
        self.component_id = component_id
        self.tick_fn_index = tick_fn_index
        self.threshold = threshold

    def client(self, image: np.ndarray, fps: float) -> BenchClient:
        return ReferenceClient(self.url, image, self.component_id, self.tick_fn_index, self.threshold, fps)

    async def counters(self, http: httpx.AsyncClient) -> dict:
        resp = await http.get(self.url + "/bench/stats")
        resp.raise_for_status()
        data = resp.json()
        return {"active": data.get("connections"), "sessions": {}, "total_calls": data.get("calls")}

    def client_spec(self) -> dict:
        return {"kind": self.kind, "url": self.url, "component_id": self.component_id,
                "tick_fn_index": self.tick_fn_index, "threshold": self.threshold}

    def cpu_meter(self, extra_loadgen: list[int] = ()) -> CpuMeter:
        return CpuMeter(extra={"reference": [self.pid], "loadgen": [os.getpid(), *extra_loadgen]})


# --------------------------------------------------------------------------- numbers
def percentiles_ms(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    arr = np.asarray(values) * 1e3
    return {
        "p50": round(float(np.percentile(arr, 50)), 1),
        "p95": round(float(np.percentile(arr, 95)), 1),
        "max": round(float(arr.max()), 1),
        "n": int(arr.size),
    }


def spread(values: list[float]) -> dict:
    if not values:
        return {"min": None, "mean": None, "max": None}
    return {
        "min": round(float(min(values)), 2),
        "mean": round(float(np.mean(values)), 2),
        "max": round(float(max(values)), 2),
    }


def session_window(client: BenchClient, t0: float, t1: float) -> dict:
    window = max(t1 - t0, 1e-6)
    sent_ids = [i for i, at in client.track.sent_log if t0 <= at < t1]
    recv = [(at, fid, lat) for at, fid, lat in client.recv_log if t0 <= at < t1]
    returned = {fid for _, fid, _ in client.recv_log}
    latencies = [lat for _, _, lat in recv if lat is not None]
    # Frames skipped on the way (newest-frame-wins): ids between the first and the
    # last one returned in the window that never came back.
    ids = [fid for _, fid, lat in recv if lat is not None]
    skipped = 0
    if ids:
        lo, hi = min(ids), max(ids)
        skipped = sum(1 for i in range(lo, hi + 1) if i not in returned)
    return {
        "webrtc_id": client.webrtc_id,
        "sent_fps": round(len(sent_ids) / window, 2),
        "delivered_fps": round(len(recv) / window, 2),
        "latency_ms": percentiles_ms(latencies),
        # Sent in the window minus returned in the window: skipped or still queued.
        "not_returned": max(0, len(sent_ids) - len(recv)),
        "skipped": skipped,
        "unreadable_ids": sum(1 for _, _, lat in recv if lat is None),
        "loadgen_queued_frames": _queued(client, t0, t1),
        "error": client.error,
        "_latencies": latencies,
    }


def _queued(client: BenchClient, t0: float, t1: float) -> Optional[dict]:
    """Frames waiting inside this load generator (decoded + still encoded), mean and max."""
    qs = [d + e for at, d, e in client.queue_log if t0 <= at < t1 and d >= 0 and e >= 0]
    if not qs:
        return None
    return {"mean": round(float(np.mean(qs)), 1), "max": int(max(qs))}


@dataclass
class StepOptions:
    sessions: int
    seconds: float = 8.0
    warmup: float = 2.0
    fps: float = 30.0
    connect_timeout: float = 25.0
    stats_every: float = 1.0
    # Load-generator processes; 0: one per 4 sessions, at most half the CPUs (>= 1).
    procs: int = 0
    extra: dict = field(default_factory=dict)

    def n_procs(self) -> int:
        if self.procs > 0:
            return min(self.procs, self.sessions)
        return max(1, min(math.ceil(self.sessions / 4), (os.cpu_count() or 2) // 2))


async def bring_up(clients: list[BenchClient], timeout: float) -> list[str]:
    """Connect every client (offer, ICE, first frames back); returns the failures."""
    failures: list[str] = []

    async def one(client: BenchClient) -> None:
        try:
            await client.connect(timeout=timeout)
            await client.wait_connected(timeout=timeout)
            await client.start()
            await client.wait_frames(3, timeout=timeout)
        except Exception as exc:  # recorded, the step goes on with the others
            client.error = f"{type(exc).__name__}: {exc}"
            failures.append(client.error)

    await asyncio.gather(*(one(c) for c in clients))
    return failures


def make_client(spec: dict, image: np.ndarray, fps: float) -> BenchClient:
    """A client from a picklable description (for load-generator worker processes)."""
    if spec["kind"] == "reference":
        return ReferenceClient(spec["url"], image, spec["component_id"], spec["tick_fn_index"], spec["threshold"], fps)
    return BenchClient(spec["url"], image, fps=fps)


def _worker_main(conn, spec: dict, sessions: int, fps: float, connect_timeout: float) -> None:
    """A load-generator process: `sessions` peers; reports windows when told t0/t1."""
    set_host_addresses([LOOPBACK])

    async def go() -> None:
        image = bench_image()
        clients = [make_client(spec, image, fps) for _ in range(sessions)]
        try:
            failures = await bring_up(clients, connect_timeout)
            conn.send(("ready", failures))
            t0, t1 = await asyncio.to_thread(conn.recv)
            await asyncio.sleep(max(0.0, t1 - time.monotonic()) + 0.05)
            conn.send(("done", [session_window(c, t0, t1) for c in clients]))
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    try:
        asyncio.run(go())
    finally:
        conn.close()


class _Workers:
    """Load-generator worker processes (spawned: the parent may hold Ray's threads).
    time.monotonic() is CLOCK_MONOTONIC, the same clock in every process."""

    def __init__(self, spec: dict, split: list[int], fps: float, connect_timeout: float) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.pipes, self.procs = [], []
        for n in split:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, spec, n, fps, connect_timeout), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    async def expect(self, tag: str, timeout: float) -> list:
        def recv(pipe):
            if not pipe.poll(timeout):
                raise TimeoutError(f"a load-generator process sent no {tag!r} within {timeout} s")
            try:
                got, payload = pipe.recv()
            except EOFError:
                raise RuntimeError("a load-generator process exited early (see its traceback above)") from None
            if got != tag:
                raise RuntimeError(f"load-generator process sent {got!r}, expected {tag!r}")
            return payload

        return await asyncio.gather(*(asyncio.to_thread(recv, p) for p in self.pipes))

    def send(self, message) -> None:
        for pipe in self.pipes:
            pipe.send(message)

    def close(self) -> None:
        for proc in self.procs:
            proc.join(timeout=15)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for pipe in self.pipes:
            pipe.close()


async def run_step(target: Target, opts: StepOptions, image: Optional[np.ndarray] = None) -> dict:
    """Connect `opts.sessions` peers, warm up, measure one window, close; returns the step's record.

    With several load-generator processes (`opts.procs`, or automatic on machines with
    more CPUs), each runs its share of the peers and reports its sessions' windows."""
    set_host_addresses([LOOPBACK])
    procs = opts.n_procs()
    clients: list[BenchClient] = []
    workers: Optional[_Workers] = None
    windows: list[dict] = []
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        try:
            t_connect = time.monotonic()
            if procs == 1:
                image = bench_image() if image is None else image
                clients = [target.client(image, opts.fps) for _ in range(opts.sessions)]
                failures = await bring_up(clients, opts.connect_timeout)
            else:
                split = [opts.sessions // procs + (1 if i < opts.sessions % procs else 0) for i in range(procs)]
                workers = _Workers(target.client_spec(), split, opts.fps, opts.connect_timeout)
                failures = [f for part in await workers.expect("ready", 60 + 2 * opts.connect_timeout) for f in part]
            connect_s = time.monotonic() - t_connect
            await asyncio.sleep(opts.warmup)

            meter = target.cpu_meter(extra_loadgen=workers.pids if workers else [])
            before = await target.counters(http)
            det_before = await asyncio.to_thread(target.detector_stats)
            meter.start()
            t0 = time.monotonic()
            if workers:
                workers.send((t0, t0 + opts.seconds))
            samples: list[dict] = []
            while (left := t0 + opts.seconds - time.monotonic()) > 0:
                await asyncio.sleep(min(opts.stats_every, left))
                if time.monotonic() < t0 + opts.seconds - 0.05:
                    try:
                        samples.append(await target.counters(http))
                    except httpx.HTTPError:
                        pass
            t1 = time.monotonic()
            cpu = meter.stop()
            after = await target.counters(http)
            det_after = await asyncio.to_thread(target.detector_stats)
            if workers:
                windows = [w for part in await workers.expect("done", 30) for w in part]
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
            if workers:
                await asyncio.to_thread(workers.close)
        drained = await target.drain(http)

    window = t1 - t0
    sessions = [session_window(c, t0, t1) for c in clients] if clients else windows
    for s in sessions:
        b = before["sessions"].get(s["webrtc_id"])
        a = after["sessions"].get(s["webrtc_id"])
        if a is not None and b is not None:
            s["detections_per_s"] = round((a["calls"] - b["calls"]) / window, 2)
            s["detector_errors"] = a.get("errors", 0) - b.get("errors", 0)
        elif target.kind == "reference":
            # The reference runs its fn on every frame it returns.
            s["detections_per_s"] = s["delivered_fps"]
        else:
            s["detections_per_s"] = None
        lat = [smp["sessions"][s["webrtc_id"]].get("last_latency_s") for smp in samples
               if s["webrtc_id"] in smp["sessions"]]
        lat = [x for x in lat if x is not None]
        s["detector_call_ms"] = percentiles_ms(lat) if lat else None

    pooled = [x for s in sessions for x in s.pop("_latencies")]
    det_rates = [s["detections_per_s"] for s in sessions if s["detections_per_s"] is not None]
    total_calls = None
    if before.get("total_calls") is not None and after.get("total_calls") is not None:
        total_calls = round((after["total_calls"] - before["total_calls"]) / window, 2)
    elif det_rates:
        total_calls = round(sum(det_rates), 2)
    ingress = cpu["cores"].get("ingress")
    mean_fps = float(np.mean([s["delivered_fps"] for s in sessions])) if sessions else 0.0
    server_cores = cpu["cores"].get("ingress", 0) + cpu["cores"].get("reference", 0)
    return {
        "target": target.kind,
        **opts.extra,
        "sessions": opts.sessions,
        "connected": opts.sessions - len(failures),
        "window_s": round(window, 3),
        "connect_s": round(connect_s, 2),
        "loadgen_procs": procs,
        "sent_fps": spread([s["sent_fps"] for s in sessions]),
        "delivered_fps": spread([s["delivered_fps"] for s in sessions]),
        "detections_per_s": {**spread(det_rates), "total": total_calls},
        "latency_ms": percentiles_ms(pooled),
        "loadgen_queued_frames_max": max(
            ((s.get("loadgen_queued_frames") or {}).get("max", 0) for s in sessions), default=None),
        "not_returned": sum(s["not_returned"] for s in sessions),
        "skipped": sum(s["skipped"] for s in sessions),
        "cpu": cpu,
        # Cores of the process that carries the media (our ingress / the reference
        # server) per session, scaled to a 30 fps session.
        "media_cores_per_30fps_session": (
            round(server_cores / opts.sessions * (30.0 / mean_fps), 3) if mean_fps > 0 else None
        ),
        "ingress_cores_per_session": round(ingress / opts.sessions, 3) if ingress is not None else None,
        "detector": _detector_delta(det_before, det_after, window),
        "drained": drained,
        "loadavg": loadavg(),  # at the step's end: other work on the machine shows here
        "failures": failures,
        "per_session": sessions,
    }


def _detector_delta(before: Optional[dict], after: Optional[dict], window: float) -> Optional[dict]:
    if not before or not after:
        return None
    if before.get("replicas") != 1 or after.get("replicas") != 1:
        # stats() answers from whichever replica the handle picks: deltas would mix replicas.
        return {"replicas": after.get("replicas"), "frames_per_s": None, "busy_fraction": None,
                "mean_batch": None, "batch_sizes": None, "note": "several replicas: no per-replica deltas"}
    hist = {}
    for size, count in after.get("batch_sizes", {}).items():
        delta = count - before.get("batch_sizes", {}).get(size, 0)
        if delta:
            hist[int(size)] = delta
    frames = after["frames"] - before["frames"]
    batches = sum(hist.values())
    return {
        "replicas": after.get("replicas"),
        "frames_per_s": round(frames / window, 2),
        "busy_fraction": round((after["busy_s"] - before["busy_s"]) / window, 3),
        "mean_batch": round(frames / batches, 2) if batches else None,
        "batch_sizes": dict(sorted(hist.items())),
    }


def step_line(step: dict) -> str:
    lat = step["latency_ms"]
    det = step["detections_per_s"]
    return (
        f"{step['target']:>9} {step.get('model', '')}: {step['sessions']} sessions, "
        f"fps {step['delivered_fps']['min']}/{step['delivered_fps']['mean']} (min/mean), "
        f"det/s total {det['total']} (per session min {det['min']} max {det['max']}), "
        f"latency p50 {lat['p50']} p95 {lat['p95']} max {lat['max']} ms, cpu {step['cpu']['cores']}"
    )


# --------------------------------------------------------------------------- CLI
def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Load generator against a running app (ours or the reference).")
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="the app's base URL")
    ap.add_argument("--app-name", default="default", help="Serve app name (to find its processes)")
    ap.add_argument("--sessions", default="1", help="session counts, e.g. 4 or 1,2,4")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--procs", type=int, default=0, help="load-generator processes (0: one per 4 sessions, <= CPUs/2)")
    ap.add_argument("--reference", action="store_true", help="the target is bench/reference_app.py")
    ap.add_argument("--json", type=Path, help="write the steps here as JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    if args.reference:
        from bench.reference import discover

        found = discover(args.url)
        target: Target = ReferenceTarget(args.url, found["pid"], found["component_id"], found["tick_fn_index"])
    else:
        target = ServedTarget(args.url, args.app_name)

    async def go() -> list[dict]:
        steps = []
        for n in [int(x) for x in args.sessions.split(",")]:
            step = await run_step(target, StepOptions(n, args.seconds, args.warmup, args.fps, procs=args.procs))
            print(step_line(step), flush=True)
            steps.append(step)
        return steps

    steps = asyncio.run(go())
    from bench.report import sweep_table

    print("\n" + "\n".join(sweep_table(steps)))
    if args.json:
        args.json.write_text(json.dumps({"schema": SCHEMA, "steps": steps}, indent=1))
    return 0 if all(s["connected"] for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
