"""The benchmark instrument end to end, in a few seconds: the pre-encoded loop the load
generator sends, its parsing of browser-render detection messages, the load generator
against a served app on the session's Ray (its own app name and route) and, in browser
render, against a small aiortc stand-in, then the report built from what it measured.
Numbers are not judged here, only that they exist and are sane."""

from __future__ import annotations

import asyncio
import json
import os
import time

import av
import pytest

from bench import report, served
from bench.clients import parse_detections
from bench.loadgen import SCHEMA, ServedTarget, StepOptions, run_step
from bench.loop import LOOP_FRAMES, LoopTrack, SendLog, capped_loop, encoded_loop, is_keyframe, read_frame_position, read_position, stamp_position
from bench.procs import CpuMeter, cpu_seconds

STEP_KEYS = {
    "target", "sessions", "connected", "window_s", "sent_fps", "delivered_fps", "detections_per_s",
    "latency_ms", "not_returned", "skipped", "cpu", "media_cores_per_30fps_session", "detector",
    "drained", "failures", "per_session", "render", "codecs", "cores_per_session", "detections_fairness",
    "latency_p95_slices_ms", "latency_p95_growth_ms", "keyframe_requests", "loadavg",
}
SESSION_KEYS = {
    "webrtc_id", "sent_fps", "delivered_fps", "latency_ms", "not_returned", "skipped", "detections_per_s",
}


@pytest.fixture(scope="module")
def bench_app(serve_instance):
    from ray import serve

    args = served.app_args("haar", None, max_batch_size=4, replicas=1, detector_num_cpus=0.5)
    url = served.deploy(serve_instance, "bench_smoke", "/bench-smoke", args)
    yield url, served.detector_stats_fn("bench_smoke")
    serve.delete("bench_smoke")


def test_cpu_seconds_reads_this_process():
    t0 = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert t0 is not None and cpu_seconds(os.getpid()) >= t0
    meter = CpuMeter(extra={"me": [os.getpid()]})
    meter.start()
    cpu = meter.stop()
    assert cpu["cores"]["me"] >= 0 and cpu["processes"]["me"] == 1


