//! `voxloop intent-worker`: the design's "scheduled task that analyses user
//! intent", as a separate process on the bus.
//!
//! It consumes the server's conversation events (transcripts, replies,
//! session start/end) from the event stream with its own durable consumer,
//! keeps the last few lines of each conversation ([`Tracker`], IO-free), and
//! when a user brought something up and then the conversation went quiet for
//! `intent.quiet_ms`, asks the LLM for one short follow-up question and
//! publishes it as a Prompt (dedupe key per session, with an expiry). The
//! server then speaks it at the next natural moment.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::bus::{BusError, Subjects, durable_messages};
use crate::config::{Config, IntentConfig};
use crate::events::{BusEvent, Event, kind};
use crate::pipeline::llm::{ChatMessage, LlmBackend, LlmEvent, Role};
use crate::prompt::Prompt;

/// Lines of a conversation kept per session.
const KEEP_LINES: usize = 8;
/// Conversations followed at once; past it the quietest is forgotten, so a
/// flood of made-up session ids cannot grow the worker without bound.
const MAX_TRACKED: usize = 10_000;
/// Longest line kept from an event, in characters (the prompt stays short).
const MAX_LINE_CHARS: usize = 600;
/// Tokens for one question.
const MAX_QUESTION_TOKENS: usize = 48;

const SYSTEM: &str = "You help a voice assistant keep a conversation going. \
Read the conversation and write ONE short, friendly follow-up question (at most 15 words) \
about the topic the user brought up. Write only the question.";

struct Conv {
    lines: VecDeque<(Role, String)>,
    last_activity: Instant,
    /// The user said something that no follow-up has picked up yet.
    open: bool,
    followups: u32,
}

/// A follow-up to ask: which session, and the conversation so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub session_id: String,
    pub lines: Vec<(Role, String)>,
    /// 1 for the first follow-up of the session, ...
    pub number: u32,
}

/// What the worker knows of each live conversation. No IO, no clock.
pub struct Tracker {
    cfg: IntentConfig,
    sessions: HashMap<String, Conv>,
}

