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

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::bus::{BusError, Subjects, durable_messages};
use crate::config::Config;
use crate::events::{BusEvent, kind};
use crate::pipeline::llm::{ChatMessage, LlmBackend, LlmEvent, Role};
use crate::prompt::Prompt;

mod tracker;
pub use tracker::{Due, Tracker};

/// Tokens for one question.
const MAX_QUESTION_TOKENS: usize = 48;

const SYSTEM: &str = "You help a voice assistant keep a conversation going. \
Read the conversation and write ONE short, friendly follow-up question (at most 15 words) \
about the topic the user brought up. Write only the question.";

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
