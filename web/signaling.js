// voxloop's wire protocol as the browser speaks it. No UI here: app.js drives
// a Call and renders what it reports. Read this file as the protocol's
// reference client (the README's "Signaling" section has the same tables).
//
// 1. Signaling: a WebSocket to /ws carrying JSON text messages tagged by "type".
//    client → server
//      {"type":"offer","sdp":"v=0…"}                      once, first
//        (+ "session_id":"…" to continue a session after a lost connection)
//      {"type":"candidate","candidate":{candidate,sdpMid,sdpMLineIndex}}
//      {"type":"candidate","candidate":null}               end of candidates
//      {"type":"bye"}                                      hang up
//    server → client
//      {"type":"session","id":"…"}                         the session was admitted
//      {"type":"answer","sdp":"…"}
//      {"type":"candidate","candidate":{…}|null}           trickle ICE
//      {"type":"error","code":"busy|bad_sdp|…","message":"…"}
//    Closing the socket ends the session on the server.
//
// 2. Media: one Opus track each way (48 kHz, 20 ms frames). The server sends a
//    frame every 20 ms, silence included, from the moment ICE connects.
//
// 3. Events: a data channel labelled "events", created by the client before its
//    offer. The server sends JSON objects on it, tagged by "type" (they mirror
//    `Event` in src/events.rs; see ServerEvent below):
//      session {id} · state {state: listening|user_speaking|thinking|speaking, utterance_ms?}
//      transcript {turn,text,final,typed?} · reply_delta {turn,text}
//      barge_in {turn} (the reply of that turn was cut off and its audio flushed;
//        a reply with interrupted:true, saying what was heard, follows)
//      reply {turn,text,interrupted,prompt_id?,sources?:[{doc,chunk}]} · timings {turn, endpoint_ms, asr_ms, …, total_ms}
//      prompt {id,text,turn} (a proactive prompt the assistant starts speaking)
//      busy {turn,text,reason: queue_full|deadline} · error {code?,turn?,message}
//      draining {deadline_ms} (the server is shutting down: the reply under way
//        finishes, then the session ends; reconnect to carry on)
//    The client sends {"type":"text","text":"…"} (`ClientMessage`): a typed user turn.
//    The page ignores event types it does not know: a newer server may send more.

/**
 * A server event on the "events" channel (`Event` in src/events.rs).
 * @typedef {{type: "session", id: string}
 *   | {type: "state", state: "listening"|"user_speaking"|"thinking"|"speaking", utterance_ms?: number}
 *   | {type: "transcript", turn: number, text: string, final: boolean, typed?: boolean}
 *   | {type: "reply_delta", turn: number, text: string}
 *   | {type: "draining", deadline_ms: number}
 *   | {type: "barge_in", turn: number}
 *   | {type: "reply", turn: number, text: string, interrupted: boolean, prompt_id?: string, sources?: {doc: string, chunk: number}[]}
 *   | {type: "timings", turn: number, endpoint_ms: number, asr_ms: number, asr_decode_ms: number,
 *      llm_first_token_ms: number|null, first_sentence_ms: number|null,
 *      tts_first_audio_ms: number|null, total_ms: number|null}
 *   | {type: "busy", turn: number, text: string, reason: "queue_full"|"deadline"}
 *   | {type: "prompt", id: string, text: string, turn: number}
 *   | {type: "error", code?: string, turn?: number, message: string}} ServerEvent
 * `error.code` is one of the signaling error codes (bad_json, unknown_type,
 * bad_message, too_large, busy): the server refused a message the page sent.
 */

/** Why a call could not start or ended early. `code` is what the UI switches on. */
export class CallError extends Error {
  /**
   * @param {"unreachable"|"busy"|"refused"|"ice_failed"|"lost"} code
   * @param {string} message what happened, for people
   * @param {string} [serverCode] the signaling error code, when the server sent one
   */
  constructor(code, message, serverCode) {
    super(message);
    this.name = "CallError";
    this.code = code;
    this.serverCode = serverCode;
  }
}

/** The signaling URL for a page served by voxloop: same host, ws(s)://…/ws. */
export function signalingUrl(location) {
  return location.origin.replace(/^http/, "ws") + "/ws";
}

const OPEN_TIMEOUT_MS = 5000;
const CONNECT_TIMEOUT_MS = 15000;

/**
 * One conversation with the server. Events (EventTarget):
 *   "session"   detail: {id}            the server admitted the session
 *   "track"     detail: {stream}        the assistant's audio
 *   "connected"                         ICE and DTLS are up; audio flows
 *   "message"   detail: ServerEvent     one event from the data channel
 *   "interrupted" detail: {turn}        barge_in: the server flushed that turn's
 *                                       reply audio; what is still buffered of it is stale
 *   "warning"   detail: {code,message}  a non-fatal signaling error
 *   "end"       detail: {error?: CallError}  the call is over (hang-up or failure)
 */
