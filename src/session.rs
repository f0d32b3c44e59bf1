//! One live conversation: the media loop between a [`Peer`] and a pipeline.
//!
//! Two tasks per session:
//! - **inbound**: decoded 48 kHz frames → 16 kHz → pipeline (echo gate);
//!   finished utterances are resampled to 48 kHz and queued for playback;
//! - **outbound**: a [`Pacer`] wakes every 20 ms, takes one frame from the
//!   queue (or silence) and sends it as Opus. It starts when the peer
//!   connects, never waits for the data channel, and never bursts.
//!
//! Events for the client (JSON) go out on the data channel; those produced
//! before it opens are held (bounded) and flushed on open.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::audio::{OpusEncoder, Pacer, StreamResampler, resample_clip};
use crate::config::{Config, PipelineKind};
use crate::metrics::Metrics;
use crate::pipeline::{EchoEvent, EchoGate};
use crate::rtc::{InboundFrame, Peer, PeerEvent};
use crate::{PIPELINE_FRAME, PIPELINE_RATE, WIRE_FRAME, WIRE_RATE};

/// No inbound frame for this long counts as silence.
const INPUT_STALL: Duration = Duration::from_millis(100);
/// Events held while the data channel is not open yet.
const MAX_PENDING_EVENTS: usize = 64;

/// A fresh random session id (128 bits, hex).
pub fn new_session_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Audio waiting to be played, at 48 kHz.
#[derive(Debug, Default)]
pub struct OutQueue {
    samples: VecDeque<f32>,
}

impl OutQueue {
    pub fn push(&mut self, pcm: &[f32]) {
        self.samples.extend(pcm.iter().copied());
    }

    /// Take one 20 ms frame; `None` when nothing is queued (send silence).
    /// A final partial frame is padded with silence.
    pub fn pop_frame(&mut self) -> Option<Vec<f32>> {
        if self.samples.is_empty() {
            return None;
        }
        let n = self.samples.len().min(WIRE_FRAME);
        let mut frame: Vec<f32> = self.samples.drain(..n).collect();
        frame.resize(WIRE_FRAME, 0.0);
        Some(frame)
    }

    /// Drop everything queued (barge-in).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// Sends JSON events on the data channel, holding early ones until it opens.
pub struct EventOut {
    peer: Arc<Peer>,
    open: AtomicBool,
    pending: Mutex<VecDeque<String>>,
}

impl EventOut {
    fn new(peer: Arc<Peer>) -> Self {
        Self {
            peer,
            open: AtomicBool::new(false),
            pending: Mutex::new(VecDeque::new()),
        }
    }

    pub async fn send(&self, event: serde_json::Value) {
        let text = event.to_string();
        if self.open.load(Ordering::Acquire) && self.peer.send_data(&text).await {
            return;
        }
        if let Ok(mut q) = self.pending.lock() {
            if q.len() >= MAX_PENDING_EVENTS {
                q.pop_front();
            }
            q.push_back(text);
        }
    }

    async fn opened(&self) {
        self.open.store(true, Ordering::Release);
        let pending: Vec<String> = match self.pending.lock() {
            Ok(mut q) => q.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for text in pending {
            self.peer.send_data(&text).await;
        }
    }
}

/// What a session needs from the server.
#[derive(Clone)]
pub struct SessionContext {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
}

/// Handle to a running session's media tasks.
pub struct Session {
    pub id: String,
    pub peer: Arc<Peer>,
    events: Arc<EventOut>,
    connected: Arc<Notify>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Session {
    /// Start the media tasks for a negotiated peer.
    pub fn start(
        id: String,
        peer: Arc<Peer>,
        audio: mpsc::Receiver<InboundFrame>,
        ctx: SessionContext,
    ) -> Self {
        let span = tracing::info_span!("session", id = %id);
        let events = Arc::new(EventOut::new(peer.clone()));
        let queue = Arc::new(Mutex::new(OutQueue::default()));
        let connected = Arc::new(Notify::new());
        let cancel = CancellationToken::new();

        let inbound = tokio::spawn(
            inbound_loop(
                audio,
                queue.clone(),
                events.clone(),
                ctx.clone(),
                cancel.clone(),
            )
            .instrument(span.clone()),
        );
        let outbound = tokio::spawn(
            outbound_loop(
                peer.clone(),
                queue,
                events.clone(),
                connected.clone(),
                ctx,
                cancel.clone(),
            )
            .instrument(span),
        );
        Self {
            id,
            peer,
            events,
            connected,
            cancel,
            tasks: vec![inbound, outbound],
        }
    }

    /// React to a peer event the owner received.
    pub async fn on_peer_event(&self, ev: &PeerEvent) {
        match ev {
            PeerEvent::Connected => self.connected.notify_one(),
            PeerEvent::DataOpen => {
                self.events.opened().await;
                self.events
                    .send(json!({"type": "session", "id": self.id}))
                    .await;
            }
            PeerEvent::DataMessage(text) => {
                tracing::debug!(len = text.len(), "data channel message ignored");
            }
            _ => {}
        }
    }

    /// Stop the media tasks and close the peer connection.
    pub async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.peer.close().await;
    }
}

async fn inbound_loop(
    mut audio: mpsc::Receiver<InboundFrame>,
    queue: Arc<Mutex<OutQueue>>,
    events: Arc<EventOut>,
    ctx: SessionContext,
    cancel: CancellationToken,
) {
    let mut down = match StreamResampler::new(WIRE_RATE, PIPELINE_RATE, WIRE_FRAME) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot build resampler; session has no input");
            return;
        }
    };
    let PipelineKind::Echo = ctx.config.pipeline;
    let mut gate = EchoGate::new(&ctx.config.echo);
    let mut pending16: Vec<f32> = Vec::with_capacity(PIPELINE_FRAME * 2);
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => break,
            f = tokio::time::timeout(INPUT_STALL, audio.recv()) => match f {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    // The client stopped sending (DTX, muted mic, a script
                    // that ran out of audio): that is silence, and it must
                    // still end the utterance.
                    if gate.speaking() {
                        let silent = vec![0.0; PIPELINE_FRAME];
                        for _ in 0..(INPUT_STALL.as_millis() / u128::from(crate::FRAME_MS)) {
                            if let Some(ev) = gate.push(&silent) {
                                handle_echo(ev, &queue, &events, &ctx).await;
                            }
                        }
                    }
                    continue;
                }
            },
        };
        Metrics::inc(&ctx.metrics.audio_frames_in);
        let pcm16 = match down.push(&frame.pcm) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "resampling inbound audio failed");
                continue;
            }
        };
        pending16.extend_from_slice(&pcm16);
        while pending16.len() >= PIPELINE_FRAME {
            let f: Vec<f32> = pending16.drain(..PIPELINE_FRAME).collect();
            if let Some(ev) = gate.push(&f) {
                handle_echo(ev, &queue, &events, &ctx).await;
            }
        }
    }
}

