// The voxloop page: controls, state, meters, transcript, latency and session
// panels. The protocol lives in signaling.js; this module only renders what a
// Call reports and turns clicks and keys into Call methods.
import { Call, signalingUrl } from "./signaling.js";
import { LevelMeter, meterFraction } from "./levels.js";

const $ = (id) => document.getElementById(id);

const STATE_TEXT = {
  idle: "Not connected",
  connecting: "Connecting…",
  listening: "Listening",
  user_speaking: "You are speaking",
  thinking: "Thinking…",
  speaking: "Speaking",
  error: "Not connected",
};

// What a person can do about each failure.
const ERROR_TEXT = {
  mic_denied: () =>
    "Microphone access was blocked. Allow the microphone for this page (the icon at the left of the " +
    "address bar), then press Try again, or connect without a microphone and type your messages.",
  no_mic: (m) =>
    `No microphone could be opened (${m}). Plug one in or close the program using it, then press Try again, ` +
    "or connect without a microphone and type.",
  insecure: () =>
    "This browser offers the microphone only to https:// pages and to http://localhost. Open the page " +
    "that way, or connect without a microphone and type.",
  auth: (m) => `This server needs a join link (${m}). Ask for a new link: voxloop token --url.`,
  unreachable: (m) =>
    `Cannot reach the voxloop server (${m}). Check that "voxloop serve" is running, then press Try again.`,
  busy: (m) => `The server is busy: every conversation slot is taken (${m}). Try again in a minute.`,
  ice_failed: (m) =>
    `The audio connection could not be set up (${m}). If the server runs on another machine, it must ` +
    "offer an address this browser can reach: set VOXLOOP_RTC_BIND (see Troubleshooting in the README).",
  refused: (m) => `The server refused the call (${m}). Press Try again.`,
  lost: (m) => `The connection to the server was lost (${m}). Press Try again to reconnect (the session id is kept, so prompts sent meanwhile still arrive).`,
};
const MIC_ERRORS = new Set(["mic_denied", "no_mic", "insecure"]);

// A join link (`voxloop token --url`) carries a token in its fragment, which
// never reaches a server log: keep it for this tab, then take it out of the
// address bar so it is not shared by copying the URL.
const joinToken = (() => {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("voxloop.token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("voxloop.token");
})();

const ui = {
  call: null,
  resumeId: null, // the last session id, reused when reconnecting after a failure
  opening: false, // between the click and the Call's creation (asking for the microphone)
  mic: null,
  audio: null, // AudioContext, made on the first click (autoplay rules)
  micMeter: null,
  assistantMeter: null,
  muted: false,
  state: "idle",
  error: null, // {code, message}
  conversation: 0, // counts calls, so turn numbers of different sessions do not mix
  entries: [], // transcript entries, in display order
  byKey: new Map(),
  lastTimings: null,
  interruptions: 0, // barge_in events seen
  lastStats: null,
  statsTimer: 0,
  frame: 0,
};

// ---------------------------------------------------------------- state

function setState(state) {
  ui.state = state;
  const el = $("state");
  el.dataset.state = state;
  $("state-text").textContent = (STATE_TEXT[state] || state) + (ui.call && ui.muted ? " (microphone muted)" : "");
}

function showError(code, detail) {
  ui.error = { code, message: detail };
  const text = (ERROR_TEXT[code] || ((m) => m))(detail);
  $("alert").dataset.error = code;
  $("alert-text").textContent = text;
  $("listen-only").hidden = !MIC_ERRORS.has(code);
  $("alert").hidden = false;
  setState("error");
}

// A refused WebSocket upgrade looks like an unreachable server to a page;
// /healthz says whether the server wants a join token.
async function explainUnreachable(err) {
  let auth = false;
  try {
    const r = await fetch("/healthz");
    auth = r.ok && (await r.json()).auth === true;
  } catch (_) { /* the server is really unreachable */ }
  if (auth) showError("auth", joinToken ? "the join link was refused (expired, or for another server)" : "no join link was used");
  else showError(err.code, err.message);
}

function clearError() {
  ui.error = null;
  $("alert").hidden = true;
  delete $("alert").dataset.error;
}

function setConnectedControls(live) {
  const button = $("connect");
  button.textContent = live ? "Hang up" : "Connect";
  button.classList.toggle("hangup", live);
  button.classList.toggle("primary", !live);
  $("mute").disabled = !live || !ui.mic;
  $("say-text").disabled = !live;
  $("say-send").disabled = !live;
}

// ---------------------------------------------------------------- call

async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw { code: "insecure", message: "no navigator.mediaDevices" };
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (e) {
    const denied = e.name === "NotAllowedError" || e.name === "SecurityError";
    throw { code: denied ? "mic_denied" : "no_mic", message: `${e.name}: ${e.message}` };
  }
}