export class Call extends EventTarget {
  /**
   * @param {string} url the signaling WebSocket URL (see signalingUrl)
   * @param {MediaStream|null} mic the microphone, or null to only listen (and type)
   * @param {string|null} resumeId a previous session id to continue (after a
   *   lost connection), so prompts addressed to it still arrive
   * @param {string|null} token a join token, for a server with auth on; sent as
   *   the `voxloop.token.<JWT>` subprotocol (a page cannot set WebSocket headers)
   */
  constructor(url, mic, resumeId = null, token = null) {
    super();
    this.url = url;
    this.token = token;
    this.mic = mic;
    this.resumeId = resumeId;
    this.sessionId = null;
    this.ws = null;
    this.pc = null;
    this.channel = null;
    this.connected = false;
    this.ended = false;
    // Signaling messages are handled one at a time, in order: an answer must be
    // applied before the candidates that follow it.
    this.inbox = Promise.resolve();
    this.pendingCandidates = [];
    this.offerSent = false;
  }

  /** Open signaling, negotiate, and resolve once media is connected. Rejects with a CallError. */
  async start() {
    try {
      await this.openSocket();
      this.createPeer();
      const offer = await this.pc.createOffer();
      await this.pc.setLocalDescription(offer);
      const msg = { type: "offer", sdp: this.pc.localDescription.sdp };
      if (this.resumeId) msg.session_id = this.resumeId;
      this.send(msg);
      this.offerSent = true;
      for (const c of this.pendingCandidates.splice(0)) this.send({ type: "candidate", candidate: c });
      await this.untilConnected();
    } catch (e) {
      const error = e instanceof CallError ? e : new CallError("refused", String(e && e.message || e));
      this.finish(error);
      throw error;
    }
  }

