//! One live conversation: the tasks between a [`Peer`] and a pipeline.
//!
//! - **inbound**: reads the peer's [`RemoteAudio`] (Opus decoded straight to
//!   16 kHz in this task), fills a stalled stream's gaps with silence and
//!   passes each frame to the pipeline's input queue (bounded; a pipeline
//!   that falls behind loses frames, counted, rather than stalling the
//!   decoder);
//! - **pipeline**: `speech` (the assistant) or `echo` (diagnostics), filling
//!   the [`OutQueue`] and emitting [`Event`]s;
//! - **events**: forwards those events to the data channel, holding early
//!   ones until it opens, and mirrors transcripts and replies to the bus;
//! - **outbound**: a [`Pacer`] wakes every 20 ms, takes one frame from the
//!   queue (or silence) and sends it as Opus. It starts when the peer
//!   connects, never waits for the data channel, and never bursts.
//!
//! Besides audio, a session takes [`Control`] commands: prompts from the hub
//! and typed messages from the data channel ([`ClientMessage::Text`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, PipelineKind};
use crate::events::{ClientMessage, ErrorCode, Event};
use crate::hub::{CONTROL_QUEUE, SessionEvents};
use crate::limits::TokenBucket;
use crate::metrics::Metrics;
use crate::pipeline::playout::OutQueue;
use crate::pipeline::speech::{self, SpeechDeps};
use crate::prompt::Control;
use crate::rtc::{Peer, PeerEvent, RemoteAudio};

mod loops;
use loops::{echo_loop, forward_events, inbound_loop, outbound_loop};

/// Events held while the data channel is not open yet.
const MAX_PENDING_EVENTS: usize = 64;
/// Longest typed message, in characters: a turn, not a document.
const MAX_TYPED_CHARS: usize = 2000;
/// 16 kHz chunks the pipeline may lag behind the network (4 s).
const PIPELINE_QUEUE: usize = 200;
/// A packet this late counts as missing: the inbound stream's gap is then
/// silence, 20 ms per 20 ms (see `rtc::gap`). As eager as `next_input`'s
/// stall rule and no more, so a stall under load puts no more silence inside
/// speech than before; the backlog comes at once, so the first decision (a
/// `short_pause_ms` of 200) is not delayed by it.
const INBOUND_GRACE: Duration = crate::pipeline::INPUT_STALL;
/// The longest gap filled: past the end-of-turn fallback (`max_silence_ms`).
const INBOUND_FILL_MAX: Duration = Duration::from_secs(2);

/// Sends events on the data channel (serialized once, here), holding early
/// ones until it opens.
pub struct EventOut {
    peer: Arc<Peer>,
    open: AtomicBool,
    pending: Mutex<VecDeque<String>>,
    /// The last state sent was not `listening`: a turn or a reply is under
    /// way (a draining server waits for it).
    busy: Arc<AtomicBool>,
}

