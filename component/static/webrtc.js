// Browser side of the WebRTC component. Runs once per component instance (Gradio's
// js_on_load): `element`, `props`, `trigger`, `server` and `watch` come from Gradio.
//
// All connection state lives in this closure. Gradio re-renders the template whenever
// a prop changes (from Python, or when this code sets props.value) and the re-render
// wipes text and attributes the template does not produce, so the visible state is
// kept in `ui` and painted again after every change (`paint`), listeners are
// delegated on `element`, and streams are re-attached to the <video> nodes.
const find = (cls) => element.querySelector(cls);
// Gradio turns any quoted word in this file that matches an attribute lookup on the
// Python object into an event name, so the media kind is spelled without quotes.
const VIDEO_KIND = ['vid', 'eo'].join('');

// Every way a start can fail or a session can end, in words a user can act on.
// Keys: offer failure codes (protocol.ErrorCode), end reasons sent by the server on
// the data channel (session.close), and the page's own failures.
const MESSAGES = {
  // offer refused by the server
  concurrency_limit_reached: 'Server busy: every session slot is taken. Try again in a moment.',
  invalid_offer: 'The server could not accept this browser\u2019s connection offer.',
  offer_too_large: 'The connection offer was too large for the server.',
  connection_already_exists: 'This stream is already connected.',
  rate_limited: 'Too many connection attempts: wait a few seconds and press Start again.',
  unauthorized: 'Not authorised to stream: sign in again.',
  forbidden: 'Not allowed: this server refused the request.',
  no_media_port: 'Server busy: no network port is free for video right now. Try again in a moment.',
  offer_failed: 'Could not reach the server to start the stream.',
  // session ended by the server
  time_limit: 'Session ended: time limit reached.',
  connect_timeout: 'Could not connect to the server in time: the media path (UDP) is blocked. A TURN server may be needed.',
  connection_failed: 'Connection failed: the media path to the server broke.',
  connection_closed: 'Session ended: the connection was closed.',
  connection_lost: 'Connection lost.',
  client_gone: 'Session ended: the server stopped receiving video from this browser.',
  server_shutdown: 'Session ended: the server is restarting.',
  closed_by_server: 'Session ended by the server.',
  internal_error: 'Session ended: the server hit an internal error.',
  fn_returns_images: 'Session ended: this app\u2019s function returns images, which browser-drawn overlays (render="browser") cannot show. Use render="server" or return detections.',
  client_stop: 'Stopped.',
  stream_finished: 'Stream finished.',
  // the page's own failures
  ice_failed: 'Connection failed (ICE): no network path to the server. A TURN server may be needed.',
  ice_gathering_timeout: 'Network setup took too long.',
  permission_denied: 'Camera permission denied: allow the camera for this site and press Start again.',
  no_camera: 'No camera found.',
  camera_busy: 'The camera is in use by another application.',
  insecure_context: 'The camera needs a secure page: open this app over https (or on localhost).',
  unsupported: 'This browser does not support WebRTC.',
  error: 'Could not start the stream:',
  // relay-only ICE whose TURN server gave no relay address (see relayFailure)
  turn_unreachable: 'Could not reach the TURN relay server: no network path for the video. Try again later or ask the site\u2019s operator.',
  turn_refused: 'The TURN relay server refused this page\u2019s credentials (expired or wrong): reload the page and press Start again.',
  turn_credentials_failed: 'Could not get TURN relay credentials from the server.',
};
// Reasons that are a normal end rather than an error.
const ENDED = new Set(['time_limit', 'stream_finished', 'server_shutdown', 'closed_by_server', 'connection_closed', 'client_gone', 'client_stop']);

let pc = null, channel = null, localStream = null, remoteStream = null;
let connectedAt = null, connectTimer = null, uiTimer = null, statsTimer = null, pingTimer = null, tickTimer = null;
let lastFrames = null, lastStatsAt = null, rttMs = null, detections = null, fps = null, uploadCap = null;
let generation = 0, sessionId = null;
// What the page shows; painted onto the (re-renderable) DOM by `paint`.
const ui = { state: 'idle', reason: '', text: 'Press Start to stream your camera', countdown: '', stats: '' };