async def test_loadgen_step_and_report(bench_app, tmp_path):
    url, detector_stats = bench_app
    target = ServedTarget(url, "bench_smoke", detector_stats, admin_token=served.ADMIN_TOKEN)
    started = time.monotonic()
    step = await run_step(target, StepOptions(2, seconds=3.0, warmup=1.0, extra={"model": "haar"}))
    assert time.monotonic() - started < 60

    assert STEP_KEYS <= step.keys()
    assert step["connected"] == 2, step["failures"]
    assert step["delivered_fps"]["min"] > 0
    assert 0 < step["sent_fps"]["mean"] <= 45  # 30 fps paced; less only on a starved machine
    assert step["latency_ms"]["n"] > 0 and 0 < step["latency_ms"]["p50"] <= step["latency_ms"]["p95"] <= step["latency_ms"]["max"]
    assert step["detections_per_s"]["total"] > 0
    assert step["cpu"]["processes"]["ingress"] == 1, step["cpu"]
    assert step["cpu"]["cores"]["ingress"] > 0
    assert step["detector"] is not None and step["detector"]["frames_per_s"] > 0
    assert step["drained"]
    assert step["render"] == "server" and step["codecs"] and set(step["codecs"]) <= {"VP8", "H264"}
    per = step["cores_per_session"]
    assert per["media"] > 0 and per["detector"] > 0 and per["loadgen"] > 0
    assert len(step["latency_p95_slices_ms"]) == 3
    for s in step["per_session"]:
        assert SESSION_KEYS <= s.keys()
        assert s["latency_ms"]["n"] > 0 and s["detections_per_s"] > 0
        assert s["unreadable_ids"] <= s["delivered_fps"] * step["window_s"] * 0.1  # ids read back from the luma plane

    # The same through two load-generator processes (what bigger machines use by default).
    split = await run_step(target, StepOptions(2, seconds=2.0, warmup=0.5, procs=2, extra={"model": "haar"}))
    assert split["loadgen_procs"] == 2 and split["connected"] == 2, split["failures"]
    assert split["cpu"]["processes"]["loadgen"] == 3
    assert split["latency_ms"]["n"] > 0 and split["delivered_fps"]["min"] > 0
    assert {s["webrtc_id"] for s in split["per_session"]}.isdisjoint({s["webrtc_id"] for s in step["per_session"]})
    assert time.monotonic() - started < 90

    results = {
        "schema": SCHEMA,
        "started_at": "now",
        "command": "test",
        "duration_s": 0,
        "machine": {"cpus": 2, "cpu_model": "", "memory_gb": 1, "platform": "", "python": "", "versions": {}},
        "loadavg_before": [0, 0, 0],
        "loadavg_after": [0, 0, 0],
        "options": {"models": ["haar"], "skipped_models": [], "max_sessions": 2, "min_fps": 15.0,
                    "seconds": 3.0, "warmup": 1.0, "batch_sessions": 2},
        "raw": {"results": [], "skipped": []},
        "reference": {"runs": [], "error": "not run in tests"},
        "served": {"runs": [{"target": "served", "model": "haar", "steps": [step], "error": None}],
                   "handle": [], "batch_sweep": [], "config": {"stream_every": 0.05}},
    }
    results["summary"] = report.summarize(results)
    m = results["summary"]["models"]["haar"]
    assert m["served_peak_detections_per_s"] == step["detections_per_s"]["total"]
    assert m["ingress_cores_at"]["cores_per_session"] > 0
    json.dumps(results)  # serialisable as written by the sweep
    md = report.markdown(results, report.plots(results, tmp_path), tmp_path)
    assert "| served (VP8) | 2 |" in md or "| served (H264) | 2 |" in md
    assert "### Targets" in md
    bench_md = tmp_path / "BENCHMARKS.md"
    bench_md.write_text(f"# B\n\nhand-written\n\n{report.BEGIN}\nOLD-GENERATED\n{report.END}\n\nafter\n")
    report.update_benchmarks(bench_md, md)
    text = bench_md.read_text()
    assert "hand-written" in text and "after" in text and "OLD-GENERATED" not in text and "| 2 |" in text


# ----------------------------------------------------------------------------- the loop
def test_loop_is_one_keyframe_then_deltas_with_readable_positions():
    loop = encoded_loop("VP8", frames=12)
    assert loop.keyframes == (True,) + (False,) * 11
    assert is_keyframe("VP8", loop.frames[0]) and not is_keyframe("VP8", loop.frames[1])
    assert 0.3e6 < loop.bitrate < 3e6, loop.bitrate  # webcam-like: noise costs bits
    decoder = av.CodecContext.create("vp8", "r")
    positions = [read_frame_position(f) for data in loop.frames for f in decoder.decode(av.Packet(data))]
    assert positions == list(range(12))


def test_positions_carry_a_check():
    import numpy as np

    image = np.zeros((480, 640), np.uint8)
    stamp_position(image, 37)
    assert read_position(image) == 37
    image[-16:, 0:16] = 255 - image[-16:, 0:16]  # one bit misread
    assert read_position(image) is None


async def test_loop_track_replays_packets_with_monotonic_pts_and_answers_pli():
    track = LoopTrack(fps=300.0, frames=6)  # paced fast: this only checks the packets
    track.use("VP8")
    loop = encoded_loop("VP8", 6, 300)
    packets = [await track.recv() for _ in range(14)]
    pts = [p.pts for p in packets]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    assert [bytes(p) for p in packets[:6]] == list(loop.frames)
    assert bytes(packets[6]) == loop.frames[0] and bytes(packets[12]) == loop.frames[0]  # each repeat on the keyframe
    track.request_keyframe()  # a PLI halfway through the loop: the keyframe comes next
    assert bytes(await track.recv()) == loop.frames[0]
    assert [pos for _, pos, _ in track.log.sends] == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 0, 1, 0]
    track.stop()


