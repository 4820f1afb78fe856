"""Outgoing video encoder options, side by side: cost per frame and picture quality.

`python -m bench.encoders [--frames 150] [--bitrate 1000000]` encodes the same
webcam-like 640x480 clip (a photo drifting across the frame with luma noise sigma 2.5,
like a real camera's) with each option set, one thread unless the set says otherwise,
decodes it back and prints a table: ms per frame (encoder thread CPU time), kbit/s
produced, decode ms per frame (what the other end pays) and Y-PSNR against
the source. aiortc's own VP8 settings are the first row.
Self-contained: PyAV and numpy only (skimage for the photo when installed).
"""

from __future__ import annotations

import argparse
import fractions
import json
import time
from dataclasses import dataclass

import av
import numpy as np

WIDTH, HEIGHT, FPS = 640, 480, 30


@dataclass(frozen=True)
class Option:
    name: str
    codec: str  # "libvpx" or "libx264"
    options: dict
    threads: int = 1


VP8_BASE = {"deadline": "realtime", "lag-in-frames": "0", "static-thresh": "1", "partitions": "0",
            "overshoot-pct": "15", "undershoot-pct": "100"}  # fmt: skip
OPTIONS = [
    Option("vp8 aiortc (cpu-used -6, nr 4)", "libvpx", {**VP8_BASE, "cpu-used": "-6", "noise-sensitivity": "4"}),
    Option("vp8 cpu-used -6, nr 0", "libvpx", {**VP8_BASE, "cpu-used": "-6", "noise-sensitivity": "0"}),
    Option("vp8 cpu-used -10, nr 0", "libvpx", {**VP8_BASE, "cpu-used": "-10", "noise-sensitivity": "0"}),
    Option("vp8 cpu-used -16, nr 0", "libvpx", {**VP8_BASE, "cpu-used": "-16", "noise-sensitivity": "0"}),
    Option("vp8 cpu-used -16, nr 0, 2 threads", "libvpx", {**VP8_BASE, "cpu-used": "-16", "noise-sensitivity": "0"}, 2),
    Option("h264 ultrafast zerolatency", "libx264", {"preset": "ultrafast", "tune": "zerolatency", "level": "31"}),
    Option("h264 superfast zerolatency", "libx264", {"preset": "superfast", "tune": "zerolatency", "level": "31"}),
    Option("h264 veryfast zerolatency", "libx264", {"preset": "veryfast", "tune": "zerolatency", "level": "31"}),
]


def clip(frames: int, seed: int = 0) -> list[np.ndarray]:
    """yuv420p frames (as PyAV's stacked planes) of a photo drifting by 2 px a frame."""
    try:
        import skimage.data

        photo = skimage.data.astronaut()  # RGB 512x512
    except ImportError:  # a smooth synthetic scene instead
        yy, xx = np.mgrid[0:512, 0:512]
        photo = np.stack([(xx // 2) % 256, (yy // 2) % 256, ((xx + yy) // 4) % 256], -1).astype(np.uint8)
    canvas = np.zeros((HEIGHT + 64, WIDTH + 2 * frames + 64, 3), np.uint8)
    reps = -(-canvas.shape[1] // photo.shape[1])
    canvas[:] = np.tile(photo, (2, reps, 1))[: canvas.shape[0], : canvas.shape[1]]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(frames):
        rgb = np.ascontiguousarray(canvas[32 : 32 + HEIGHT, 2 * i : 2 * i + WIDTH])
        yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
        noise = rng.normal(0, 2.5, size=(HEIGHT, WIDTH))
        yuv[:HEIGHT] = np.clip(yuv[:HEIGHT] + noise, 0, 255).astype(np.uint8)
        out.append(yuv)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def run(option: Option, frames: list[np.ndarray], bitrate: int) -> dict:
    enc = av.CodecContext.create(option.codec, "w")
    enc.width, enc.height, enc.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    enc.bit_rate = bitrate
    enc.time_base = fractions.Fraction(1, FPS)
    enc.framerate = fractions.Fraction(FPS, 1)
    enc.thread_count = option.threads
    if option.codec == "libvpx":
        enc.gop_size, enc.qmin, enc.qmax = 3000, 2, 56
        extra = {"bufsize": str(bitrate), "minrate": str(bitrate), "maxrate": str(bitrate)}
    else:
        enc.profile = "Baseline"
        extra = {}
    enc.options = {**option.options, **extra}
    dec = av.CodecContext.create("libvpx" if option.codec == "libvpx" else "h264", "r")
    cpu, dcpu, size, scores = 0.0, 0.0, 0, []
    for i, yuv in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = i
        started = time.thread_time() if option.threads == 1 else time.process_time()
        packets = enc.encode(frame)
        cpu += (time.thread_time() if option.threads == 1 else time.process_time()) - started
        for packet in packets:
            size += packet.size
            started = time.thread_time()
            decoded = dec.decode(packet)
            dcpu += time.thread_time() - started
            for out in decoded:
                scores.append(psnr(out.to_ndarray()[:HEIGHT], frames[len(scores)][:HEIGHT]))
    return {
        "option": option.name,
        "ms_per_frame": 1e3 * cpu / len(frames),
        "decode_ms_per_frame": 1e3 * dcpu / len(frames),
        "kbps": size * 8 * FPS / len(frames) / 1e3,
        "psnr_y": float(np.mean(scores[5:])) if len(scores) > 5 else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--bitrate", type=int, default=1_000_000, help="target bits/s (aiortc: 0.5-1.5 M)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per option; the fastest is kept")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    frames = clip(args.frames)
    rows = []
    for option in OPTIONS:
        runs = [run(option, frames, args.bitrate) for _ in range(args.repeat)]
        rows.append(min(runs, key=lambda r: r["ms_per_frame"]))
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"640x480 @ {FPS} fps, {args.bitrate / 1e6:.2f} Mbps target, {args.frames} frames")
    print("| option | encode ms/frame | decode ms/frame | kbit/s | Y-PSNR dB |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['option']} | {r['ms_per_frame']:.2f} | {r['decode_ms_per_frame']:.2f} "
            f"| {r['kbps']:.0f} | {r['psnr_y']:.2f} |"
        )


if __name__ == "__main__":
    main()