function paint() {
  const status = find('.rtc-status');
  if (status) {
    if (status.dataset.state !== ui.state) status.dataset.state = ui.state;
    if (status.dataset.reason !== ui.reason) status.dataset.reason = ui.reason;
    if (status.textContent !== ui.text) status.textContent = ui.text;
  }
  const button = find('.rtc-toggle');
  if (button) {
    const live = ui.state === 'starting' || ui.state === 'connecting' || ui.state === 'connected';
    const label = live ? 'Stop' : 'Start';
    if (button.textContent !== label) button.textContent = label;
    button.dataset.live = live ? '1' : '0';
  }
  const countdown = find('.rtc-countdown');
  if (countdown && countdown.textContent !== ui.countdown) countdown.textContent = ui.countdown;
  const stats = find('.rtc-stats');
  if (stats) {
    if (stats.textContent !== ui.stats) stats.textContent = ui.stats;
    if (overlayRate !== null) stats.dataset.dps = overlayRate.toFixed(1);
    if (overlayAgeMs !== null) stats.dataset.age = overlayAgeMs.toFixed(0);
    if (fps !== null) stats.dataset.fps = fps.toFixed(1);
    if (rttMs !== null) stats.dataset.rtt = rttMs.toFixed(0);
    if (detections !== null) stats.dataset.detections = String(detections);
    if (uploadCap !== null) stats.dataset.upload = String(uploadCap);
  }
  const remote = find('.rtc-remote');
  if (remote && remoteStream && remote.srcObject !== remoteStream) remote.srcObject = remoteStream;
  const local = find('.rtc-local');
  if (local && localStream && local.srcObject !== localStream) local.srcObject = localStream;
}

function setState(state, reason, text) {
  ui.state = state;
  ui.reason = reason || '';
  ui.text = text;
  paint();
}

function newId() {
  const a = new Uint8Array(8);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
}

function waitForIce(conn, timeoutMs) {
  if (conn.iceGatheringState === 'complete') return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    conn.addEventListener('icegatheringstatechange', () => {
      if (conn.iceGatheringState === 'complete') { clearTimeout(timer); resolve(true); }
    });
  });
}

function stripMdns(sdp) {
  // mDNS host names make the server resolve them by multicast; never send them.
  return sdp.split('\r\n').filter((l) => !(l.startsWith('a=candidate:') && / [^ ]+\.local /.test(l))).join('\r\n');
}

// The RTCConfiguration for this Start. With TURN REST the server mints short-lived
// TURN credentials for each Start (never in the page config).
async function iceConfiguration() {
  const base = props.rtc_configuration || { iceServers: [] };
  if (!props.ice_minted) return base;
  try {
    return await server.ice_configuration({});
  } catch (e) {
    console.error('webrtc: TURN credentials request failed', e);
    throw { code: 'turn_credentials_failed' };
  }
}

// Relay-only ICE without a relay candidate can never connect: name the cause (TURN
// down, or credentials refused) at once instead of waiting out the connect timeout.
// Returns a check to run once gathering is over: null, or the error to throw.
function relayFailure(conn, config) {
  const codes = [];
  conn.addEventListener('icecandidateerror', (ev) => codes.push(ev.errorCode));
  return () => {
    if (config.iceTransportPolicy !== 'relay') return null;
    const sdp = (conn.localDescription && conn.localDescription.sdp) || '';
    if (/ typ relay/.test(sdp)) return null;
    const refused = codes.some((c) => c === 401 || c === 403 || c === 431 || c === 437 || c === 441);
    return { code: refused ? 'turn_refused' : 'turn_unreachable', detail: codes.length ? '(TURN error ' + codes.join(', ') + ')' : '' };
  };
}

function clearTimers() {
  for (const t of [connectTimer, uiTimer, statsTimer, pingTimer, tickTimer]) { clearTimeout(t); clearInterval(t); }
  connectTimer = uiTimer = statsTimer = pingTimer = tickTimer = null;
}

