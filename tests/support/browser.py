"""Real-browser test plumbing: a fake camera file, a network namespace for Chromium,
a TCP forwarder into it, and the Chromium launch.

Why a namespace: Chromium never gathers loopback ICE candidates, so on the host it
would stream over the machine's real interface. Here Chromium runs inside a network
namespace (`tests.support.netns.Netns`), joined to the host by a veth pair with private
addresses nobody else uses; the namespace has no default route, so nothing Chromium
does can leave the pair. The Serve HTTP proxy stays on 127.0.0.1 and a tiny forwarder
on the host end of the pair carries the page's HTTP to it; the ingress gathers its ICE
candidates on the host end, so all media also stays on the pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
from pathlib import Path
from typing import AsyncIterator, Optional, Sequence

import cv2
import numpy as np

from tests.support.netns import Netns, unavailable_reason

CHROMIUM = "/usr/bin/chromium"

CAMERA_SIZE = (640, 480)  # width, height of the fake camera
CAMERA_FPS = 30


def camera_image(photo_bgr: np.ndarray, size: tuple[int, int] = CAMERA_SIZE) -> np.ndarray:
    """`photo_bgr` scaled to the camera's height and centred on a grey frame (the
    aspect ratio kept, so a face detector sees the same face)."""
    w, h = size
    ph, pw = photo_bgr.shape[:2]
    scale = min(w / pw, h / ph)
    sw, sh = round(pw * scale), round(ph * scale)
    frame = np.full((h, w, 3), 96, np.uint8)
    x0, y0 = (w - sw) // 2, (h - sh) // 2
    frame[y0 : y0 + sh, x0 : x0 + sw] = cv2.resize(photo_bgr, (sw, sh), interpolation=cv2.INTER_AREA)
    return frame


def write_y4m(path: Path, frame_bgr: np.ndarray, frames: int = 1, fps: int = CAMERA_FPS) -> Path:
    """A YUV4MPEG2 (I420) file Chromium's fake camera loops over."""
    h, w = frame_bgr.shape[:2]
    if w % 2 or h % 2:
        raise ValueError("I420 needs even width and height")
    i420 = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2YUV_I420).tobytes()
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n")
            f.write(i420)
    return path


def netns_unavailable_reason() -> Optional[str]:
    """Why browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    return unavailable_reason()


class TcpForwarder:
    """Accepts on (listen_host, listen_port) and pipes each connection to target,
    on its own event loop thread."""

    def __init__(self, listen_host: str, target_host: str, target_port: int) -> None:
        self.listen_host = listen_host
        self.target = (target_host, target_port)
        self.port: Optional[int] = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-forwarder", daemon=True)
        self._server: Optional[asyncio.AbstractServer] = None

    def start(self) -> "TcpForwarder":
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def chromium_wrapper(netns: Netns, directory: Path) -> Path:
    """An executable that starts Chromium inside `netns` (Playwright's pipe fds pass
    through `ip netns exec`)."""
    path = directory / "chromium-in-netns"
    path.write_text(f'#!/bin/sh\nexec ip netns exec {netns.name} {CHROMIUM} "$@"\n')
    path.chmod(0o755)
    return path


def chromium_args(camera_file: Path, secure_origins: Sequence[str] = (), fake_ui: bool = True) -> list[str]:
    """Flags for a quiet, test-only Chromium with a fake camera playing `camera_file`.

    `fake_ui` auto-accepts the camera prompt; without it prompts are denied, as a user
    who refuses the camera would.
    """
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream" if fake_ui else "--deny-permission-prompts",
        f"--use-fake-device-for-media-stream=fps={CAMERA_FPS}",
        f"--use-file-for-fake-video-capture={camera_file}",
        # Headless tabs in the background must keep their timers and video running.
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        "--autoplay-policy=no-user-gesture-required",
    ]
    if secure_origins:
        # getUserMedia exists only in secure contexts (https, localhost); the page is
        # served over plain http on the veth address.
        args.append("--unsafely-treat-insecure-origin-as-secure=" + ",".join(secure_origins))
    return args


@contextlib.asynccontextmanager
async def browser_context(
    playwright, netns: Netns, camera_file: Path, secure_origins: Sequence[str] = (),
    fake_ui: bool = True, **kwargs,
) -> AsyncIterator:
    """A persistent Chromium context (Playwright async API) on a fresh profile, inside
    `netns`."""
    with tempfile.TemporaryDirectory(prefix="rtc-chromium-") as tmp:
        tmp_path = Path(tmp)
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(chromium_wrapper(netns, tmp_path)),
            headless=True,
            args=chromium_args(camera_file, secure_origins, fake_ui),
            viewport={"width": 1000, "height": 900},
            **kwargs,
        )
        try:
            yield context
        finally:
            await context.close()
