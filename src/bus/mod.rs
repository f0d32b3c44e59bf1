//! NATS: proactive prompts in, conversation events out (DESIGN.md §3).
//!
//! - Prompts arrive on `<prefix>.prompt.session.<id>` and
//!   `<prefix>.prompt.broadcast`. A JetStream stream keeps them, and a
//!   durable pull consumer hands them to a [`PromptHandler`]; a prompt is
//!   acked only once the handler returns (spoken, dropped with a reason, or
//!   its session gone), with progress acks while it waits for a natural
//!   moment. So a prompt published while this server or NATS was down is
//!   delivered when both are back ([`prompts`]).
//! - Events go out through a bounded buffer to a JetStream stream over
//!   `<prefix>.event.>`, with `Nats-Msg-Id` = session id + connection + sequence so a
//!   retried publish is stored once. Nothing on the media path ever waits
//!   for NATS: when it is down or slow, events are dropped and counted.
//! - Knowledge-base documents live in an object store bucket ([`kb_store`]).
//!
//! The server runs without NATS: [`Bus::connect`] never fails on an
//! unreachable server; the client reconnects in the background and
//! `/healthz` shows the state.

pub mod backoff;
pub mod creds;
pub mod heard;
pub mod kb_store;
pub mod parked;
pub mod payload;
pub mod prompts;
pub mod publish;
pub mod relay;
pub mod say;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use tokio::sync::mpsc;

pub use payload::{new_session_id, now_rfc3339, valid_session_id};
pub use prompts::{PromptHandler, PromptIn, Settle};

use crate::config::BusConfig;
use crate::metrics::Metrics;

/// Largest prompt message the stream stores (text is capped far lower; this
/// lets an oversized text arrive and be dropped with a reason).
const MAX_PROMPT_MESSAGE: i32 = 4 * 1024 * 1024;
/// Most prompts waiting for absent sessions at once, over all servers; past
/// it a park fails and the prompt is retried later, then dropped.
const MAX_PARKED: i64 = 10_000;

/// A NATS set-up step failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("NATS URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("NATS credentials: {0}")]
    Credentials(String),
}

/// Subject and stream names, all derived from one prefix.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

/// Where a prompt should go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Session(String),
    Broadcast,
}

impl Subjects {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn prompt_session(&self, id: &str) -> String {
        format!("{}.prompt.session.{id}", self.prefix)
    }

    pub fn prompt_broadcast(&self) -> String {
        format!("{}.prompt.broadcast", self.prefix)
    }

    pub fn prompt_all(&self) -> String {
        format!("{}.prompt.>", self.prefix)
    }

    /// `kind` is an event kind (`Event::kind`, `events::kind`), e.g. `prompt.spoken`.
    pub fn event(&self, kind: &str) -> String {
        format!("{}.event.{kind}", self.prefix)
    }

    /// Where a prompt waits while session `id` is absent ([`parked`]).
    pub fn parked(&self, id: &str) -> String {
        format!("{}.parked.{id}", self.prefix)
    }

    pub fn event_all(&self) -> String {
        format!("{}.event.>", self.prefix)
    }

    /// The target a prompt subject names, or `None` for any other subject.
    pub fn target(&self, subject: &str) -> Option<Target> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".prompt.")?;
        if rest == "broadcast" {
            return Some(Target::Broadcast);
        }
        let id = rest.strip_prefix("session.")?;
        valid_session_id(id).then(|| Target::Session(id.to_string()))
    }

    fn stream_base(&self) -> String {
        self.prefix.replace(['.', '-'], "_").to_uppercase()
    }

    pub fn prompt_stream(&self) -> String {
        format!("{}_PROMPTS", self.stream_base())
    }

    pub fn parked_stream(&self) -> String {
        format!("{}_PARKED", self.stream_base())
    }

    pub fn event_stream(&self) -> String {
        format!("{}_EVENTS", self.stream_base())
    }

    /// The object store bucket of knowledge-base documents ([`kb_store`]):
    /// `voxloop_kb` for the default prefix.
    pub fn kb_bucket(&self) -> String {
        format!("{}_kb", self.prefix.replace(['.', '-'], "_"))
    }

    /// The key-value bucket of prompts heard per session ([`heard`]).
    pub fn heard_bucket(&self) -> String {
        format!("{}_PROMPTS_HEARD", self.stream_base())
    }
}

struct Outgoing {
    subject: String,
    msg_id: String,
    payload: Vec<u8>,
}

struct Inner {
    url: String,
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    config: BusConfig,
    metrics: Arc<Metrics>,
    out: mpsc::Sender<Outgoing>,
    heard: heard::HeardLog,
    kb: kb_store::KbStore,
    /// Set while disconnected and already warned about, so an outage logs once.
    warned: Arc<AtomicBool>,
    /// This process among the servers on the NATS (`relay`).
    origin: String,
}

/// Handle to the NATS connection; cheap to clone. A disabled bus (no URL)
/// accepts every call and does nothing.
#[derive(Clone)]
pub struct Bus {
    inner: Option<Arc<Inner>>,
}

