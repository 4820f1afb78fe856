"""Load generator: N aiortc peers, each sending a pre-encoded 640x480 30 fps camera loop
(bench/loop.py: encoded once per process, replayed as packets, so a session costs the
load generator little next to what it costs the server) and reading back what the
server returns.

One *step* connects N sessions, lets them warm up, then measures a window of
`seconds`. Per session, in server render (annotated video back): delivered fps, the
round-trip latency of each returned frame (its loop position read from the luma plane,
matched to its send), frames not returned, detector calls per second (from the
server's per-session counters). In browser render (issue 11: no video back, one
`detections` message per processed frame on the data channel): detections/s, the
server-reported age_ms, seq gaps and malformed messages. For both: the CPU of the
server's processes (ingress, detector, proxy + controller) and of the load generator
itself, per session, and the load average.

Against a running app (ours, `serve run serve_app:app ice_host_addresses=127.0.0.1`):

    python -m bench loadgen --url http://127.0.0.1:8000 --sessions 4 --seconds 8
    python -m bench loadgen --url http://127.0.0.1:8000 --sessions 8 --render browser

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.clients import RENDERS, BenchClient, ReferenceClient, make_client  # noqa: E402
from bench.loop import CODECS, bench_image, encode_capped_loops, encoded_loop  # noqa: E402,F401  (the sweep imports bench_image from here)
from bench.procs import CpuMeter, loadavg, serve_patterns  # noqa: E402
from bench.stats import fairness, growth, p95_slices, percentiles, percentiles_ms, session_window, spread  # noqa: E402,F401
from component.ice import IceConfig, claim_process_ice  # noqa: E402

log = logging.getLogger("bench.loadgen")

LOOPBACK = "127.0.0.1"
# Every bench peer gathers on loopback only.
LOOPBACK_ICE = IceConfig(host_addresses=(LOOPBACK,))
SCHEMA = "rayrtc-bench/2"
SLICES = 3  # a window's latency p95 per third: its growth shows lag building up


# --------------------------------------------------------------------------- targets
class Target:
    """What a step runs against: how to make a client, read its counters, find its
    processes and wait until it is idle again."""

    kind = "target"
    render = "server"
    codec = "VP8"  # the codec the target's answer is expected to pick (its loops are pre-encoded)

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def client(self, fps: float) -> BenchClient:
        return make_client(self.client_spec(), fps)

    async def counters(self, http: httpx.AsyncClient) -> dict:
        """{"sessions": {webrtc_id: {"calls", "errors", ...}}, "total_calls": int | None}."""
        raise NotImplementedError

    def client_spec(self) -> dict:
        """What a load-generator worker process needs to build this target's clients."""
        return {"kind": self.kind, "url": self.url, "render": self.render, "codec": self.codec}

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
    """Our app: offers at `/webrtc/offer`; per-session counters at `/webrtc/sessions`
    with the app's `admin_token` (without one: `/webrtc/stats`, where older apps had
    them); `render` is the app's render mode, which its sessions must match."""

    kind = "served"

    def __init__(
        self,
        url: str,
        app_name: str = "default",
        detector_stats: Optional[Callable[[], Optional[dict]]] = None,
        render: str = "server",
        admin_token: Optional[str] = None,
        codec: str = "VP8",
    ) -> None:
        super().__init__(url)
        if render not in RENDERS:
            raise ValueError(f"render must be one of {RENDERS}, not {render!r}")
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, not {codec!r}")
        self.codec = codec
        self.app_name = app_name
        self.render = render
        self.admin_token = admin_token
        self._detector_stats = detector_stats

    async def counters(self, http: httpx.AsyncClient) -> dict:
        resp = None
        if self.admin_token:
            resp = await http.get(self.url + "/webrtc/sessions",
                                  headers={"Authorization": f"Bearer {self.admin_token}"})
            if resp.status_code == 404:  # an app from before /webrtc/sessions
                resp = None
        if resp is None:
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