async fn handle_echo(
    ev: EchoEvent,
    queue: &Mutex<OutQueue>,
    events: &EventOut,
    ctx: &SessionContext,
) {
    match ev {
        EchoEvent::SpeechStarted => {
            events
                .send(json!({"type": "state", "state": "user_speaking"}))
                .await;
        }
        EchoEvent::Utterance(u) => {
            Metrics::inc(&ctx.metrics.utterances);
            let ms = u.len() as u64 * 1000 / u64::from(PIPELINE_RATE);
            tracing::info!(ms, "utterance; echoing it back");
            match resample_clip(&u, PIPELINE_RATE, WIRE_RATE) {
                Ok(pcm48) => {
                    if let Ok(mut q) = queue.lock() {
                        q.push(&pcm48);
                    }
                    events
                        .send(json!({"type": "state", "state": "speaking", "utterance_ms": ms}))
                        .await;
                }
                Err(e) => tracing::warn!(error = %e, "cannot resample utterance"),
            }
        }
    }
}

async fn outbound_loop(
    peer: Arc<Peer>,
    queue: Arc<Mutex<OutQueue>>,
    events: Arc<EventOut>,
    connected: Arc<Notify>,
    ctx: SessionContext,
    cancel: CancellationToken,
) {
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = connected.notified() => {}
    }
    let mut encoder = match OpusEncoder::new(ctx.config.audio.opus_bitrate) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot create Opus encoder; session has no output");
            return;
        }
    };
    let silence = vec![0.0f32; WIRE_FRAME];
    let period = Duration::from_millis(u64::from(crate::FRAME_MS));
    let mut pacer = Pacer::new(Instant::now(), period);
    let mut send_errors = 0u64;
    let mut playing = false;
    loop {
        let deadline = tokio::time::Instant::from_std(pacer.next_deadline());
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => {}
        }
        let tick = pacer.on_wake(Instant::now());
        if tick.late {
            Metrics::inc(&ctx.metrics.late_frames_out);
        }
        if tick.skipped > 0 {
            ctx.metrics
                .skipped_frames_out
                .fetch_add(tick.skipped, Ordering::Relaxed);
        }
        let frame = queue.lock().ok().and_then(|mut q| q.pop_frame());
        let active = frame.is_some();
        if std::mem::replace(&mut playing, active) && !active {
            events
                .send(json!({"type": "state", "state": "listening"}))
                .await;
        }
        let pcm = frame.as_deref().unwrap_or(&silence);
        let packet = match encoder.encode(pcm) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "Opus encode failed");
                continue;
            }
        };
        match peer.send_opus(packet).await {
            Ok(()) => Metrics::inc(&ctx.metrics.audio_frames_out),
            Err(e) => {
                send_errors += 1;
                if send_errors == 1 || send_errors.is_power_of_two() {
                    tracing::debug!(error = %e, send_errors, "sending audio failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_queue_frames_and_pads() {
        let mut q = OutQueue::default();
        assert!(q.pop_frame().is_none());
        q.push(&vec![0.5; WIRE_FRAME + 10]);
        assert_eq!(q.pop_frame().unwrap().len(), WIRE_FRAME);
        let last = q.pop_frame().unwrap();
        assert_eq!(last.len(), WIRE_FRAME);
        assert_eq!(last[9], 0.5);
        assert_eq!(last[10], 0.0);
        assert!(q.pop_frame().is_none());
        q.push(&[1.0; 100]);
        q.clear();
        assert!(q.is_empty());
    }

    #[test]
    fn session_ids_are_unique_hex() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