async function connect({ microphone = true } = {}) {
  if (ui.call || ui.opening) return;
  ui.opening = true;
  try {
    await open(microphone);
  } finally {
    ui.opening = false;
  }
}

async function open(microphone) {
  clearError();
  setState("connecting");
  setConnectedControls(true);
  if (!ui.audio) ui.audio = new AudioContext();
  ui.audio.resume().catch(() => {});
  if (microphone) {
    try {
      ui.mic = await openMicrophone();
    } catch (e) {
      setConnectedControls(false);
      showError(e.code, e.message);
      return;
    }
    ui.micMeter = new LevelMeter(ui.audio, ui.mic);
  }
  ui.muted = false;
  $("mute").setAttribute("aria-pressed", "false");
  $("mute").textContent = "Mute microphone";
  ui.conversation += 1;
  // After a lost connection, ask for the same session id: prompts sent to it
  // meanwhile are still delivered (the server waits for a reconnect).
  const call = new Call(signalingUrl(location), ui.mic, ui.resumeId, joinToken);
  ui.call = call;
  setConnectedControls(true);
  call.addEventListener("session", (ev) => {
    ui.resumeId = ev.detail.id;
    $("info-session").textContent = ev.detail.id;
    addSystem(`Connected, session ${ev.detail.id.slice(0, 8)}${ui.mic ? "" : " (no microphone)"}`);
  });
  call.addEventListener("track", (ev) => {
    const audio = $("remote");
    audio.srcObject = ev.detail.stream;
    audio.play().catch(() => {});
    // Chromium feeds a remote stream to Web Audio only while a media element plays it.
    if (ui.assistantMeter) ui.assistantMeter.disconnect();
    ui.assistantMeter = new LevelMeter(ui.audio, ev.detail.stream);
  });
  call.addEventListener("connected", () => {
    if (ui.call !== call) return;
    if (ui.state === "connecting") setState("listening");
    ui.statsTimer = setInterval(refreshStats, 1000);
    refreshStats();
  });
  call.addEventListener("interrupted", (ev) => onInterrupted(ev.detail.turn));
  call.addEventListener("message", (ev) => onServerEvent(ev.detail));
  call.addEventListener("warning", (ev) => console.warn("voxloop:", ev.detail.code, ev.detail.message));
  call.addEventListener("end", (ev) => {
    if (ui.call !== call) return;
    const err = ev.detail.error;
    // A hang-up starts the next call fresh; so does an id the server refused.
    if (!err || err.serverCode === "session_in_use") ui.resumeId = null;
    teardown(err);
    if (err && err.code === "unreachable") explainUnreachable(err);
    else if (err) showError(err.code, err.message);
  });
  startMeters();
  // Failures arrive as the "end" event above.
  call.start().catch(() => {});
}

function hangup() {
  if (ui.call) ui.call.hangup();
}