impl Tracker {
    pub fn new(cfg: IntentConfig) -> Self {
        Self {
            cfg,
            sessions: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Take in one event from the bus.
    pub fn on_event(&mut self, ev: &BusEvent, now: Instant) {
        // Only ids a server could have made: anything else cannot be
        // prompted (the subject would be invalid) and is not worth memory.
        let Some(id) = ev
            .session_id
            .as_deref()
            .filter(|id| crate::bus::valid_session_id(id))
        else {
            return;
        };
        if let Event::SessionEnded { .. } = ev.event {
            self.sessions.remove(id);
            return;
        }
        if !self.sessions.contains_key(id)
            && self.sessions.len() >= MAX_TRACKED
            && let Some(quietest) = self
                .sessions
                .iter()
                .min_by_key(|(_, c)| c.last_activity)
                .map(|(k, _)| k.clone())
        {
            self.sessions.remove(&quietest);
        }
        let conv = self.sessions.entry(id.to_string()).or_insert_with(|| Conv {
            lines: VecDeque::new(),
            last_activity: now,
            open: false,
            followups: 0,
        });
        conv.last_activity = now;
        let (role, text) = match &ev.event {
            Event::Transcript { text, .. } => (Role::User, text.trim()),
            Event::Reply { text, .. } => (Role::Assistant, text.trim()),
            _ => return,
        };
        if text.is_empty() {
            return;
        }
        if role == Role::User {
            conv.open = true;
        }
        conv.lines
            .push_back((role, text.chars().take(MAX_LINE_CHARS).collect()));
        while conv.lines.len() > KEEP_LINES {
            conv.lines.pop_front();
        }
    }

    /// Sessions that need a follow-up now; each is returned once per opening.
    pub fn due(&mut self, now: Instant) -> Vec<Due> {
        let quiet = Duration::from_millis(self.cfg.quiet_ms);
        let mut out = Vec::new();
        for (id, c) in self.sessions.iter_mut() {
            if c.open
                && c.followups < self.cfg.max_followups
                && now.saturating_duration_since(c.last_activity) >= quiet
            {
                c.open = false;
                c.followups += 1;
                out.push(Due {
                    session_id: id.clone(),
                    lines: c.lines.iter().cloned().collect(),
                    number: c.followups,
                });
            }
        }
        out.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        out
    }
}

/// The LLM request for a follow-up on `lines`.
pub fn question_messages(lines: &[(Role, String)]) -> Vec<ChatMessage> {
    let transcript: Vec<String> = lines
        .iter()
        .map(|(r, t)| match r {
            Role::User => format!("User: {t}"),
            _ => format!("Assistant: {t}"),
        })
        .collect();
    vec![
        ChatMessage::new(Role::System, SYSTEM),
        ChatMessage::new(
            Role::User,
            format!(
                "Conversation:\n{}\n\nThe user has gone quiet. Your follow-up question:",
                transcript.join("\n")
            ),
        ),
    ]
}

/// One clean question out of what the LLM wrote, or `None` if there is none.
pub fn clean_question(raw: &str) -> Option<String> {
    let line = raw
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())?
        .trim_start_matches(|c: char| {
            c == '"' || c == '\'' || c == '-' || c == '*' || c.is_whitespace()
        });
    let line = ["Follow-up question:", "Question:", "Assistant:", "Q:"]
        .iter()
        .fold(line, |l, p| l.strip_prefix(p).unwrap_or(l))
        .trim();
    let q = match line.find('?') {
        Some(i) => &line[..=i],
        None => line.trim_end_matches(['.', '!', '"', '\'']),
    };
    let words: Vec<&str> = q.split_whitespace().collect();
    if words.len() < 3 {
        return None;
    }
    let mut q: String = words[..words.len().min(25)].join(" ");
    q = q.trim_matches(|c: char| c == '"' || c == '\'').to_string();
    if !q.ends_with('?') {
        q.push('?');
    }
    Some(q)
}

/// The worker could not start or lost NATS for good.
#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    #[error(transparent)]
    Engine(#[from] crate::engines::EngineError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("model loading thread failed: {0}")]
    Join(String),
}

/// Ask the LLM for a follow-up question on `due`.
pub async fn ask(llm: &LlmBackend, due: &Due) -> Option<String> {
    let key = rand::random::<u64>();
    let mut generation = llm
        .generate(
            key,
            question_messages(&due.lines),
            Some(MAX_QUESTION_TOKENS),
        )
        .ok()?;
    let mut text = String::new();
    while let Some(ev) = generation.events.recv().await {
        match ev {
            LlmEvent::Token(t) => text.push_str(&t),
            LlmEvent::Done(_) => break,
        }
    }
    llm.forget(key);
    let q = clean_question(&text);
    if q.is_none() {
        tracing::warn!(raw = %text, "the LLM gave no usable question");
    }
    q
}

/// Run the worker until `cancel`.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), IntentError> {
    let cfg = config.clone();
    let llm = tokio::task::spawn_blocking(move || crate::engines::load_llm_backend(&cfg))
        .await
        .map_err(|e| IntentError::Join(e.to_string()))??;
    let llm = Arc::new(llm);
    let client = crate::bus::creds::apply(
        async_nats::ConnectOptions::new(),
        &config.bus,
        &config.nats_url,
    )
    .await?
    .name("voxloop-intent-worker")
    .retry_on_initial_connect()
    .max_reconnects(None)
    .connect(&config.nats_url)
    .await
    .map_err(|e| BusError::Url {
        url: config.nats_url.clone(),
        message: e.to_string(),
    })?;
    let js = jetstream::new(client.clone());
    let subjects = Subjects::new(&config.bus.prefix);
    let mut tracker = Tracker::new(config.intent.clone());
    println!("intent-worker: ready (quiet {} ms)", config.intent.quiet_ms);
    let mut failures = 0u32;
    while !cancel.is_cancelled() {
        match consume(&js, &subjects, &config, &llm, &mut tracker, &cancel).await {
            Ok(()) => break,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error = %e, "event consumer stopped; setting it up again");
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
    Ok(())
}

async fn consume(
    js: &jetstream::Context,
    subjects: &Subjects,
    config: &Config,
    llm: &Arc<LlmBackend>,
    tracker: &mut Tracker,
    cancel: &CancellationToken,
) -> Result<(), BusError> {
    let name = config.intent.consumer.clone();
    let mut messages = durable_messages(
        js,
        subjects,
        &config.bus,
        subjects.event_stream(),
        consumer::pull::Config {
            durable_name: Some(name),
            deliver_policy: consumer::DeliverPolicy::New,
            ack_policy: consumer::AckPolicy::Explicit,
            filter_subjects: [
                kind::TRANSCRIPT,
                kind::REPLY,
                kind::SESSION_STARTED,
                kind::SESSION_ENDED,
            ]
            .map(|k| subjects.event(k))
            .to_vec(),
            ..Default::default()
        },
    )
    .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(config.intent.tick_ms.max(50)));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            m = messages.next() => {
                let msg = match m {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err(BusError::Nats(e.to_string())),
                    None => return Err(BusError::Nats("event stream ended".into())),
                };
                match serde_json::from_slice::<BusEvent>(&msg.payload) {
                    Ok(ev) => tracker.on_event(&ev, Instant::now()),
                    Err(e) => tracing::warn!(subject = %msg.subject, error = %e, "not a known event; skipped"),
                }
                let _ = msg.ack().await;
            }
            _ = tick.tick() => {
                for due in tracker.due(Instant::now()) {
                    let llm = llm.clone();
                    let js = js.clone();
                    let subjects = subjects.clone();
                    let expires = config.intent.expires_s;
                    tokio::spawn(async move {
                        let Some(text) = ask(&llm, &due).await else { return };
                        let mut prompt = Prompt::new(text);
                        prompt.id = format!("followup-{}-{}", due.session_id, due.number);
                        prompt.dedupe_key = Some(format!("followup:{}", due.session_id));
                        prompt.expires_at = Some(crate::bus::say::expires_in(Duration::from_secs(expires)));
                        if let Err(e) = publish_prompt(&js, &subjects, &due.session_id, &prompt).await {
                            tracing::warn!(error = %e, session = %due.session_id, "could not publish a follow-up");
                            return;
                        }
                        println!("followup: session={} prompt={} text={}", due.session_id, prompt.id, prompt.text);
                    });
                }
            }
        }
    }
}