async def test_loop_track_follows_an_upload_cap():
    """As the page does with `upload_cap`: the capped loop (lowest listed rate at or
    above the cap, same bits per frame) from its keyframe, pts still monotonic."""
    track = LoopTrack(fps=30.0)
    track.use("VP8")
    before = [await track.recv() for _ in range(2)]
    track.cap(9.0)
    capped = capped_loop("VP8", 9.0)
    after = [await track.recv() for _ in range(2)]
    assert capped.fps == 10 and len(capped.frames) == LOOP_FRAMES // 3
    assert [bytes(p) for p in after] == list(capped.frames[:2])  # starts on its keyframe
    full = encoded_loop("VP8")
    per_frame = lambda loop: loop.bitrate / loop.fps  # noqa: E731
    assert abs(per_frame(capped) / per_frame(full) - 1) < 0.35, (capped.bitrate, full.bitrate)
    pts = [p.pts for p in before + after]
    assert pts == sorted(pts) and len(set(pts)) == 4
    assert after[1].pts - after[0].pts == 9000  # 10 fps on the 90 kHz clock
    track.stop()


def test_send_log_unwraps_positions_in_order():
    log = SendLog()
    for index in range(12):  # a 4-frame loop sent three times, 1 s apart
        log.add(index, index % 4, float(index))
    # A server with a 5-frame lag returns position 1 (sent at 1, 5, 9): the earliest
    # unmatched send in order is index 1, then position 2 matches index 2, not 6 or 10.
    assert log.match(1, 6.0) == (1, 1.0)
    assert log.match(2, 7.0) == (2, 2.0)
    assert log.match(1, 10.0) == (5, 5.0)  # skipped 3 and 4: the next 1 in order
    assert log.match(None, 10.0) is None and log.match(3, 2.5) is None  # unreadable; not sent yet


def test_detection_messages_are_parsed_strictly():
    good = {"type": "detections", "seq": 3, "age_ms": 12.5,
            "items": [{"box": [0.1, 0.2, 0.5, 0.9], "label": "face", "score": 0.9}]}
    assert parse_detections(good) == (3, 12.5, 1)
    assert parse_detections({**good, "items": []}) == (3, 12.5, 0)
    bad = [
        {**good, "seq": "3"}, {**good, "seq": True}, {**good, "age_ms": -1}, {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "age_ms"}, {**good, "type": "detection"},
        {**good, "items": [{"box": [0.1, 0.2, 1.5, 0.9], "label": "face", "score": 0.9}]},
        {**good, "items": [{"box": [0.6, 0.2, 0.5, 0.9], "label": "face", "score": 0.9}]},
        {**good, "items": [{"box": [0.1, 0.2, 0.5], "label": "face", "score": 0.9}]},
        {**good, "items": [{"box": [0.1, 0.2, 0.5, 0.9], "label": 1, "score": 0.9}]},
        {**good, "items": [{"box": [0.1, 0.2, 0.5, 0.9], "label": "face"}]},
    ]
    assert [parse_detections(b) for b in bad] == [None] * len(bad)