  openSocket() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = this.token
          ? new WebSocket(this.url, ["voxloop", `voxloop.token.${this.token}`])
          : new WebSocket(this.url);
      } catch (e) {
        reject(new CallError("unreachable", `${this.url}: ${e.message}`));
        return;
      }
      this.ws = ws;
      const unreachable = () =>
        reject(new CallError("unreachable", this.url));
      const timer = setTimeout(() => { ws.close(); unreachable(); }, OPEN_TIMEOUT_MS);
      ws.onopen = () => {
        clearTimeout(timer);
        ws.onclose = (ev) => this.onSocketClosed(ev);
        resolve();
      };
      ws.onerror = () => {}; // a close event always follows; handled there
      ws.onclose = () => { clearTimeout(timer); unreachable(); };
      ws.onmessage = (ev) => {
        this.inbox = this.inbox.then(() => this.onSignal(ev.data)).catch((err) => {
          this.warn("client", `handling ${String(ev.data).slice(0, 40)}…: ${err.message}`);
        });
      };
    });
  }

  createPeer() {
    // No STUN or TURN servers: the server's candidates are its own addresses
    // (rtc.udp_bind / rtc.public_ips), and the page makes no outside connections.
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    if (this.mic) {
      for (const track of this.mic.getAudioTracks()) pc.addTrack(track, this.mic);
    } else {
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    pc.ontrack = (ev) => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      this.dispatchEvent(new CustomEvent("track", { detail: { stream } }));
    };
    // The events channel must exist before the offer, so the offer carries SCTP.
    const channel = pc.createDataChannel("events");
    this.channel = channel;
    channel.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        this.warn("client", `event that is not JSON: ${String(ev.data).slice(0, 60)}`);
        return;
      }
      if (msg && msg.type === "session" && msg.id) this.sessionId = msg.id;
      // The interruption frame comes first, so a UI drops the cut reply
      // before it renders anything after it.
      if (msg && msg.type === "barge_in") {
        this.dispatchEvent(new CustomEvent("interrupted", { detail: { turn: msg.turn } }));
      }
      this.dispatchEvent(new CustomEvent("message", { detail: msg }));
    };
    pc.onicecandidate = (ev) => {
      // ev.candidate is null at the end of gathering: sent as {"candidate":null}.
      const c = ev.candidate ? ev.candidate.toJSON() : null;
      if (this.offerSent) this.send({ type: "candidate", candidate: c });
      else this.pendingCandidates.push(c);
    };
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      if (this.connected && (s === "failed" || s === "closed")) {
        this.finish(new CallError("lost", `the media connection ${s}`));
      }
    };
  }

  untilConnected() {
    const pc = this.pc;
    return new Promise((resolve, reject) => {
      if (this.ended) {
        reject(new CallError("lost", "the call ended while connecting"));
        return;
      }
      const done = (err) => {
        clearTimeout(timer);
        pc.removeEventListener("connectionstatechange", check);
        this.removeEventListener("end", onEnd);
        if (err) reject(err);
        else resolve();
      };
      const check = () => {
        const s = pc.connectionState;
        if (s === "connected") {
          this.connected = true;
          this.dispatchEvent(new Event("connected"));
          done();
        } else if (s === "failed") {
          done(new CallError("ice_failed", "ICE failed: no network path between the browser and the server's media address"));
        }
      };
      const onEnd = (ev) => done(ev.detail.error || new CallError("lost", "hung up while connecting"));
      const timer = setTimeout(
        () => done(new CallError("ice_failed", `media did not connect within ${CONNECT_TIMEOUT_MS / 1000} s (ICE state: ${pc.iceConnectionState})`)),
        CONNECT_TIMEOUT_MS,
      );
      pc.addEventListener("connectionstatechange", check);
      this.addEventListener("end", onEnd);
      check();
    });
  }

  async onSignal(text) {
    if (this.ended) return;
    const msg = JSON.parse(text);
    switch (msg.type) {
      case "session":
        this.sessionId = msg.id;
        this.dispatchEvent(new CustomEvent("session", { detail: { id: msg.id } }));
        break;
      case "answer":
        await this.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        break;
      case "candidate":
        // null marks the end of the server's candidates.
        await this.pc.addIceCandidate(msg.candidate || null);
        break;
      case "error":
        this.onServerError(msg.code, msg.message);
        break;
      default:
        this.warn("client", `unknown signaling message type ${JSON.stringify(msg.type)}`);
    }
  }

  onServerError(code, message) {
    if (code === "busy") {
      this.finish(new CallError("busy", message, code));
    } else if (!this.connected && (code === "bad_sdp" || code === "internal" || code === "session_in_use")) {
      this.finish(new CallError("refused", `${code}: ${message}`, code));
    } else {
      // The socket stays open after other errors (a rejected candidate, say).
      this.warn(code, message);
    }
  }

  onSocketClosed(ev) {
    if (this.ended) return;
    const why = ev.reason ? `: ${ev.reason}` : `, code ${ev.code}`;
    this.finish(new CallError("lost", `the signaling socket closed${why}`));
  }

  warn(code, message) {
    this.dispatchEvent(new CustomEvent("warning", { detail: { code, message } }));
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  /** Send a typed user turn on the events channel. False if the channel is not open. */
  sendText(text) {
    if (!this.channel || this.channel.readyState !== "open") return false;
    this.channel.send(JSON.stringify({ type: "text", text }));
    return true;
  }

  /** Hang up: "bye", then close everything. The microphone belongs to the caller. */
  hangup() {
    this.send({ type: "bye" });
    this.finish(null);
  }

  finish(error) {
    if (this.ended) return;
    this.ended = true;
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.onmessage = null;
      this.ws.close();
    }
    if (this.pc) this.pc.close();
    this.dispatchEvent(new CustomEvent("end", { detail: { error } }));
  }

  /**
   * Connection facts from getStats(): round-trip time of the selected ICE pair
   * (or of RTCP reports), the negotiated codec, and the pair's addresses.
   */
  async stats() {
    if (!this.pc || this.ended) return null;
    const report = await this.pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    let pair = null;
    let rtt = null;
    let codec = null;
    report.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId);
    });
    if (!pair) {
      // Firefox marks the pair itself.
      report.forEach((s) => {
        if (s.type === "candidate-pair" && (s.selected || (s.nominated && s.state === "succeeded"))) pair = pair || s;
      });
    }
    if (pair && typeof pair.currentRoundTripTime === "number") rtt = pair.currentRoundTripTime;
    report.forEach((s) => {
      if (rtt === null && s.type === "remote-inbound-rtp" && typeof s.roundTripTime === "number") rtt = s.roundTripTime;
      if (!codec && (s.type === "inbound-rtp" || s.type === "outbound-rtp") && s.kind === "audio" && s.codecId) {
        const c = byId.get(s.codecId);
        if (c) codec = { mimeType: c.mimeType, clockRate: c.clockRate, channels: c.channels };
      }
    });
    const cand = (id) => {
      const c = id && byId.get(id);
      return c ? `${c.candidateType} ${c.address || c.ip || "?"}:${c.port}` : null;
    };
    return {
      rttMs: rtt === null ? null : rtt * 1000,
      codec,
      local: pair ? cand(pair.localCandidateId) : null,
      remote: pair ? cand(pair.remoteCandidateId) : null,
    };
  }
}