impl EventOut {
    fn new(peer: Arc<Peer>) -> Self {
        Self {
            peer,
            open: AtomicBool::new(false),
            pending: Mutex::new(VecDeque::new()),
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    pub async fn send(&self, event: &Event) {
        if let Event::State { state, .. } = event {
            self.busy
                .store(*state != crate::events::State::Listening, Ordering::Release);
        }
        let text = match serde_json::to_string(event) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialize an event; dropped");
                return;
            }
        };
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
    /// Loaded engines; required for the speech pipeline.
    pub speech: Option<SpeechDeps>,
}

/// Handle to a running session's tasks.
pub struct Session {
    pub id: String,
    pub peer: Arc<Peer>,
    events: Arc<EventOut>,
    control: mpsc::Sender<Control>,
    metrics: Arc<Metrics>,
    max_message_bytes: usize,
    /// Typed texts allowed (`limits.texts_per_minute`).
    texts: Mutex<TokenBucket>,
    connected: Arc<Notify>,
    cancel: CancellationToken,
    /// Cancelled when one of the session's tasks panicked.
    failed: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Session {
    /// Start the tasks for a negotiated peer.
    pub fn start(
        id: String,
        peer: Arc<Peer>,
        audio: RemoteAudio,
        ctx: SessionContext,
        bus_events: Arc<SessionEvents>,
    ) -> Self {
        let span = tracing::info_span!("session", id = %id);
        let (control, control_rx) = mpsc::channel::<Control>(CONTROL_QUEUE);
        let events = Arc::new(EventOut::new(peer.clone()));
        let ready = Arc::new(Notify::new());
        let queue = Arc::new(Mutex::new(OutQueue::with_ready(ready.clone())));
        let connected = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let failed = CancellationToken::new();
        let (pcm_tx, pcm_rx) = mpsc::channel::<Vec<f32>>(PIPELINE_QUEUE);
        let (ev_tx, ev_rx) = mpsc::channel::<Event>(256);

        let mut tasks = vec![
            spawn_guarded(
                failed.clone(),
                inbound_loop(audio, pcm_tx, ctx.metrics.clone(), cancel.clone())
                    .instrument(span.clone()),
            ),
            spawn_guarded(
                failed.clone(),
                forward_events(ev_rx, events.clone(), bus_events).instrument(span.clone()),
            ),
            spawn_guarded(
                failed.clone(),
                outbound_loop(
                    peer.clone(),
                    queue.clone(),
                    ready,
                    ev_tx.clone(),
                    connected.clone(),
                    ctx.clone(),
                    cancel.clone(),
                )
                .instrument(span.clone()),
            ),
        ];
        let pipeline = match (&ctx.config.pipeline, &ctx.speech) {
            (PipelineKind::Speech, Some(deps)) => spawn_guarded(
                failed.clone(),
                speech::run(
                    pcm_rx,
                    control_rx,
                    queue,
                    ev_tx,
                    deps.clone(),
                    cancel.clone(),
                )
                .instrument(span),
            ),
            (kind, _) => {
                if *kind == PipelineKind::Speech {
                    tracing::error!("speech pipeline without engines; falling back to echo");
                }
                spawn_guarded(
                    failed.clone(),
                    echo_loop(
                        pcm_rx,
                        control_rx,
                        queue,
                        ev_tx,
                        ctx.clone(),
                        cancel.clone(),
                    )
                    .instrument(span),
                )
            }
        };
        tasks.push(pipeline);
        Self {
            id,
            peer,
            events,
            control,
            metrics: ctx.metrics.clone(),
            max_message_bytes: ctx.config.max_message_bytes,
            texts: Mutex::new(TokenBucket::new(
                ctx.config.limits.texts_per_minute,
                Instant::now(),
            )),
            connected,
            cancel,
            failed,
            tasks,
        }
    }

    /// React to a peer event the owner received.
    pub async fn on_peer_event(&self, ev: &PeerEvent) {
        match ev {
            PeerEvent::Connected => self.connected.notify_one(),
            PeerEvent::DataOpen => {
                self.events.opened().await;
                self.events
                    .send(&Event::Session {
                        id: self.id.clone(),
                    })
                    .await;
            }
            PeerEvent::DataMessage(text) => {
                let allowed = self
                    .texts
                    .lock()
                    .map(|mut b| b.try_take(Instant::now()))
                    .unwrap_or(true);
                let refused = match parse_data_message(text, self.max_message_bytes) {
                    Ok(_) if !allowed => Some((
                        ErrorCode::RateLimited,
                        "too many typed messages; wait a moment (limits.texts_per_minute)"
                            .to_string(),
                    )),
                    Ok(typed) => match self.control.try_send(Control::Text(typed)) {
                        Ok(()) => None,
                        Err(_) => Some((
                            ErrorCode::Busy,
                            "too many messages waiting; try again".to_string(),
                        )),
                    },
                    Err(e) => Some(e),
                };
                if let Some((code, message)) = refused {
                    tracing::warn!(code = code.as_str(), %message, "data channel message refused");
                    self.metrics.data_channel_error(code);
                    self.events
                        .send(&Event::Error {
                            code: Some(code),
                            turn: None,
                            message,
                        })
                        .await;
                }
            }
            _ => {}
        }
    }

    /// Where prompts and typed messages for this session go.
    pub fn control(&self) -> mpsc::Sender<Control> {
        self.control.clone()
    }

    /// Cancelled if one of the session's tasks panicked: its owner ends it.
    pub fn failed(&self) -> &CancellationToken {
        &self.failed
    }

    /// True while a turn or a reply is under way.
    pub fn busy_flag(&self) -> Arc<AtomicBool> {
        self.events.busy.clone()
    }

    /// Stop the tasks and close the peer connection.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        self.peer.close().await;
    }
}

/// Spawn one of a session's tasks. A panic in it (a bug, a third-party
/// parser) is caught and reported through `failed`, so the owner ends the
/// whole session cleanly and frees its slot, instead of the session running
/// on without that task.
fn spawn_guarded<F>(failed: CancellationToken, task: F) -> JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        if std::panic::AssertUnwindSafe(task)
            .catch_unwind()
            .await
            .is_err()
        {
            tracing::error!("a session task panicked; ending the session");
            failed.cancel();
        }
    })
}

