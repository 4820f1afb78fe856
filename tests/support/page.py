"""Driving the component's page in Chromium (Playwright async API): helpers injected
into the page, and waits that run inside it, each with its own deadline (Playwright's
`evaluate` has none)."""

from __future__ import annotations

import json
import time

JS_HELPERS = r"""
// Record what the page sends on its data channels.
window.__rtcSent = [];
const __send = RTCDataChannel.prototype.send;
RTCDataChannel.prototype.send = function (data) {
  if (typeof data === 'string') window.__rtcSent.push(data);
  return __send.call(this, data);
};
window.__rtcTest = {
  root(id) { return document.querySelector('#' + id + ' .rtc-root').parentElement; },
  async waitFor(check, timeoutMs, what) {
    const end = performance.now() + timeoutMs;
    let last;
    while (performance.now() < end) {
      last = await check();
      if (last) return last;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('timed out after ' + timeoutMs + ' ms waiting for ' + what + ' (last: ' + JSON.stringify(last) + ')');
  },
  async inbound(pc) {
    let found = null;
    (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'vid' + 'eo') found = s; });
    return found;
  },
  async outbound(pc) {
    let found = null;
    (await pc.getStats()).forEach((s) => { if (s.type === 'outbound-rtp' && s.kind === 'vid' + 'eo') found = s; });
    return found;
  },
  // Decoded frames per second of the remote video, from getStats, over `ms`.
  async fps(id, ms) {
    const pc = this.root(id).rtc.pc;
    const a = await this.inbound(pc), t0 = performance.now();
    await new Promise((r) => setTimeout(r, ms));
    const b = await this.inbound(pc), t1 = performance.now();
    return { fps: (b.framesDecoded - a.framesDecoded) / ((t1 - t0) / 1000), width: b.frameWidth, height: b.frameHeight };
  },
  // Annotation-green pixels of the displayed remote frame, inside `box` (its edges,
  // +-slack px) and outside it; box in camera pixels.
  green(id, box, slack) {
    const v = document.querySelector('#' + id + ' .rtc-remote');
    if (!v.videoWidth) return null;
    const c = document.createElement('canvas');
    c.width = v.videoWidth; c.height = v.videoHeight;
    const g = c.getContext('2d', { willReadFrequently: true });
    g.drawImage(v, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    const [x1, y1, x2, y2] = box;
    let near = 0, far = 0;
    for (let y = 0; y < c.height; y += 1) {
      for (let x = 0; x < c.width; x += 1) {
        const i = (y * c.width + x) * 4;
        if (!(d[i + 1] > 170 && d[i] < 110 && d[i + 2] < 110)) continue;
        const inBand = x >= x1 - slack && x <= x2 + slack && y >= y1 - slack - 40 && y <= y2 + slack;
        if (inBand) near += 1; else far += 1;
      }
    }
    // Left edge coverage: rows of the box's left edge with green within +-slack.
    let rows = 0, hit = 0;
    for (let y = y1 + 10; y < y2 - 10; y += 4) {
      rows += 1;
      for (let x = Math.max(0, x1 - slack); x <= x1 + slack; x += 1) {
        const i = (y * c.width + x) * 4;
        if (d[i + 1] > 170 && d[i] < 110 && d[i + 2] < 110) { hit += 1; break; }
      }
    }
    return { near, far, edge: rows ? hit / rows : 0, width: c.width, height: c.height };
  },
  // render="browser": annotation-green pixels on the overlay canvas inside `box` (camera
  // fractions, mapped the way the page shows its camera: contained, mirrored when the
  // picture is) and outside it, and the coverage of the box's left edge as shown.
  overlay(id, box, slack) {
    const root = document.querySelector('#' + id);
    const c = root.querySelector('.rtc-overlay'), v = root.querySelector('.rtc-local');
    if (!c.width || !c.height || !v.videoWidth) return null;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const s = Math.min(c.width / v.videoWidth, c.height / v.videoHeight);
    const dw = v.videoWidth * s, dh = v.videoHeight * s, ox = (c.width - dw) / 2, oy = (c.height - dh) / 2;
    const mirror = getComputedStyle(v).transform !== 'none';
    const [fx1, fx2] = mirror ? [1 - box[2], 1 - box[0]] : [box[0], box[2]];
    const x1 = Math.round(ox + fx1 * dw), x2 = Math.round(ox + fx2 * dw);
    const y1 = Math.round(oy + box[1] * dh), y2 = Math.round(oy + box[3] * dh);
    const green = (i) => d[i + 3] > 128 && d[i + 1] > 170 && d[i] < 110 && d[i + 2] < 110;
    let near = 0, far = 0;
    for (let y = 0; y < c.height; y += 1) {
      for (let x = 0; x < c.width; x += 1) {
        if (!green((y * c.width + x) * 4)) continue;
        // The label tab sits above the box's top edge.
        if (x >= x1 - slack && x <= x2 + slack && y >= y1 - slack - 50 && y <= y2 + slack) near += 1; else far += 1;
      }
    }
    let rows = 0, hit = 0;
    for (let y = y1 + 10; y < y2 - 10; y += 4) {
      rows += 1;
      for (let x = Math.max(0, x1 - slack); x <= x1 + slack; x += 1) if (green((y * c.width + x) * 4)) { hit += 1; break; }
    }
    return { near, far, edge: rows ? hit / rows : 0, mirror, box: [x1, y1, x2, y2] };
  },
};
"""