function teardown(error) {
  if (ui.call && ui.call.sessionId) addSystem(error ? `Call ended: ${error.message}` : "Call ended");
  ui.call = null;
  clearInterval(ui.statsTimer);
  cancelAnimationFrame(ui.frame);
  for (const m of [ui.micMeter, ui.assistantMeter]) if (m) m.disconnect();
  ui.micMeter = ui.assistantMeter = null;
  if (ui.mic) ui.mic.getTracks().forEach((t) => t.stop());
  ui.mic = null;
  $("remote").srcObject = null;
  drawLevel("mic-level", 0);
  drawLevel("assistant-level", 0);
  // The session id stays (for reports); the live facts go.
  for (const id of ["info-codec", "info-rtt", "info-path"]) $(id).textContent = "–";
  for (const e of ui.entries) if (e.streaming) { e.streaming = false; render(e); }
  setConnectedControls(false);
  setState("idle");
}

function toggleMute() {
  if (!ui.call || !ui.mic) return;
  ui.muted = !ui.muted;
  ui.mic.getAudioTracks().forEach((t) => { t.enabled = !ui.muted; });
  $("mute").setAttribute("aria-pressed", String(ui.muted));
  $("mute").textContent = ui.muted ? "Unmute microphone" : "Mute microphone";
  setState(ui.state);
}

// ---------------------------------------------------------------- meters and stats

function drawLevel(id, rms) {
  const f = meterFraction(rms);
  const el = $(id);
  el.querySelector(".fill").style.transform = `scaleX(${f.toFixed(3)})`;
  el.setAttribute("aria-valuenow", String(Math.round(f * 100)));
}

const micLevel = () => (ui.micMeter && !ui.muted ? ui.micMeter.rms() : 0);
const assistantLevel = () => (ui.assistantMeter ? ui.assistantMeter.rms() : 0);

function startMeters() {
  const tick = () => {
    drawLevel("mic-level", micLevel());
    drawLevel("assistant-level", assistantLevel());
    ui.frame = requestAnimationFrame(tick);
  };
  cancelAnimationFrame(ui.frame);
  ui.frame = requestAnimationFrame(tick);
}