# --------------------------------------------------------------------------- steps
@dataclass
class StepOptions:
    sessions: int
    seconds: float = 8.0
    warmup: float = 2.0
    fps: float = 30.0
    connect_timeout: float = 25.0
    stats_every: float = 1.0
    # Load-generator processes; 0: one per 8 sessions, at most half the CPUs (>= 1).
    procs: int = 0
    extra: dict = field(default_factory=dict)

    def n_procs(self) -> int:
        if self.procs > 0:
            return min(self.procs, self.sessions)
        return max(1, min(math.ceil(self.sessions / 8), (os.cpu_count() or 2) // 2))


async def bring_up(clients: list[BenchClient], timeout: float) -> list[str]:
    """Connect every client (offer, ICE, first frames or detections back); returns the failures."""
    failures: list[str] = []

    async def one(client: BenchClient) -> None:
        try:
            await client.connect(timeout=timeout)
            await client.wait_connected(timeout=timeout)
            await client.start()
            await client.wait_flowing(timeout=timeout)
        except Exception as exc:  # recorded, the step goes on with the others
            client.error = f"{type(exc).__name__}: {exc}"
            failures.append(client.error)

    await asyncio.gather(*(one(c) for c in clients))
    return failures


def encode_loops(spec: dict, fps: float) -> None:
    """Every loop this process's clients may send, encoded before the clock starts:
    also the capped ones the server's `upload_cap` selects (either render; the
    reference never sends one), in the codec the target's answer is expected to pick.
    (A loop first needed after the answer is encoded then, on the clients' event loop:
    seconds in which no session sends, which an early run read as a server stall.)"""
    codec = spec.get("codec", "VP8")
    encoded_loop(codec, fps=int(round(fps)))
    if spec.get("kind") != "reference":
        encode_capped_loops(codec, int(round(fps)))


def _worker_main(conn, spec: dict, sessions: int, fps: float, connect_timeout: float) -> None:
    """A load-generator process: `sessions` peers; reports windows when told t0/t1."""
    claim_process_ice(LOOPBACK_ICE, owner="bench load generator worker")

    async def go() -> None:
        await asyncio.to_thread(encode_loops, spec, fps)  # before any session starts
        clients = [make_client(spec, fps) for _ in range(sessions)]
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


async def run_step(target: Target, opts: StepOptions) -> dict:
    """Connect `opts.sessions` peers, warm up, measure one window, close; returns the step's record.

    With several load-generator processes (`opts.procs`, or automatic on machines with
    more CPUs), each runs its share of the peers and reports its sessions' windows."""
    claim_process_ice(LOOPBACK_ICE, owner="bench load generator")
    procs = opts.n_procs()
    clients: list[BenchClient] = []
    workers: Optional[_Workers] = None
    windows: list[dict] = []
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        try:
            if procs == 1:
                # The loop is encoded once per process, before any session (and the clock) starts.
                await asyncio.to_thread(encode_loops, target.client_spec(), opts.fps)
            t_connect = time.monotonic()
            if procs == 1:
                clients = [target.client(opts.fps) for _ in range(opts.sessions)]
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
    browser = target.render == "browser"
    for s in sessions:
        b = before["sessions"].get(s["webrtc_id"])
        a = after["sessions"].get(s["webrtc_id"])
        server_rate = None
        if a is not None and b is not None:
            server_rate = round((a["calls"] - b["calls"]) / window, 2)
            s["detector_errors"] = a.get("errors", 0) - b.get("errors", 0)
        s["server_calls_per_s"] = server_rate
        if browser:
            # What the page gets: the messages that arrived, not the server's count.
            s["detections_per_s"] = s["detection_messages_per_s"]
        elif server_rate is not None:
            s["detections_per_s"] = server_rate
        elif target.kind == "reference":
            # The reference runs its fn on every frame it returns.
            s["detections_per_s"] = s["delivered_fps"]
        else:
            s["detections_per_s"] = None
        lat = [smp["sessions"][s["webrtc_id"]].get("last_latency_s") for smp in samples
               if s["webrtc_id"] in smp["sessions"]]
        lat = [x for x in lat if x is not None]
        s["detector_call_ms"] = percentiles_ms(lat) if lat else None

    pooled = [p for s in sessions for p in s.pop("_latencies")]
    ages = [p for s in sessions for p in s.pop("_ages", [])]
    det_rates = [s["detections_per_s"] for s in sessions if s["detections_per_s"] is not None]
    total_calls = None
    if before.get("total_calls") is not None and after.get("total_calls") is not None:
        total_calls = round((after["total_calls"] - before["total_calls"]) / window, 2)
    elif det_rates:
        total_calls = round(sum(det_rates), 2)
    mean_fps = float(np.mean([s["delivered_fps"] for s in sessions])) if sessions else 0.0
    c = cpu["cores"]
    media = c.get("ingress", 0) + c.get("reference", 0)
    rest = c.get("proxy", 0) + c.get("controller", 0)
    n = opts.sessions
    lat_slices = p95_slices(pooled, t0, t1, SLICES)
    age_slices = p95_slices(ages, t0, t1, SLICES) if browser else None
    step = {
        "target": target.kind,
        "render": target.render,
        **opts.extra,
        "sessions": n,
        "connected": n - len(failures),
        "window_s": round(window, 3),
        "connect_s": round(connect_s, 2),
        "loadgen_procs": procs,
        "codecs": sorted({s["codec"] for s in sessions if s.get("codec")}),
        "sent_fps": spread([s["sent_fps"] for s in sessions]),
        "delivered_fps": spread([s["delivered_fps"] for s in sessions]),
        "detections_per_s": {**spread(det_rates), "total": total_calls},
        "detections_fairness": fairness(det_rates),
        "latency_ms": percentiles([v for _, v in pooled]),
        "latency_p95_slices_ms": lat_slices,
        "latency_p95_growth_ms": growth(lat_slices),
        "loadgen_queued_frames_max": max(
            ((s.get("loadgen_queued_frames") or {}).get("max", 0) for s in sessions), default=None),
        "not_returned": None if browser else sum(s["not_returned"] for s in sessions),
        "skipped": sum(s["skipped"] for s in sessions),
        "keyframe_requests": sum(s["keyframe_requests"] for s in sessions),
        "cpu": cpu,
        # Cores of the process that carries the media (our ingress / the reference
        # server) per session, scaled to a 30 fps session (server render only).
        "media_cores_per_30fps_session": (
            round(media / n * (30.0 / mean_fps), 3) if mean_fps > 0 and not browser else None
        ),
        "ingress_cores_per_session": round(c["ingress"] / n, 3) if "ingress" in c else None,
        # Per session, unscaled: the server's processes side by side with the load generator's own.
        "cores_per_session": {
            "media": round(media / n, 3),
            "detector": round(c["detector"] / n, 3) if "detector" in c else None,
            "rest": round(rest / n, 3) if ("proxy" in c or "controller" in c) else None,
            "server": round((media + rest) / n, 3),
            "loadgen": round(c.get("loadgen", 0) / n, 3),
        },
        "detector": _detector_delta(det_before, det_after, window),
        "drained": drained,
        "loadavg": loadavg(),  # at the step's end: other work on the machine shows here
        "failures": failures,
        "per_session": sessions,
    }
    if browser:
        step.update(
            age_ms=percentiles([v for _, v in ages]),
            age_p95_slices_ms=age_slices,
            age_p95_growth_ms=growth(age_slices),
            seq_missing=sum(s["seq_missing"] for s in sessions),
            seq_backwards=sum(s["seq_backwards"] for s in sessions),
            malformed=sum(s["malformed"] for s in sessions),
            video_frames_back=sum(int(s["delivered_fps"] * window) for s in sessions),
        )
    return step


def _detector_delta(before: Optional[dict], after: Optional[dict], window: float) -> Optional[dict]:
    if not before or not after:
        return None
    if before.get("replicas") != 1 or after.get("replicas") != 1:
        # stats() answers from whichever replica the handle picks: deltas would mix replicas.
        return {"replicas": after.get("replicas"), "frames_per_s": None, "busy_fraction": None,
                "mean_batch": None, "batch_sizes": None, "note": "several replicas: no per-replica deltas"}
    hist = _histogram_delta(before, after, "batch_sizes")
    packs = _histogram_delta(before, after, "pack_sizes")
    frames = after["frames"] - before["frames"]
    batches = sum(hist.values())
    packed = sum(size * n for size, n in packs.items())
    return {
        "replicas": after.get("replicas"),
        "frames_per_s": round(frames / window, 2),
        "busy_fraction": round((after["busy_s"] - before["busy_s"]) / window, 3),
        "mean_batch": round(frames / batches, 2) if batches else None,
        "batch_sizes": dict(sorted(hist.items())),
        # Frames per detector call (the ingress's FramePacker).
        "mean_pack": round(packed / sum(packs.values()), 2) if packs else None,
        # CPU of the forward passes alone (the replica's worker-thread clock): against
        # the replica process's CPU, the model's share of what the replica costs.
        **_forward_cpu(before, after, frames, window),
    }


def _forward_cpu(before: dict, after: dict, frames: int, window: float) -> dict:
    if "forward_cpu_s" not in after or "forward_cpu_s" not in before:
        return {}
    cpu = after["forward_cpu_s"] - before["forward_cpu_s"]
    return {"forward_cores": round(cpu / window, 3),
            "forward_cpu_ms_per_frame": round(1e3 * cpu / frames, 2) if frames else None}


def _histogram_delta(before: dict, after: dict, key: str) -> dict[int, int]:
    hist = {}
    for size, count in after.get(key, {}).items():
        delta = count - before.get(key, {}).get(size, 0)
        if delta:
            hist[int(size)] = delta
    return dict(sorted(hist.items()))


def step_line(step: dict) -> str:
    lat = step["latency_ms"]
    det = step["detections_per_s"]
    per = step["cores_per_session"]
    head = (f"{step['target']:>9} {step.get('model', '')} ({step['render']} render): {step['sessions']} sessions "
            f"({step['connected']} up), det/s total {det['total']} (per session min {det['min']} max {det['max']}), ")
    if step["render"] == "browser":
        age = step["age_ms"]
        body = (f"age p50 {age['p50']} p95 {age['p95']} ms, seq missing {step['seq_missing']}, "
                f"malformed {step['malformed']}, ")
    else:
        body = (f"fps {step['delivered_fps']['min']}/{step['delivered_fps']['mean']} (min/mean), "
                f"latency p50 {lat['p50']} p95 {lat['p95']} max {lat['max']} ms, ")
    return head + body + (f"cores/session server {per['server']} detector {per['detector']} "
                          f"load gen {per['loadgen']}, load {step['loadavg'][:1]}")


# --------------------------------------------------------------------------- CLI
def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Load generator against a running app (ours or the reference).")
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="the app's base URL")
    ap.add_argument("--app-name", default="default", help="Serve app name (to find its processes)")
    ap.add_argument("--admin-token", default=None,
                    help="the app's admin_token: per-session counters from /webrtc/sessions (detections/s per session)")
    ap.add_argument("--sessions", default="1", help="session counts, e.g. 4 or 1,2,4")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--procs", type=int, default=0, help="load-generator processes (0: one per 8 sessions, <= CPUs/2)")
    ap.add_argument("--reference", action="store_true", help="the target is bench/reference_app.py")
    ap.add_argument("--render", choices=RENDERS, default="server",
                    help="the app's render mode: server (video back) or browser (detections on the data channel)")
    ap.add_argument("--codec", choices=CODECS, default="VP8",
                    help="the codec the app's answer asks the camera for (AppArgs.camera_codec): its loops are encoded before the clock starts")
    ap.add_argument("--json", type=Path, help="write the steps here as JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    if args.reference:
        from bench.reference import discover

        found = discover(args.url)
        target: Target = ReferenceTarget(args.url, found["pid"], found["component_id"], found["tick_fn_index"])
    else:
        target = ServedTarget(args.url, args.app_name, render=args.render, admin_token=args.admin_token,
                              codec=args.codec)

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
