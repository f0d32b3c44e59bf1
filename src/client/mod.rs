//! A Rust WebRTC client for voxloop: connects through `/ws`, streams audio
//! as real-time Opus, records what comes back with arrival times, and exposes
//! the data-channel events. The tests use it now; the load tester drives many.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::audio::{DtxEncoder, OpusEncoder, Pacer};
use crate::events::{ClientMessage, Event};
use crate::rtc::signaling::ClientMessage as SignalMessage;
use crate::rtc::{ErrorCode, Peer, PeerEvent, RtcSettings, ServerMessage, wait_gathered};
use crate::{FRAME_MS, WIRE_FRAME};

mod received;
mod sender;
mod signaling;
pub use received::ReceivedFrame;
use received::record_audio;
pub use sender::AudioSender;
use sender::send_frame;
pub use signaling::{Signaling, ws_url};

/// The client could not connect or lost its session.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad server URL {0:?} (expected http://host:port)")]
    Url(String),
    #[error("signaling socket: {0}")]
    Socket(String),
    #[error("server error {code:?}: {message}")]
    Server { code: ErrorCode, message: String },
    #[error("webrtc: {0}")]
    Peer(#[from] crate::rtc::PeerError),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    #[error("session ended: {0}")]
    Ended(String),
    #[error("audio: {0}")]
    Audio(String),
}

/// Longest wait for local ICE gathering before offering without candidates.
const GATHER_WAIT: Duration = Duration::from_millis(500);

/// When each frame of a [`Client::send_pcm`] call left.
#[derive(Debug, Clone)]
pub struct SendReport {
    pub frame_times: Vec<Instant>,
}

impl SendReport {
    /// Send time of the frame holding sample `index` (48 kHz).
    pub fn time_of_sample(&self, index: usize) -> Option<Instant> {
        self.frame_times.get(index / WIRE_FRAME).copied()
    }
}

/// Options for [`Client::connect`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub rtc: RtcSettings,
    pub connect_timeout: Duration,
    pub opus_bitrate: i32,
    /// Resume this session id (e.g. after the server restarted) instead of
    /// getting a fresh one.
    pub session_id: Option<String>,
    /// Join token, for a server with auth on (`voxloop token`).
    pub token: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            // Received audio at 48 kHz, as sent: callers compare it with
            // the 48 kHz clips they said.
            rtc: RtcSettings {
                decode_rate: crate::WIRE_RATE,
                ..RtcSettings::default()
            },
            connect_timeout: Duration::from_secs(10),
            opus_bitrate: 48_000,
            session_id: None,
            token: None,
        }
    }
}

struct Shared {
    received: Mutex<Vec<ReceivedFrame>>,
    ended: Mutex<Option<String>>,
    errors: Mutex<Vec<(ErrorCode, String)>>,
}

impl Shared {
    /// Why the session ended, if it did.
    fn ended(&self) -> Option<String> {
        self.ended.lock().ok().and_then(|e| e.clone())
    }
}

