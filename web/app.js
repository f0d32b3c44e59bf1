// Minimal voxloop client: WebSocket signaling (see README "Signaling"),
// one Opus track each way, and the "events" data channel.
const $ = (id) => document.getElementById(id);
const log = (line) => { const l = $("log"); l.textContent += line + "\n"; l.scrollTop = l.scrollHeight; };
const setState = (s) => { $("state").textContent = s; };

let pc = null, ws = null, mic = null;

async function connect() {
  setState("connecting");
  try {
    mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (e) {
    setState("microphone unavailable"); log("microphone: " + e.message); return;
  }
  pc = new RTCPeerConnection();
  mic.getTracks().forEach((t) => pc.addTrack(t, mic));
  pc.ontrack = (ev) => { $("remote").srcObject = ev.streams[0] || new MediaStream([ev.track]); };
  const dc = pc.createDataChannel("events");
  dc.onmessage = (ev) => {
    log("event " + ev.data);
    try { const e = JSON.parse(ev.data); if (e.state) setState(e.state.replace("_", " ")); } catch (_) {}
  };
  pc.onconnectionstatechange = () => {
    log("connection " + pc.connectionState);
    if (pc.connectionState === "connected") setState("listening");
    if (pc.connectionState === "failed") { setState("connection failed"); hangup(); }
  };
  ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws");
  ws.onerror = () => { setState("server unreachable"); };
  ws.onclose = () => { if (pc) log("signaling closed"); };
  ws.onmessage = async (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "session") log("session " + m.id);
    else if (m.type === "answer") await pc.setRemoteDescription({ type: "answer", sdp: m.sdp });
    else if (m.type === "candidate" && m.candidate) await pc.addIceCandidate(m.candidate).catch((e) => log("candidate: " + e));
    else if (m.type === "error") { log("error " + m.code + ": " + m.message); if (m.code === "busy") setState("server busy"); }
  };
  pc.onicecandidate = (ev) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "candidate", candidate: ev.candidate }));
  };
  await new Promise((ok, fail) => { ws.onopen = ok; setTimeout(() => fail(new Error("timeout")), 5000); })
    .catch(() => { setState("server unreachable"); throw new Error("unreachable"); });
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  ws.send(JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp }));
  $("connect").textContent = "Hang up"; $("connect").classList.add("hangup");
}

function hangup() {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "bye" }));
  if (ws) ws.close();
  if (pc) pc.close();
  if (mic) mic.getTracks().forEach((t) => t.stop());
  pc = ws = mic = null;
  $("connect").textContent = "Connect"; $("connect").classList.remove("hangup");
  setState("idle");
}

$("connect").onclick = () => (pc ? hangup() : connect().catch((e) => log(String(e))));