impl Bus {
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Connect in the background to `url`; an empty URL disables the bus.
    /// Fails only on a malformed URL.
    pub async fn connect(
        url: &str,
        config: &BusConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BusError> {
        if url.trim().is_empty() {
            tracing::info!("NATS disabled (empty nats_url): no prompts over NATS, no events");
            return Ok(Self::disabled());
        }
        let warned = Arc::new(AtomicBool::new(false));
        let w = warned.clone();
        let shown = redact(url);
        let shown_cb = shown.clone();
        let options = creds::apply(async_nats::ConnectOptions::new(), config, url).await?;
        let client = options
            .name("voxloop")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100 * attempts as u64).min(2000))
            })
            .event_callback(move |ev| {
                let w = w.clone();
                let shown = shown_cb.clone();
                async move {
                    match ev {
                        async_nats::Event::Connected => {
                            if w.swap(false, Ordering::Relaxed) {
                                tracing::info!(url = %shown, "NATS is back: prompts and events resume");
                            } else {
                                tracing::info!(url = %shown, "connected to NATS");
                            }
                        }
                        async_nats::Event::Disconnected => {
                            if !w.swap(true, Ordering::Relaxed) {
                                tracing::warn!(url = %shown, "lost NATS; voice sessions go on, events are dropped and prompts wait until it is back");
                            }
                        }
                        other => tracing::debug!(event = %other, "NATS event"),
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| BusError::Url {
                url: shown.clone(),
                message: e.to_string(),
            })?;
        let js = jetstream::new(client.clone());
        let (tx, rx) = mpsc::channel(config.event_buffer);
        let subjects = Subjects::new(&config.prefix);
        let heard = heard::HeardLog::new(js.clone(), subjects.heard_bucket());
        let kb = kb_store::KbStore::new(js.clone(), subjects.kb_bucket());
        let inner = Arc::new(Inner {
            url: shown,
            client,
            js,
            heard,
            kb,
            subjects,
            config: config.clone(),
            metrics,
            out: tx,
            warned,
            origin: format!("{:016x}", rand::random::<u64>()),
        });
        tokio::spawn(publish_loop(inner.clone(), rx));
        tokio::spawn(warn_if_unreachable(inner.clone()));
        Ok(Self { inner: Some(inner) })
    }

    /// `disabled`, `connected`, `connecting` or `disconnected`.
    pub fn state(&self) -> &'static str {
        match &self.inner {
            None => "disabled",
            Some(i) => match i.client.connection_state() {
                async_nats::connection::State::Connected => "connected",
                async_nats::connection::State::Pending => "connecting",
                async_nats::connection::State::Disconnected => "disconnected",
            },
        }
    }

    pub fn is_connected(&self) -> bool {
        self.state() == "connected"
    }

    /// The NATS connection (inference over NATS uses it too).
    pub fn client(&self) -> Option<&async_nats::Client> {
        self.inner.as_ref().map(|i| &i.client)
    }

    pub fn subjects(&self) -> Option<&Subjects> {
        self.inner.as_ref().map(|i| &i.subjects)
    }

    /// The shared knowledge-base bucket; `None` without NATS.
    pub fn kb_store(&self) -> Option<&kb_store::KbStore> {
        self.inner.as_ref().map(|i| &i.kb)
    }

    /// Has session `session` heard prompt `prompt_id` (on any server, within
    /// 24 h)? Always false without NATS or when the bucket cannot be read.
    pub async fn heard(&self, session: &str, prompt_id: &str) -> bool {
        match &self.inner {
            Some(i) => i.heard.heard(session, prompt_id).await,
            None => false,
        }
    }

    /// Remember that `session` heard `prompt_id`; call before acking it.
    pub async fn mark_heard(&self, session: &str, prompt_id: &str) {
        if let Some(i) = &self.inner {
            i.heard.mark(session, prompt_id).await;
        }
    }

    /// Queue an event for the event stream on `<prefix>.event.<kind>`
    /// (`kind` is the event's own, `Event::kind`). Never waits: a full
    /// buffer or a NATS outage drops it (counted in `bus_events_dropped_total`).
    pub fn publish_event<T: serde::Serialize>(&self, kind: &str, msg_id: String, payload: &T) {
        let Some(inner) = &self.inner else {
            return;
        };
        let payload = match serde_json::to_vec(payload) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, kind, "cannot serialize an event; dropped");
                Metrics::inc(&inner.metrics.bus_events_dropped);
                return;
            }
        };
        let out = Outgoing {
            subject: inner.subjects.event(kind),
            msg_id,
            payload,
        };
        if inner.out.try_send(out).is_err() {
            Metrics::inc(&inner.metrics.bus_events_dropped);
        }
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

async fn warn_if_unreachable(inner: Arc<Inner>) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    if inner.client.connection_state() != async_nats::connection::State::Connected
        && !inner.warned.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(
            url = %inner.url,
            "NATS is not reachable; serving voice sessions without it (no events, no NATS prompts) and retrying in the background"
        );
    }
}