/// A connected voxloop session seen from the client side.
pub struct Client {
    pub session_id: String,
    /// Time from opening the socket to the peer connection being connected.
    pub connect_time: Duration,
    peer: Arc<Peer>,
    encoder: tokio::sync::Mutex<DtxEncoder>,
    /// The server's answer asked for DTX: silence is mostly not sent, as a
    /// browser does then.
    dtx: bool,
    ws_out: mpsc::Sender<String>,
    events: mpsc::Receiver<Event>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// A typed message as its JSON text.
fn to_json<T: serde::Serialize>(msg: &T) -> Result<String, ClientError> {
    serde_json::to_string(msg).map_err(|e| ClientError::Socket(format!("cannot encode: {e}")))
}

impl Client {
    /// Connect to a voxloop server (`http://host:port`) and wait until media flows.
    pub async fn connect(server: &str, opts: ClientOptions) -> Result<Self, ClientError> {
        let started = Instant::now();
        let mut sig = Signaling::connect_with_token(server, opts.token.as_deref()).await?;
        let (peer, streams, offer) = Peer::offer(&opts.rtc).await?;
        let peer = Arc::new(peer);
        let mut peer_events = streams.events;
        let audio = streams.audio;
        let result = async {
            // Loopback and host candidates gather in a few ms: put them in the
            // offer so the server's ICE agent has pairs to check at once.
            let (gathered, mut early_events) = wait_gathered(&mut peer_events, GATHER_WAIT).await;
            let offer = match gathered {
                true => peer.local_sdp().await.unwrap_or(offer),
                false => offer,
            };
            sig.send(&SignalMessage::Offer {
                sdp: offer,
                session_id: opts.session_id.clone(),
            })
            .await?;
            let deadline = tokio::time::Instant::now() + opts.connect_timeout;
            let mut session_id = None;
            let mut answered = false;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(ClientError::Timeout(opts.connect_timeout, "the connection"));
                    }
                    msg = sig.recv(opts.connect_timeout) => match msg? {
                        Some(ServerMessage::Session { id }) => session_id = Some(id),
                        Some(ServerMessage::Answer { sdp }) => {
                            peer.accept_answer(&sdp).await?;
                            answered = true;
                        }
                        Some(ServerMessage::Candidate { candidate }) => {
                            if answered {
                                peer.add_remote_candidate(candidate).await?;
                            }
                        }
                        Some(ServerMessage::Error { code, message }) => {
                            return Err(ClientError::Server { code, message });
                        }
                        None => return Err(ClientError::Ended("signaling socket closed".into())),
                    },
                    ev = peer_events.recv() => match ev {
                        Some(PeerEvent::LocalCandidate(c)) => sig.send(&SignalMessage::Candidate(Some(c))).await?,
                        Some(PeerEvent::GatheringComplete) => sig.send(&SignalMessage::Candidate(None)).await?,
                        Some(PeerEvent::Connected) => break,
                        Some(PeerEvent::Ended(why)) => return Err(ClientError::Ended(why)),
                        Some(other) => early_events.push(other),
                        None => return Err(ClientError::Ended("peer gone".into())),
                    },
                }
            }
            let id = session_id.ok_or(ClientError::Ended("no session id".into()))?;
            Ok((id, early_events))
        }
        .await;
        let (session_id, early_events) = match result {
            Ok(x) => x,
            Err(e) => {
                peer.close().await;
                sig.close().await;
                return Err(e);
            }
        };
        let connect_time = started.elapsed();

        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            ended: Mutex::new(None),
            errors: Mutex::new(Vec::new()),
        });
        let (ev_tx, ev_rx) = mpsc::channel(1024);
        let (ws_tx, ws_rx) = mpsc::channel::<String>(64);
        for ev in early_events {
            forward_event(&ev, &ev_tx, &shared);
        }
        let tasks = vec![
            tokio::spawn(record_audio(audio, shared.clone())),
            tokio::spawn(drive(
                sig,
                ws_rx,
                peer_events,
                peer.clone(),
                ev_tx,
                shared.clone(),
            )),
        ];
        let encoder =
            OpusEncoder::new(opts.opus_bitrate).map_err(|e| ClientError::Audio(e.to_string()))?;
        let dtx = peer.remote_wants_dtx().await;
        Ok(Self {
            session_id,
            connect_time,
            peer,
            encoder: tokio::sync::Mutex::new(DtxEncoder::new(encoder, dtx)),
            dtx,
            ws_out: ws_tx,
            events: ev_rx,
            shared,
            tasks,
        })
    }

    /// Stream 48 kHz mono audio as 20 ms Opus frames. `speed` 1.0 is real
    /// time; larger values send faster (only where a test does not depend on pacing).
    pub async fn send_pcm(&self, pcm: &[f32], speed: f32) -> Result<SendReport, ClientError> {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        let period = Duration::from_secs_f32(FRAME_MS as f32 / 1000.0 / speed);
        let mut pacer = Pacer::new(Instant::now(), period);
        let mut times = Vec::with_capacity(pcm.len() / WIRE_FRAME + 1);
        let mut encoder = self.encoder.lock().await;
        for chunk in pcm.chunks(WIRE_FRAME) {
            if let Some(why) = self.ended() {
                return Err(ClientError::Ended(why));
            }
            tokio::time::sleep_until(tokio::time::Instant::from_std(pacer.next_deadline())).await;
            pacer.on_wake(Instant::now());
            times.push(send_frame(&mut encoder, &self.peer, chunk).await?);
        }
        Ok(SendReport { frame_times: times })
    }

    /// Send `duration` of silence in real time.
    pub async fn send_silence(&self, duration: Duration) -> Result<SendReport, ClientError> {
        let n = (duration.as_secs_f64() * f64::from(crate::WIRE_RATE)) as usize;
        self.send_pcm(&vec![0.0; n], 1.0).await
    }

    /// Next data-channel event, or `None` on timeout.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Type a message into the conversation (the data channel's `text`
    /// message); false if the channel is not open.
    pub async fn send_text(&self, text: &str) -> bool {
        let msg = ClientMessage::Text {
            text: text.to_string(),
        };
        match to_json(&msg) {
            Ok(m) => self.peer.send_data(&m).await,
            Err(_) => false,
        }
    }

    /// Send raw text on the events channel, valid or not (for tests of the
    /// protocol itself); false if the channel is not open.
    pub async fn send_data_raw(&self, text: &str) -> bool {
        self.peer.send_data(text).await
    }

    /// Wait until the `events` channel is open, which its first event
    /// (`session`) says; typed text sent before it is lost.
    pub async fn wait_open(&mut self, timeout: Duration) -> bool {
        self.wait_event(timeout, |e| matches!(e, Event::Session { .. }))
            .await
            .is_some()
    }

    /// Wait for an event matching `pred`, dropping others.
    pub async fn wait_event<F>(&mut self, timeout: Duration, pred: F) -> Option<Event>
    where
        F: Fn(&Event) -> bool,
    {
        self.wait_for(timeout, |e| pred(&e).then_some(e)).await
    }

    /// Wait for the first event `pick` takes something from, dropping the
    /// others: `pick` matches the variant and returns its fields.
    pub async fn wait_for<T, F>(&mut self, timeout: Duration, mut pick: F) -> Option<T>
    where
        F: FnMut(Event) -> Option<T>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .ok()
                .flatten()?;
            if let Some(t) = pick(ev) {
                return Some(t);
            }
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<ReceivedFrame> {
        self.shared
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Received audio as one 48 kHz buffer (DTX pauses filled with silence).
    pub fn received_pcm(&self) -> Vec<f32> {
        self.received().into_iter().flat_map(|f| f.pcm).collect()
    }

    /// Take everything received so far, leaving the buffer empty: a long
    /// session (the load tester) reads its audio as it comes instead of
    /// holding minutes of PCM.
    pub fn drain_received(&self) -> Vec<ReceivedFrame> {
        self.shared
            .received
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// The next data-channel event if one is waiting, without waiting.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// A sender for this session's audio track that another task can own,
    /// with its own encoder and no pacing: the caller sends one 20 ms frame
    /// per call on its own clock (a microphone that never stops, while this
    /// `Client` waits for events).
    pub fn audio_sender(&self, opus_bitrate: i32) -> Result<AudioSender, ClientError> {
        Ok(AudioSender {
            peer: self.peer.clone(),
            encoder: DtxEncoder::new(
                OpusEncoder::new(opus_bitrate).map_err(|e| ClientError::Audio(e.to_string()))?,
                self.dtx,
            ),
            shared: self.shared.clone(),
        })
    }

    /// Forget what was received so far.
    pub fn clear_received(&self) {
        if let Ok(mut r) = self.shared.received.lock() {
            r.clear();
        }
    }

    /// Error messages the server sent after connecting.
    pub fn server_errors(&self) -> Vec<(ErrorCode, String)> {
        self.shared
            .errors
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// Why the session ended, if it did.
    pub fn ended(&self) -> Option<String> {
        self.shared.ended()
    }

    /// Send a raw text message on the signaling socket.
    pub async fn send_signaling(&self, text: String) -> Result<(), ClientError> {
        self.ws_out
            .send(text)
            .await
            .map_err(|_| ClientError::Ended("signaling socket closed".into()))
    }

    /// Hang up politely: `bye`, then close the peer connection.
    pub async fn bye(self) {
        if let Ok(bye) = to_json(&SignalMessage::Bye) {
            let _ = self.ws_out.send(bye).await;
        }
        // Give the writer a moment to flush the bye before the socket drops.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.shutdown().await;
    }

    /// Vanish without `bye` (a crashed tab): the socket and peer just go away.
    pub async fn abort(self) {
        self.shutdown().await;
    }

    async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.peer.close().await;
    }
}

fn forward_event(ev: &PeerEvent, tx: &mpsc::Sender<Event>, shared: &Shared) {
    match ev {
        PeerEvent::DataMessage(text) => match serde_json::from_str(text) {
            Ok(v) => {
                let _ = tx.try_send(v);
            }
            // A newer server may send events this client does not know.
            Err(e) => tracing::debug!(error = %e, "data channel message that is not a known event"),
        },
        // A load tester or test gives up on a lost path at once; the
        // server's grace period is for users on flaky networks.
        PeerEvent::Ended(_) | PeerEvent::Disconnected => {
            let why = match ev {
                PeerEvent::Ended(why) => why.clone(),
                _ => "disconnected".to_string(),
            };
            if let Ok(mut e) = shared.ended.lock() {
                *e = Some(why);
            }
        }
        _ => {}
    }
}

async fn drive(
    mut sig: Signaling,
    mut ws_out: mpsc::Receiver<String>,
    mut peer_events: mpsc::Receiver<PeerEvent>,
    peer: Arc<Peer>,
    ev_tx: mpsc::Sender<Event>,
    shared: Arc<Shared>,
) {
    loop {
        tokio::select! {
            out = ws_out.recv() => match out {
                Some(text) => {
                    if sig.send_text(text).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            msg = sig.recv(Duration::from_secs(3600)) => match msg {
                Ok(Some(ServerMessage::Candidate { candidate })) => {
                    let _ = peer.add_remote_candidate(candidate).await;
                }
                Ok(Some(ServerMessage::Error { code, message })) => {
                    if let Ok(mut e) = shared.errors.lock() {
                        e.push((code, message));
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    if let Ok(mut e) = shared.ended.lock() {
                        e.get_or_insert_with(|| "signaling socket closed".into());
                    }
                    break;
                }
            },
            ev = peer_events.recv() => match ev {
                Some(PeerEvent::LocalCandidate(c)) => {
                    let _ = sig.send(&SignalMessage::Candidate(Some(c))).await;
                }
                Some(ev) => forward_event(&ev, &ev_tx, &shared),
                None => break,
            },
        }
    }
    sig.close().await;
}