/// A session dropped without [`Session::stop`] (its owner's task panicked
/// or was aborted) still stops its tasks and closes its peer, so nothing
/// outlives the slot its owner held.
impl Drop for Session {
    fn drop(&mut self) {
        if self.tasks.is_empty() {
            return; // stopped
        }
        self.cancel.cancel();
        let peer = self.peer.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { peer.close().await });
        }
    }
}

/// A message the client sent on the data channel ([`ClientMessage`]; today
/// only typed text), as the trimmed text. Errors carry a code for the client.
pub fn parse_data_message(text: &str, max_len: usize) -> Result<String, (ErrorCode, String)> {
    if text.len() > max_len {
        return Err((
            ErrorCode::TooLarge,
            format!(
                "message of {} bytes is over the {max_len}-byte limit",
                text.len()
            ),
        ));
    }
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| (ErrorCode::BadJson, format!("not valid JSON: {e}")))?;
    let Some(ty) = v.get("type").and_then(serde_json::Value::as_str) else {
        return Err((
            ErrorCode::BadJson,
            "expected a JSON object with a string \"type\"".into(),
        ));
    };
    let ty = ty.chars().take(40).collect::<String>();
    let msg: ClientMessage = serde_json::from_value(v).map_err(|e| {
        (
            ErrorCode::BadMessage,
            format!("{ty} needs a non-empty string field \"text\": {e}"),
        )
    })?;
    match msg {
        ClientMessage::Text { text } if text.chars().count() > MAX_TYPED_CHARS => Err((
            ErrorCode::TooLarge,
            format!("typed text is over {MAX_TYPED_CHARS} characters"),
        )),
        ClientMessage::Text { text } if !text.trim().is_empty() => Ok(text.trim().to_string()),
        ClientMessage::Text { .. } => Err((
            ErrorCode::BadMessage,
            "text needs a non-empty string field \"text\"".into(),
        )),
        ClientMessage::Unknown => Err((
            ErrorCode::UnknownType,
            format!("unknown data channel message type {ty:?} (expected text)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_fails_the_session() {
        let failed = CancellationToken::new();
        let ok = spawn_guarded(failed.clone(), async {});
        ok.await.expect("joins");
        assert!(!failed.is_cancelled());
        let bad = spawn_guarded(failed.clone(), async { panic!("a parser blew up") });
        bad.await.expect("the panic is caught inside the task");
        assert!(failed.is_cancelled());
    }

    #[test]
    fn data_channel_messages() {
        assert_eq!(
            parse_data_message(r#"{"type":"text","text":" What time is it? "}"#, 1000),
            Ok("What time is it?".to_string())
        );
        let code = |s: &str, max| parse_data_message(s, max).map_err(|e| e.0);
        assert_eq!(code("nope", 1000), Err(ErrorCode::BadJson));
        assert_eq!(code(r#"{"type":"text"}"#, 1000), Err(ErrorCode::BadMessage));
        assert_eq!(
            code(r#"{"type":"text","text":"  "}"#, 1000),
            Err(ErrorCode::BadMessage)
        );
        assert_eq!(
            code(r#"{"type":"dance"}"#, 1000),
            Err(ErrorCode::UnknownType)
        );
        assert_eq!(
            code(r#"{"type":"text","text":"hello"}"#, 10),
            Err(ErrorCode::TooLarge)
        );
        let long = ClientMessage::Text {
            text: "a".repeat(MAX_TYPED_CHARS + 1),
        };
        let long = serde_json::to_string(&long).unwrap();
        assert_eq!(code(&long, 1 << 20), Err(ErrorCode::TooLarge));
    }
}