# ----------------------------------------------------------------------------- browser render
class DetectionsDouble:
    """A stand-in for the app in browser render (issue 11's wire format) so the load
    generator's browser sessions run against a real aiortc peer while the app's own
    mode is built elsewhere: aiohttp on 127.0.0.1 with `/webrtc/offer` and
    `/webrtc/stats`; it receives the camera, answers without video of its own, and per
    decoded frame sends one `detections` message whose box is the frame-id strip
    (computed from the frame's size). On purpose, so the counting is checked: every
    10th seq number is skipped, every 25th message breaks the format, and after its
    10th frame it sends one real PLI (RTCP) to the client."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict] = {}
        self.tasks: list[asyncio.Task] = []
        self.runner = None
        self.url = ""

    async def start(self) -> str:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/webrtc/offer", self._offer)
        app.router.add_get("/webrtc/stats", self._stats)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(s["pc"].close() for s in self.sessions.values()), return_exceptions=True)
        if self.runner is not None:
            await self.runner.cleanup()

    async def _offer(self, request):
        from aiohttp import web
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
        from aiortc.sdp import SessionDescription

        body = await request.json()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        session = {"webrtc_id": body["webrtc_id"], "calls": 0, "pc": pc, "channel": None}
        self.sessions[body["webrtc_id"]] = session
        video = next(m for m in SessionDescription.parse(body["sdp"]).media if m.kind == "video")
        ssrc = video.ssrc[0].ssrc

        @pc.on("datachannel")
        def on_channel(channel) -> None:
            session["channel"] = channel

        @pc.on("track")
        def on_track(track) -> None:
            receiver = next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)
            self.tasks.append(asyncio.ensure_future(self._consume(session, track, receiver, ssrc)))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": "answer"})

    async def _consume(self, session: dict, track, receiver, ssrc: int) -> None:
        from aiortc.mediastreams import MediaStreamError

        seq = count = 0
        try:
            while True:
                frame = await track.recv()
                arrived = time.monotonic()
                count += 1
                if count == 10:
                    await receiver._send_rtcp_pli(ssrc)
                seq += 2 if seq % 10 == 9 else 1
                h, w = frame.height, frame.width
                box = [0.0, (h - 16) / h, 320 / w, 1.0] if count % 25 else [0.5, 0.2, 0.1, 0.9]
                message = {"type": "detections", "seq": seq, "age_ms": round((time.monotonic() - arrived) * 1e3, 3),
                           "items": [{"box": box, "label": "id strip", "score": 1.0}]}
                channel = session["channel"]
                if channel is not None and channel.readyState == "open":
                    channel.send(json.dumps(message))
                    session["calls"] += 1
        except MediaStreamError:
            pass

    async def _stats(self, request):
        from aiohttp import web

        live = [s for s in self.sessions.values() if s["pc"].connectionState not in ("closed", "failed")]
        return web.json_response({
            "active": len(live),
            "sessions": [{"webrtc_id": s["webrtc_id"], "calls": s["calls"], "errors": 0} for s in live],
        })


async def test_browser_render_step_against_a_detections_double():
    double = DetectionsDouble()
    url = await double.start()
    try:
        target = ServedTarget(url, "no-serve-app", render="browser")
        step = await run_step(target, StepOptions(2, seconds=2.0, warmup=0.5, extra={"model": "double"}))
    finally:
        await double.stop()
    assert STEP_KEYS <= step.keys()
    assert step["render"] == "browser" and step["connected"] == 2, step["failures"]
    assert step["codecs"] == ["VP8"]
    assert step["video_frames_back"] == 0 and step["not_returned"] is None
    assert step["keyframe_requests"] >= 2  # one real PLI per session reached the loop
    det = step["detections_per_s"]
    assert det["min"] > 0 and det["total"] >= 2 * det["min"] - 1e-6
    assert step["age_ms"]["n"] > 0 and 0 <= step["age_ms"]["p50"] <= step["age_ms"]["p95"]
    messages = sum(round(s["detection_messages_per_s"] * step["window_s"]) for s in step["per_session"])
    # Every 10th seq is skipped by the double: about one gap per 9 messages, none backwards.
    assert 0 < step["seq_missing"] <= messages / 5 and step["seq_backwards"] == 0
    assert step["malformed"] >= 1  # every 25th message breaks the format
    assert 0 < step["detections_fairness"] <= 1
    for s in step["per_session"]:
        assert s["items_mean"] == 1.0 and s["server_calls_per_s"] is not None
    md = "\n".join(report.browser_table([step]))
    assert md.count("\n") == 2 and "| 2 | " in md