async function refreshStats() {
  const call = ui.call;
  if (!call) return;
  const s = await call.stats().catch(() => null);
  if (!s || ui.call !== call) return;
  ui.lastStats = s;
  if (s.codec) {
    const name = (s.codec.mimeType || "").replace(/^audio\//, "");
    const ch = s.codec.channels ? `, ${s.codec.channels} ch` : "";
    $("info-codec").textContent = `${name} ${s.codec.clockRate / 1000} kHz${ch}`;
  }
  // Chromium reports whole milliseconds: 0 on loopback.
  $("info-rtt").textContent = s.rttMs === null ? "–" : s.rttMs < 1 ? "< 1 ms" : `${s.rttMs.toFixed(0)} ms`;
  $("info-path").textContent = s.local && s.remote ? `${s.local}\n⇄ ${s.remote}` : "–";
}

// ---------------------------------------------------------------- transcript

function key(role, turn) {
  return `${ui.conversation}:${role}:${turn}`;
}

function entry(role, turn, init = {}) {
  const k = turn === null || turn === undefined ? null : key(role, turn);
  let e = k && ui.byKey.get(k);
  if (!e) {
    e = { role, turn, text: "", streamed: "", heard: null, final: false, streaming: false,
          proactive: false, interrupted: false, typed: false, busy: false, timings: null, ...init };
    e.li = document.createElement("li");
    ui.entries.push(e);
    if (k) ui.byKey.set(k, e);
    const list = $("transcript");
    list.append(e.li);
    $("empty").hidden = true;
  }
  return e;
}

function addSystem(text) {
  const e = entry("system", null, { text, final: true });
  render(e);
}

const normalized = (s) => s.toLowerCase().replace(/[^\p{L}\p{N}]+/gu, " ").trim();

function render(e) {
  const li = e.li;
  li.className = `msg ${e.role}` + (e.proactive ? " proactive" : "");
  li.dataset.role = e.role;
  if (e.turn !== null && e.turn !== undefined) li.dataset.turn = String(e.turn);
  li.dataset.proactive = String(e.proactive);
  li.dataset.interrupted = String(e.interrupted);
  li.setAttribute("aria-busy", String(e.streaming));
  li.replaceChildren();
  if (e.role === "system") {
    li.textContent = e.text;
    return;
  }
  const who = document.createElement("div");
  who.className = "who";
  who.append(e.role === "user" ? "You" : "Assistant");
  const badge = (cls, text) => {
    const b = document.createElement("span");
    b.className = `badge ${cls}`;
    b.textContent = text;
    who.append(b);
  };
  if (e.typed) badge("typed", "typed");
  if (e.proactive) badge("proactive", "proactive");
  if (e.busy) badge("busy", "busy");
  if (e.interrupted) badge("interrupted", "interrupted");
  const p = document.createElement("p");
  p.className = "text";
  if (e.interrupted) {
    // What the user heard, then the part they cut off, struck through.
    const heard = e.heard || "";
    const words = (e.streamed || e.text).trim().split(/\s+/).filter(Boolean);
    const heardCount = heard.split(/\s+/).filter(Boolean).length;
    p.append(heard);
    const rest = words.slice(heardCount).join(" ");
    if (rest) {
      const s = document.createElement("span");
      s.className = "unheard";
      s.textContent = (heard ? " " : "") + rest;
      p.append(s);
    }
  } else {
    p.textContent = e.text || e.streamed;
  }
  li.append(who, p);
  if (e.sources && e.sources.length) {
    // The knowledge-base chunks the reply was grounded on.
    const s = document.createElement("p");
    s.className = "sources";
    s.textContent = "Sources: " + e.sources.map((x) => `${x.doc} #${x.chunk}`).join(", ");
    li.append(s);
  }
  if (e.timings) {
    const t = document.createElement("p");
    t.className = "timing";
    t.textContent = timingLine(e.timings);
    li.append(t);
  }
  const list = $("transcript");
  list.scrollTop = list.scrollHeight;
}

// ---------------------------------------------------------------- server events

// The interruption frame (barge_in): the server flushed the reply of `turn`.
// Its entry stops streaming and shows as cut off at once, all of it unheard,
// until the `reply` that follows says what was heard.
function onInterrupted(turn) {
  const e = entry("assistant", turn);
  e.streaming = false;
  e.final = true;
  e.interrupted = true;
  ui.interruptions += 1;
  render(e);
}

function onServerEvent(ev) {
  if (!ev || typeof ev.type !== "string") return;
  switch (ev.type) {
    case "session":
      $("info-session").textContent = ev.id;
      break;
    case "state":
      setState(ev.state);
      break;
    case "transcript": {
      // A typed message shows at once; its transcript (if the server echoes
      // one) takes its turn number instead of adding a second bubble.
      const pending = ui.entries.find((e) => e.role === "user" && e.typed && e.turn === null &&
        normalized(e.text) === normalized(ev.text));
      let e;
      if (pending) {
        e = pending;
        e.turn = ev.turn;
        ui.byKey.set(key("user", ev.turn), e);
      } else {
        e = entry("user", ev.turn);
      }
      e.text = ev.text;
      e.final = ev.final !== false;
      e.streaming = !e.final;
      render(e);
      break;
    }
    case "reply_delta": {
      const e = entry("assistant", ev.turn);
      e.streamed += ev.text;
      e.streaming = true;
      render(e);
      break;
    }
    case "reply": {
      const e = entry("assistant", ev.turn);
      e.streaming = false;
      e.final = true;
      if (ev.interrupted) {
        e.interrupted = true;
        e.heard = ev.text;
      } else {
        e.text = ev.text;
      }
      e.sources = Array.isArray(ev.sources) ? ev.sources : [];
      render(e);
      break;
    }
    case "prompt": {
      // A proactive prompt: the assistant speaks first.
      const e = entry("assistant", ev.turn, { proactive: true });
      e.proactive = true;
      e.promptId = ev.id;
      if (!e.text) e.text = ev.text;
      render(e);
      break;
    }
    case "busy": {
      const e = entry("assistant", ev.turn, { busy: true });
      e.busy = true;
      e.final = true;
      e.text = ev.text;
      render(e);
      break;
    }
    case "timings": {
      ui.lastTimings = ev;
      const e = entry("assistant", ev.turn);
      e.timings = ev;
      render(e);
      showLatency(ev);
      break;
    }
    case "barge_in":
      break; // handled as the Call's "interrupted" event
    case "draining":
      addSystem("The server is restarting: this conversation ends after the current reply. Connect again to carry on.");
      break;
    case "error":
      // With a code, the server refused something this page sent.
      if (ev.code) addSystem(`The server refused a message (${ev.code}): ${ev.message}`);
      else addSystem(`The assistant failed on turn ${ev.turn}: ${ev.message}`);
      break;
    default:
      break; // newer servers may send more; ignore what we do not know
  }
}

const ms = (v) => (typeof v === "number" ? `${Math.round(v)} ms` : "–");

function timingLine(t) {
  const parts = [];
  if (typeof t.total_ms === "number") parts.push(`${(t.total_ms / 1000).toFixed(2)} s voice to voice`);
  const stage = (label, v) => { if (typeof v === "number") parts.push(`${label} ${ms(v)}`); };
  stage("end of turn", t.endpoint_ms);
  stage("ASR", t.asr_ms);
  stage("knowledge base", t.kb_ms);
  stage("LLM first token", t.llm_first_token_ms);
  stage("first sentence", t.first_sentence_ms);
  stage("TTS", t.tts_first_audio_ms);
  return parts.join(" · ");
}

function showLatency(t) {
  $("v2v").textContent = typeof t.total_ms === "number" ? `${(t.total_ms / 1000).toFixed(2)} s` : "–";
  for (const dd of document.querySelectorAll("#stages dd")) dd.textContent = ms(t[dd.dataset.stage]);
}

// ---------------------------------------------------------------- input

$("connect").addEventListener("click", () => (ui.call ? hangup() : connect()));
$("retry").addEventListener("click", () => connect());
$("listen-only").addEventListener("click", () => connect({ microphone: false }));
$("mute").addEventListener("click", toggleMute);

$("say").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $("say-text");
  const text = input.value.trim();
  if (!text || !ui.call) return;
  if (!ui.call.sendText(text)) {
    addSystem("Not sent: the events channel is not open yet.");
    return;
  }
  render(entry("user", null, { text, typed: true, final: true }));
  input.value = "";
});