// End the stream. No reason: the user pressed Stop. A reason: why it ended.
function stop(reason, detail) {
  generation += 1;
  clearTimers();
  stopOverlay();
  if (channel && channel.readyState === 'open' && !reason) {
    try { channel.send(JSON.stringify({ type: 'stop' })); } catch (e) { /* closing anyway */ }
  }
  if (pc) pc.close();
  pc = null; channel = null; connectedAt = null; sessionId = null;
  if (localStream) localStream.getTracks().forEach((t) => t.stop());
  localStream = null;
  ui.countdown = '';
  if (!reason) { setState('idle', '', 'Stopped'); return; }
  const text = (MESSAGES[reason] || ('Session ended: ' + reason)) + (detail ? ' ' + detail : '');
  setState(ENDED.has(reason) ? 'ended' : 'error', reason, text);
}

// The stream's extra inputs (e.g. a slider). Gradio's handler for their change
// applies them where its request lands; with several ingress replicas that may not be
// the session's. So the page also sends them on the session's own data channel, which
// always reaches it. The values come from the event's browser-side step (webrtc.py).
let inputs = null;
function sendInputs() {
  if (!inputs || inputs.id !== sessionId || !channel || channel.readyState !== 'open') return;
  try { channel.send(JSON.stringify({ type: 'inputs', values: inputs.values })); } catch (e) { /* closing */ }
}
window.addEventListener('rayrtc-inputs', (ev) => {
  const d = ev.detail || {};
  if (!Array.isArray(d.args) || d.args[d.index] !== sessionId || !sessionId) return;
  const values = d.args.filter((_, i) => i !== d.index);
  // Only JSON scalars travel this way (the server takes nothing else).
  if (!values.every((v) => v === null || ['string', 'number', 'boolean'].includes(typeof v))) return;
  inputs = { id: sessionId, values };
  sendInputs();
});

// --- render="browser": the server sends detections, this page draws them -------------
// The server sends no video back; each processed frame's detections arrive on the data
// channel (see component/overlay_channel.py) and are drawn on the overlay canvas over
// the local camera picture on every animation frame. Boxes are in the camera's own
// orientation: they are mirrored here together with the picture (mirror_webcam).
// An empty result does not wipe the boxes at once: a detector that misses a steady
// face in one frame must not blink its box off (the server render holds them too).
const OVERLAY_HOLD_MS = 400;  // a box stays this long after the last message with boxes...
const OVERLAY_FADE_MS = 300;  // ...then fades out over this long
const OVERLAY_COLOR = 'rgb(0, 255, 0)';  // the server's annotation colour
let overlay = null, overlayLoop = null, overlayTimes = [], overlayAgeMs = null, overlayRate = null, overlayCount = 0;

function browserRender() { return props.render_mode === 'browser'; }

function onDetections(msg) {
  if (!Array.isArray(msg.items)) return;
  const now = performance.now();
  if (msg.items.length || !overlay) overlay = { items: msg.items, at: now };
  overlayCount += 1;
  overlayTimes.push(now);
  while (overlayTimes.length && now - overlayTimes[0] > 2000) overlayTimes.shift();
  // Server time (frame arrival to message) plus the way back, half the round trip.
  if (typeof msg.age_ms === 'number') overlayAgeMs = msg.age_ms + (rttMs !== null ? rttMs / 2 : 0);
  detections = msg.items.length;
}

function overlayStats() {
  // Over the last 2 s, or since connecting when that is sooner.
  const now = performance.now(), span = Math.min(2000, now - (connectedAt === null ? now : connectedAt));
  overlayRate = span > 0 ? overlayTimes.filter((t) => now - t <= span).length / (span / 1000) : 0;
}