async fn publish_prompt(
    js: &jetstream::Context,
    subjects: &Subjects,
    session_id: &str,
    prompt: &Prompt,
) -> Result<(), BusError> {
    let payload = serde_json::to_vec(prompt).map_err(|e| BusError::Nats(e.to_string()))?;
    crate::bus::publish::publish_once(js, subjects.prompt_session(session_id), &prompt.id, payload)
        .await
        .map_err(|e| BusError::JetStream(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(quiet_ms: u64) -> IntentConfig {
        IntentConfig {
            quiet_ms,
            max_followups: 2,
            ..Default::default()
        }
    }

    fn on_bus(session_id: Option<&str>, event: Event) -> BusEvent {
        BusEvent {
            session_id: session_id.map(str::to_string),
            seq: Some(1),
            at: "2026-01-01T00:00:00Z".into(),
            event,
        }
    }

    fn said(session_id: Option<&str>, text: &str) -> BusEvent {
        on_bus(
            session_id,
            Event::Transcript {
                turn: 1,
                text: text.into(),
                is_final: true,
                typed: false,
            },
        )
    }

    #[test]
    fn bad_ids_are_ignored_and_the_tracker_is_bounded() {
        let mut t = Tracker::new(cfg(1000));
        let t0 = Instant::now();
        t.on_event(&said(Some("../../etc"), "hello"), t0);
        t.on_event(&said(Some("x"), "hello"), t0);
        assert!(t.is_empty());
        for i in 0..MAX_TRACKED + 5 {
            let id = format!("session-{i:08}");
            t.on_event(
                &said(Some(&id), "hello"),
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(t.len(), MAX_TRACKED);
        // The quietest (the first ones) went.
        assert!(!t.sessions.contains_key("session-00000000"));
        assert!(
            t.sessions
                .contains_key(&format!("session-{:08}", MAX_TRACKED + 4))
        );
        let long = "word ".repeat(1000);
        t.on_event(&said(Some("session-long-1"), &long), t0);
        let kept = &t.sessions["session-long-1"].lines[0].1;
        assert_eq!(kept.chars().count(), MAX_LINE_CHARS);
    }

    #[test]
    fn follows_up_once_after_the_user_goes_quiet() {
        let mut t = Tracker::new(cfg(1000));
        let t0 = Instant::now();
        t.on_event(
            &on_bus(Some("session-1"), Event::SessionStarted { turn: 0 }),
            t0,
        );
        assert!(
            t.due(t0 + Duration::from_secs(5)).is_empty(),
            "nothing said yet"
        );
        t.on_event(
            &said(Some("session-1"), "I'm planning a trip to Japan."),
            t0,
        );
        let reply = Event::Reply {
            turn: 1,
            text: "How exciting!".into(),
            interrupted: false,
            prompt_id: None,
            sources: Vec::new(),
        };
        t.on_event(
            &on_bus(Some("session-1"), reply),
            t0 + Duration::from_millis(500),
        );
        assert!(
            t.due(t0 + Duration::from_millis(1400)).is_empty(),
            "not quiet long enough"
        );
        let due = t.due(t0 + Duration::from_millis(1600));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].session_id, "session-1");
        assert_eq!(due[0].number, 1);
        assert_eq!(due[0].lines.len(), 2);
        assert!(
            t.due(t0 + Duration::from_secs(60)).is_empty(),
            "once per opening"
        );
    }

    #[test]
    fn stops_after_the_limit_and_forgets_ended_sessions() {
        let mut t = Tracker::new(cfg(0));
        let t0 = Instant::now();
        for i in 0..4 {
            t.on_event(&said(Some("session-2"), &format!("topic {i}")), t0);
            let n = t.due(t0).len();
            assert_eq!(n, usize::from(i < 2), "round {i}");
        }
        t.on_event(
            &on_bus(Some("session-2"), Event::SessionEnded { turn: 4 }),
            t0,
        );
        assert!(t.is_empty());
        t.on_event(&said(None, "no session id"), t0);
        assert!(t.is_empty());
    }

    #[test]
    fn questions_are_cleaned() {
        assert_eq!(
            clean_question("\"What part of Japan are you most excited to visit?\" I hope"),
            Some("What part of Japan are you most excited to visit?".into())
        );
        assert_eq!(
            clean_question("Question: Have you packed yet\nMore text"),
            Some("Have you packed yet?".into())
        );
        assert_eq!(clean_question(""), None);
        assert_eq!(clean_question("Okay."), None);
    }

    #[test]
    fn the_request_carries_the_conversation() {
        let m = question_messages(&[
            (Role::User, "I like jazz".into()),
            (Role::Assistant, "Nice!".into()),
        ]);
        assert_eq!(m.len(), 2);
        assert!(m[1].content.contains("User: I like jazz"));
        assert!(m[1].content.contains("Assistant: Nice!"));
    }
}