// Space toggles the microphone (connects first if needed), unless focus is in
// a control that uses Space itself.
document.addEventListener("keydown", (ev) => {
  if (ev.code !== "Space" || ev.repeat || ev.ctrlKey || ev.altKey || ev.metaKey) return;
  if (ev.target.closest && ev.target.closest("input, textarea, select, button, a, [contenteditable]")) return;
  ev.preventDefault();
  if (ui.call) toggleMute();
  else connect();
});

window.addEventListener("pagehide", hangup);

// For tests and the developer console: read-only views of the page's state.
window.voxloop = {
  state: () => ui.state,
  connected: () => Boolean(ui.call && ui.call.connected),
  sessionId: () => (ui.call ? ui.call.sessionId : null),
  micLevel,
  assistantLevel,
  micEnabled: () => (ui.mic ? ui.mic.getAudioTracks().every((t) => t.enabled) : null),
  error: () => ui.error,
  timings: () => ui.lastTimings,
  interruptions: () => ui.interruptions,
  stats: () => ui.lastStats,
  transcript: () => ui.entries.map((e) => ({
    role: e.role, turn: e.turn, text: e.interrupted ? e.heard : e.text || e.streamed,
    final: e.final, proactive: e.proactive, interrupted: e.interrupted, typed: e.typed, busy: e.busy,
  })),
};