function drawOverlay() {
  const canvas = find('.rtc-overlay');
  const cam = find('.rtc-local');
  if (!canvas || !cam) return;
  // Re-renders wipe the canvas's size attributes: set them again whenever they differ.
  const dpr = window.devicePixelRatio || 1;
  const cw = Math.round(canvas.clientWidth * dpr), ch = Math.round(canvas.clientHeight * dpr);
  if (canvas.width !== cw || canvas.height !== ch) { canvas.width = cw; canvas.height = ch; }
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, canvas.width, canvas.height);
  const vw = cam.videoWidth, vh = cam.videoHeight;
  if (!overlay || !vw || !vh || !cw || !ch) return;
  const age = performance.now() - overlay.at;
  const alpha = age <= OVERLAY_HOLD_MS ? 1 : 1 - (age - OVERLAY_HOLD_MS) / OVERLAY_FADE_MS;
  if (alpha <= 0) return;
  // The picture is shown with object-fit: contain; this is its rectangle on the canvas.
  const scale = Math.min(cw / vw, ch / vh);
  const dw = vw * scale, dh = vh * scale, ox = (cw - dw) / 2, oy = (ch - dh) / 2;
  const line = Math.max(2, Math.round(Math.min(dw, dh) / 160));
  const fontPx = Math.max(11, Math.round(Math.min(dw, dh) / 30));
  g.globalAlpha = alpha;
  g.lineWidth = line;
  g.font = fontPx + 'px sans-serif';
  g.textBaseline = 'bottom';
  for (const item of overlay.items) {
    const b = item && item.box;
    if (!Array.isArray(b) || b.length !== 4) continue;
    const [x1, x2] = props.mirror_webcam ? [1 - b[2], 1 - b[0]] : [b[0], b[2]];
    const px = ox + x1 * dw, py = oy + b[1] * dh;
    g.strokeStyle = OVERLAY_COLOR;
    g.strokeRect(px, py, (x2 - x1) * dw, (b[3] - b[1]) * dh);
    // The label sits on a filled tab above the box (inside it at the top edge).
    const text = String(item.label) + ' ' + Number(item.score).toFixed(2);
    const tw = g.measureText(text).width + 6, th = fontPx + 4, ty = Math.max(py, th);
    g.fillStyle = OVERLAY_COLOR;
    g.fillRect(px - line / 2, ty - th, tw, th);
    g.fillStyle = '#000';
    g.fillText(text, px + 3, ty - 2);
  }
  g.globalAlpha = 1;
}

function startOverlay() {
  stopOverlay();
  const step = () => { drawOverlay(); overlayLoop = requestAnimationFrame(step); };
  overlayLoop = requestAnimationFrame(step);
}

function stopOverlay() {
  if (overlayLoop !== null) cancelAnimationFrame(overlayLoop);
  overlayLoop = null; overlay = null; overlayTimes = []; overlayAgeMs = null; overlayRate = null; overlayCount = 0;
  drawOverlay();  // clears the canvas
}

function onControl(ev) {
  let msg;
  try { msg = JSON.parse(ev.data); } catch (e) { return; }
  if (!msg || typeof msg !== 'object') return;
  if (msg.type === 'end') stop(msg.reason || 'closed_by_server');
  else if (msg.type === 'detections') onDetections(msg);
  else if (msg.type === 'pong') {
    if (typeof msg.t === 'number') rttMs = performance.now() - msg.t;
    if (typeof msg.detections === 'number') detections = msg.detections;
  } else if (msg.type === 'upload_cap' && typeof msg.max_fps === 'number' && pc) capUpload(pc, msg.max_fps);
}

function updateCountdown() {
  const limit = Number(props.time_limit);
  if (!limit || connectedAt === null) { ui.countdown = ''; return; }
  const left = Math.max(0, limit - (performance.now() - connectedAt) / 1000);
  ui.countdown = Math.ceil(left) + ' s left';
}

function statsText() {
  const parts = [];
  if (overlayRate !== null) parts.push(overlayRate.toFixed(overlayRate < 10 ? 1 : 0) + ' detections/s');
  if (overlayAgeMs !== null) parts.push(overlayAgeMs.toFixed(0) + ' ms old');
  if (fps !== null) parts.push(fps.toFixed(0) + ' fps');
  if (rttMs !== null) parts.push(rttMs.toFixed(0) + ' ms rtt');
  if (detections !== null) parts.push(detections + (detections === 1 ? ' detection' : ' detections'));
  return parts.join(' \u00b7 ');
}

async function sampleStats(conn) {
  const report = await conn.getStats();
  report.forEach((s) => {
    if (s.type !== 'inbound-rtp' || s.kind !== VIDEO_KIND) return;
    const now = performance.now();
    if (lastFrames !== null && now > lastStatsAt) fps = (s.framesDecoded - lastFrames) / ((now - lastStatsAt) / 1000);
    lastFrames = s.framesDecoded; lastStatsAt = now;
  });
}