async def page_wait(page, check_js: str, timeout_s: float, what: str, arg=None):
    """Poll `check_js` (an expression over `arg`, may be async) inside the page."""
    fn = f"""async (arg) => window.__rtcTest.waitFor(async () => {{ return ({check_js}); }},
                                                     {int(timeout_s * 1000)}, {json.dumps(what)})"""
    return await page.evaluate(fn, arg)


async def fps_reaching(page, elem_id: str, floor: float, window_ms: int = 3000, windows: int = 3) -> dict:
    """The displayed video's fps over `window_ms`, measured again (up to `windows`
    times) until one window reaches `floor`: a condition waited on, not one sample,
    so a busy moment on a small shared machine does not decide it. Returns the best
    window (the caller asserts on it)."""
    best = None
    for _ in range(windows):
        measured = await page.evaluate(f"window.__rtcTest.fps({json.dumps(elem_id)}, {int(window_ms)})")
        if best is None or measured["fps"] > best["fps"]:
            best = measured
        if measured["fps"] >= floor:
            break
    return best


async def status(page, elem_id: str) -> dict:
    return await page.evaluate(
        """(id) => { const s = document.querySelector('#' + id + ' .rtc-status');
                     return { state: s.dataset.state, reason: s.dataset.reason || '', text: s.textContent }; }""",
        elem_id,
    )


async def wait_state(page, elem_id: str, state: str, timeout_s: float) -> dict:
    from playwright.async_api import Error as PlaywrightError

    try:
        await page_wait(
            page,
            f"document.querySelector('#{elem_id} .rtc-status').dataset.state === {json.dumps(state)}",
            timeout_s,
            f"#{elem_id} to be {state}",
        )
    except PlaywrightError as exc:
        raise AssertionError(f"#{elem_id} not {state} after {timeout_s} s: {await status(page, elem_id)}") from exc
    return await status(page, elem_id)


async def new_page(context, url: str):
    page = await context.new_page()
    await page.add_init_script(JS_HELPERS)
    page.on("console", lambda m: m.type == "error" and print(f"[page console] {m.text}"))
    await page.goto(url)
    await page.wait_for_selector(".rtc-toggle", timeout=20_000)
    return page


async def start(page, elem_id: str = "webrtc") -> float:
    """Press Start; returns seconds from the click to `connected`."""
    t0 = time.monotonic()
    await page.click(f"#{elem_id} .rtc-toggle")
    await wait_state(page, elem_id, "connected", 20)
    return time.monotonic() - t0


async def set_slider(page, value: float) -> None:
    box = page.locator("#threshold input[type=number]")
    await box.fill(str(value))
    await box.press("Enter")
