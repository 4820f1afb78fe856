// Browser side of the WebRTC component. Runs once per component instance (Gradio's
// js_on_load): `element`, `props`, `trigger`, `server` and `watch` come from Gradio.
// All connection state lives in this closure; the DOM may be re-rendered by Gradio at
// any time, so nodes are always looked up again and listeners are delegated.
const find = (cls) => element.querySelector(cls);
// Gradio turns any quoted word in this file that is not an attribute into an event
// name on the Python object, so the media kind is spelled without quotes.
const VIDEO_KIND = ['vid', 'eo'].join('');
const MESSAGES = {
  concurrency_limit_reached: 'Server busy: every session slot is taken. Try again in a moment.',
  invalid_offer: 'The server could not accept this browser\u2019s connection offer.',
  offer_too_large: 'The connection offer was too large for the server.',
  connection_already_exists: 'This stream is already connected.',
  time_limit: 'Session ended: time limit reached.',
  connect_timeout: 'Could not connect to the server in time (ICE).',
  connection_failed: 'Connection failed (ICE): the media path to the server is blocked.',
  connection_lost: 'Connection lost.',
  server_shutdown: 'Session ended: the server is restarting.',
  permission_denied: 'Camera permission denied: allow the camera and press Start again.',
  no_camera: 'No camera found.',
  ice_gathering_timeout: 'Network setup took too long.',
};
let pc = null, channel = null, localStream = null, remoteStream = null;
let startedAt = null, countdownTimer = null, statsTimer = null, pingTimer = null;
let lastFrames = null, lastStatsAt = null, rttMs = null, detections = null;
let state = 'idle';

function setState(next, detail) {
  state = next;
  const box = find('.rtc-status');
  if (box) {
    box.dataset.state = next;
    box.textContent = detail || next;
  }
  const button = find('.rtc-toggle');
  if (button) {
    const live = next === 'connecting' || next === 'connected';
    button.textContent = live ? 'Stop' : 'Start';
    button.dataset.live = live ? '1' : '0';
  }
}

function attachStreams() {
  const remote = find('.rtc-remote');
  if (remote && remoteStream && remote.srcObject !== remoteStream) remote.srcObject = remoteStream;
  const local = find('.rtc-local');
  if (local && localStream && local.srcObject !== localStream) local.srcObject = localStream;
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

function stop(reason) {
  clearInterval(countdownTimer); clearInterval(statsTimer); clearInterval(pingTimer);
  countdownTimer = statsTimer = pingTimer = null;
  if (channel && channel.readyState === 'open' && !reason) {
    try { channel.send(JSON.stringify({ type: 'stop' })); } catch (e) { /* closing anyway */ }
  }
  if (pc) pc.close();
  pc = null; channel = null;
  if (localStream) localStream.getTracks().forEach((t) => t.stop());
  localStream = null;
  const countdown = find('.rtc-countdown');
  if (countdown) countdown.textContent = '';
  if (reason) setState(reason === 'time_limit' ? 'ended' : 'error', MESSAGES[reason] || ('Session ended: ' + reason));
  else setState('idle', 'Stopped');
}

function onControl(ev) {
  let msg;
  try { msg = JSON.parse(ev.data); } catch (e) { return; }
  if (msg.type === 'end') stop(msg.reason || 'ended');
  else if (msg.type === 'pong' && typeof msg.t === 'number') rttMs = performance.now() - msg.t;
  else if (msg.type === 'stats' && typeof msg.detections === 'number') detections = msg.detections;
}

function startCountdown() {
  const limit = Number(props.time_limit);
  startedAt = performance.now();
  if (!limit) return;
  countdownTimer = setInterval(() => {
    const left = Math.max(0, limit - (performance.now() - startedAt) / 1000);
    const node = find('.rtc-countdown');
    if (node) node.textContent = left.toFixed(0) + ' s left';
  }, 250);
}

function startStats() {
  if (props.show_stats === false) return;
  pingTimer = setInterval(() => {
    if (channel && channel.readyState === 'open') channel.send(JSON.stringify({ type: 'ping', t: performance.now() }));
  }, 1000);
  statsTimer = setInterval(async () => {
    if (!pc) return;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp' || s.kind !== VIDEO_KIND) return;
      const now = performance.now();
      let fps = 0;
      if (lastFrames !== null) fps = (s.framesDecoded - lastFrames) / ((now - lastStatsAt) / 1000);
      lastFrames = s.framesDecoded; lastStatsAt = now;
      const node = find('.rtc-stats');
      if (node) {
        node.dataset.fps = fps.toFixed(1);
        node.textContent = fps.toFixed(1) + ' fps' + (rttMs === null ? '' : ' \u00b7 ' + rttMs.toFixed(0) + ' ms rtt') +
          (detections === null ? '' : ' \u00b7 ' + detections + ' detections');
      }
    });
  }, 1000);
}

async function start() {
  const mode = props.mode || 'send-receive';
  setState('connecting', 'Starting camera\u2026');
  try {
    if (mode !== 'receive') {
      try {
        localStream = await navigator.mediaDevices.getUserMedia({ video: props.track_constraints || true, audio: false });
      } catch (e) {
        stop(e && e.name === 'NotAllowedError' ? 'permission_denied' : 'no_camera');
        return;
      }
    }
    pc = new RTCPeerConnection(props.rtc_configuration || { iceServers: [] });
    const conn = pc;
    remoteStream = new MediaStream();
    if (localStream) {
      for (const track of localStream.getTracks()) {
        const sender = conn.addTrack(track, localStream);
        const params = sender.getParameters();
        params.degradationPreference = 'maintain-resolution';
        sender.setParameters(params).catch(() => {});
      }
      if (mode === 'send') conn.getTransceivers().forEach((t) => { t.direction = 'sendonly'; });
    } else {
      conn.addTransceiver(VIDEO_KIND, { direction: 'recvonly' });
    }
    conn.addEventListener('track', (ev) => { remoteStream.addTrack(ev.track); attachStreams(); });
    channel = conn.createDataChannel('control');
    channel.addEventListener('message', onControl);
    conn.addEventListener('connectionstatechange', () => {
      if (conn !== pc) return;
      if (conn.connectionState === 'connected') { setState('connected', 'Connected'); startCountdown(); startStats(); }
      else if (conn.connectionState === 'failed') stop('connection_failed');
    });
    attachStreams();
    setState('connecting', 'Connecting\u2026');
    await conn.setLocalDescription(await conn.createOffer());
    if (!(await waitForIce(conn, 5000)) && !conn.localDescription.sdp.includes('a=candidate')) {
      stop('ice_gathering_timeout');
      return;
    }
    const webrtcId = newId();
    const answer = await server.offer({ sdp: stripMdns(conn.localDescription.sdp), type: 'offer', webrtc_id: webrtcId });
    if (conn !== pc) return;
    if (!answer || answer.status === 'failed') {
      const code = answer && answer.meta ? answer.meta.error : 'invalid_offer';
      stop(code);
      return;
    }
    await conn.setRemoteDescription({ sdp: answer.sdp, type: 'answer' });
    props.value = webrtcId;
  } catch (e) {
    console.error('webrtc start failed', e);
    stop('error: ' + (e && e.message ? e.message : e));
  }
}

element.addEventListener('click', (ev) => {
  const button = ev.target.closest('.rtc-toggle');
  if (!button) return;
  if (state === 'connecting' || state === 'connected') stop(); else start();
});
watch(['value', 'mirror_webcam', 'height', 'width'], attachStreams);
setState('idle', 'Press Start to stream your camera');