function preferResolution(conn) {
  // A detector needs pixels more than frames: under congestion drop frames, keep size.
  for (const sender of conn.getSenders()) {
    if (!sender.track || sender.track.kind !== VIDEO_KIND) continue;
    const params = sender.getParameters();
    if (params.degradationPreference === 'maintain-resolution') continue;
    params.degradationPreference = 'maintain-resolution';
    sender.setParameters(params).catch((e) => console.warn('webrtc: degradationPreference not applied', e));
  }
}

// render="browser": the server says how many frames per second its detector can use
// (component/upload_rate.py). Cap the camera's sender there, and its bitrate in
// proportion so each frame keeps its bits; the picture on the page stays local.
const UPLOAD_BITS_PER_FRAME = 40000;

function capUpload(conn, maxFps) {
  const fpsCap = Math.max(1, Math.min(60, maxFps));
  for (const sender of conn.getSenders()) {
    if (!sender.track || sender.track.kind !== VIDEO_KIND) continue;
    const params = sender.getParameters();
    if (!params.encodings || !params.encodings.length) continue;
    params.encodings[0].maxFramerate = fpsCap;
    params.encodings[0].maxBitrate = Math.round(fpsCap * UPLOAD_BITS_PER_FRAME);
    sender.setParameters(params)
      .then(() => { uploadCap = fpsCap; })
      .catch((e) => console.warn('webrtc: upload cap not applied', e));
  }
}

function onConnected(conn) {
  clearTimeout(connectTimer);
  connectTimer = null;
  connectedAt = performance.now();
  lastFrames = null; fps = null; rttMs = null; detections = null; uploadCap = null;
  setState('connected', '', 'Connected');
  preferResolution(conn);
  if (browserRender()) startOverlay();
  // The reference component's `tick` event: once a second while streaming.
  tickTimer = setInterval(() => trigger('tick'), 1000);
  uiTimer = setInterval(() => { updateCountdown(); paint(); }, 250);
  updateCountdown();
  pingTimer = setInterval(() => {
    if (props.show_stats === false || !channel || channel.readyState !== 'open') return;
    try { channel.send(JSON.stringify({ type: 'ping', t: performance.now() })); } catch (e) { /* closing */ }
  }, 1000);
  statsTimer = setInterval(async () => {
    if (conn !== pc || props.show_stats === false) return;
    try { await sampleStats(conn); } catch (e) { return; }
    if (browserRender()) overlayStats();
    ui.stats = statsText();
    paint();
  }, 1000);
  paint();
}

async function openCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw { code: window.isSecureContext === false ? 'insecure_context' : 'unsupported' };
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: props.track_constraints || true, audio: false });
    for (const track of stream.getVideoTracks()) {
      // Hint "detail" also makes the encoder keep resolution over frame rate.
      if ('contentHint' in track) track.contentHint = 'detail';
    }
    return stream;
  } catch (e) {
    const name = e && e.name;
    if (name === 'NotAllowedError' || name === 'SecurityError') throw { code: 'permission_denied' };
    if (name === 'NotReadableError' || name === 'AbortError') throw { code: 'camera_busy' };
    throw { code: 'no_camera', detail: name === 'OverconstrainedError' ? '(no camera matches the requested constraints)' : '' };
  }
}