/// Create (or update) the prompt and event streams.
pub async fn ensure_streams(
    js: &jetstream::Context,
    subjects: &Subjects,
    config: &BusConfig,
) -> Result<(), BusError> {
    let prompts = stream::Config {
        name: subjects.prompt_stream(),
        subjects: vec![subjects.prompt_all()],
        max_age: Duration::from_secs(24 * 3600),
        max_message_size: MAX_PROMPT_MESSAGE,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    js.get_or_create_stream(prompts)
        .await
        .map_err(|e| BusError::JetStream(format!("prompt stream: {e}")))?;
    let events = stream::Config {
        name: subjects.event_stream(),
        subjects: vec![subjects.event_all()],
        max_age: Duration::from_secs(config.event_retention_hours.max(1) * 3600),
        max_bytes: 256 * 1024 * 1024,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    js.get_or_create_stream(events)
        .await
        .map_err(|e| BusError::JetStream(format!("event stream: {e}")))?;
    // A copy outlives its deadline only when the server timing it out died;
    // whoever admits the session next drops it then (`hub::parked`).
    let parked = stream::Config {
        name: subjects.parked_stream(),
        subjects: vec![format!("{}.parked.*", subjects.prefix())],
        max_age: Duration::from_secs(3600),
        max_messages: MAX_PARKED,
        discard: stream::DiscardPolicy::New,
        max_message_size: MAX_PROMPT_MESSAGE,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    js.get_or_create_stream(parked)
        .await
        .map_err(|e| BusError::JetStream(format!("parked stream: {e}")))?;
    Ok(())
}

/// Open the message stream of the durable pull consumer `config` on
/// `stream` (a stream of [`ensure_streams`]), creating both if missing.
/// Used by the server's prompt consumer and the intent worker's event consumer.
pub async fn durable_messages(
    js: &jetstream::Context,
    subjects: &Subjects,
    bus: &BusConfig,
    stream: String,
    config: consumer::pull::Config,
) -> Result<consumer::pull::Stream, BusError> {
    ensure_streams(js, subjects, bus).await?;
    let name = config.durable_name.clone().unwrap_or_default();
    let consumer: consumer::PullConsumer = js
        .get_stream(&stream)
        .await
        .map_err(|e| BusError::JetStream(format!("stream {stream}: {e}")))?
        .get_or_create_consumer(&name, config)
        .await
        .map_err(|e| BusError::JetStream(format!("consumer {name}: {e}")))?;
    consumer
        .messages()
        .await
        .map_err(|e| BusError::JetStream(e.to_string()))
}

async fn publish_loop(inner: Arc<Inner>, mut rx: mpsc::Receiver<Outgoing>) {
    let mut streams_ready = false;
    while let Some(ev) = rx.recv().await {
        if inner.client.connection_state() != async_nats::connection::State::Connected {
            Metrics::inc(&inner.metrics.bus_events_dropped);
            streams_ready = false;
            continue;
        }
        if !streams_ready {
            match ensure_streams(&inner.js, &inner.subjects, &inner.config).await {
                Ok(()) => streams_ready = true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot set up the event stream; event dropped");
                    Metrics::inc(&inner.metrics.bus_events_dropped);
                    continue;
                }
            }
        }
        let sent = publish::publish_once(&inner.js, ev.subject, &ev.msg_id, ev.payload).await;
        if sent.is_ok() {
            Metrics::inc(&inner.metrics.bus_events_published);
        } else {
            Metrics::inc(&inner.metrics.bus_events_dropped);
            streams_ready = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_prefix() {
        let s = Subjects::new("voxloop");
        assert_eq!(
            s.prompt_session("abcdef123"),
            "voxloop.prompt.session.abcdef123"
        );
        assert_eq!(s.prompt_broadcast(), "voxloop.prompt.broadcast");
        assert_eq!(s.event("prompt.spoken"), "voxloop.event.prompt.spoken");
        assert_eq!(s.prompt_stream(), "VOXLOOP_PROMPTS");
        assert_eq!(s.heard_bucket(), "VOXLOOP_PROMPTS_HEARD");
        assert_eq!(s.kb_bucket(), "voxloop_kb");
        assert_eq!(Subjects::new("acme.voice-1").kb_bucket(), "acme_voice_1_kb");
        assert_eq!(
            Subjects::new("acme.voice-1").event_stream(),
            "ACME_VOICE_1_EVENTS"
        );
    }

    #[test]
    fn prompt_subjects_name_their_target() {
        let s = Subjects::new("voxloop");
        assert_eq!(
            s.target("voxloop.prompt.broadcast"),
            Some(Target::Broadcast)
        );
        assert_eq!(
            s.target("voxloop.prompt.session.0123456789abcdef"),
            Some(Target::Session("0123456789abcdef".into()))
        );
        assert_eq!(s.target("voxloop.prompt.session.x"), None);
        assert_eq!(s.target("voxloop.prompt.other"), None);
        assert_eq!(s.target("other.prompt.broadcast"), None);
        assert_eq!(s.target("voxloopx.prompt.broadcast"), None);
    }

    #[test]
    fn credentials_are_not_logged() {
        assert_eq!(
            redact("nats://u:secret@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