async function start() {
  const mine = ++generation;
  const mode = props.mode || 'send-receive';
  const stale = () => mine !== generation;
  try {
    if (typeof RTCPeerConnection === 'undefined') throw { code: 'unsupported' };
    if (mode !== 'receive') {
      setState('starting', '', 'Starting camera\u2026');
      const stream = await openCamera();
      if (stale()) { stream.getTracks().forEach((t) => t.stop()); return; }
      localStream = stream;
    }
    const config = await iceConfiguration();
    if (stale()) return;
    const conn = new RTCPeerConnection(config);
    const relayCheck = relayFailure(conn, config);
    pc = conn;
    remoteStream = new MediaStream();
    if (localStream) {
      for (const track of localStream.getTracks()) {
        conn.addTransceiver(track, {
          // render="browser": nothing comes back but data; the page draws.
          direction: mode === 'send' || browserRender() ? 'sendonly' : 'sendrecv',
          streams: [localStream],
        });
      }
    } else {
      conn.addTransceiver(VIDEO_KIND, { direction: 'recvonly' });
    }
    conn.addEventListener('track', (ev) => { if (conn === pc) { remoteStream.addTrack(ev.track); paint(); } });
    const ch = conn.createDataChannel('control');
    channel = ch;
    // Messages still in flight on a channel this page already let go (e.g. the
    // server's "end" in reply to our own "stop") must not touch the new state.
    ch.addEventListener('message', (ev) => { if (ch === channel) onControl(ev); });
    ch.addEventListener('open', () => { if (ch === channel) sendInputs(); });
    conn.addEventListener('connectionstatechange', () => {
      if (conn !== pc) return;
      const s = conn.connectionState;
      if (s === 'connected') {
        if (connectedAt === null) onConnected(conn);
        else setState('connected', '', 'Connected');
      } else if (s === 'disconnected') setState('connecting', 'disconnected', 'Connection unstable, reconnecting\u2026');
      else if (s === 'failed') stop(connectedAt === null ? 'ice_failed' : 'connection_failed');
    });
    setState('connecting', '', 'Connecting\u2026');
    paint();
    await conn.setLocalDescription(await conn.createOffer());
    const gathered = await waitForIce(conn, 5000);
    if (stale()) return;
    if (relayCheck()) throw relayCheck();
    if (!gathered && !conn.localDescription.sdp.includes('a=candidate')) throw { code: 'ice_gathering_timeout' };
    if (stale()) return;
    const webrtcId = newId();
    sessionId = webrtcId;
    let answer;
    try {
      answer = await server.offer({ sdp: stripMdns(conn.localDescription.sdp), type: 'offer', webrtc_id: webrtcId });
    } catch (e) {
      console.error('webrtc: offer request failed', e);
      throw { code: 'offer_failed' };
    }
    if (stale()) return;
    if (answer && answer.status === 'failed') {
      const meta = answer.meta || {};
      const code = meta.error || 'invalid_offer';
      let detail = '';
      if (code === 'concurrency_limit_reached' && meta.limit) detail = '(limit: ' + meta.limit + ' sessions)';
      if (code === 'rate_limited' && meta.retry_after_s) detail = '(retry in ' + Math.ceil(meta.retry_after_s) + ' s)';
      throw { code, detail };
    }
    // No answer at all (Gradio's client hands back nothing on an HTTP error).
    if (!answer || typeof answer.sdp !== 'string') throw { code: 'offer_failed' };
    await conn.setRemoteDescription({ sdp: answer.sdp, type: 'answer' });
    if (stale()) return;
    // The session's id is the component's value: events that take this component as
    // an input (e.g. the stream's extra inputs) reach the right session with it.
    props.value = webrtcId;
    // Setting props.value re-renders the template: paint the state back right after.
    setTimeout(paint, 0);
    // ICE that never completes (e.g. UDP blocked) ends here rather than hanging, after
    // the server's own connect_timeout (a prop: set by webrtc_stream, which answered).
    const limitS = Number(props.connect_timeout);
    if (limitS > 0) {
      connectTimer = setTimeout(() => { if (conn === pc && connectedAt === null) stop('connect_timeout'); }, limitS * 1000);
    }
  } catch (e) {
    if (stale()) return;
    if (e && e.code) { stop(e.code, e.detail); return; }
    console.error('webrtc: start failed', e);
    stop('error', e && e.message ? e.message : String(e));
  }
}

element.addEventListener('click', (ev) => {
  const button = ev.target.closest('.rtc-toggle');
  if (!button) return;
  if (ui.state === 'starting' || ui.state === 'connecting' || ui.state === 'connected') stop(); else start();
});
// After a re-render caused by Python (gr.update), restore what the template wiped.
watch(['value', 'label', 'visible', 'height', 'width', 'mirror_webcam', 'mode', 'render_mode', 'show_stats', 'time_limit',
  'track_constraints', 'rtc_configuration', 'connect_timeout'], paint);
// A read-only handle for tests and debugging (e.g. `getStats()` from the console).
element.rtc = Object.freeze({
  get pc() { return pc; },
  get state() { return ui.state; },
  get reason() { return ui.reason; },
  // render="browser": detections messages received this session, and the latest.
  get overlay() { return { received: overlayCount, latest: overlay && { items: overlay.items, at: overlay.at } }; },
});
// A tab that goes away ends its session at once instead of leaving it to time out.
window.addEventListener('pagehide', () => { if (pc) stop(); });
paint();
