//! Proactive prompts as every layer sees them: the [`Prompt`] payload and its
//! validation into a prompt or a [`DropReason`], the [`PromptOutcome`] that
//! reports each one back, and the [`Control`] commands a live session takes.
//!
//! It sits below both the pipeline (which queues and speaks prompts) and the
//! bus, hub and REST handler (which deliver them), so neither has to import
//! the other. Pure types and functions (plus the oneshot of a delivery), so
//! every bad payload is unit-tested here.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A proactive question to speak into a live session (DESIGN.md §3).
///
/// Unknown fields are refused rather than ignored: a typo such as
/// `"expire_at"` would otherwise silently make a prompt live forever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    /// Unique per prompt; a redelivered or republished id is spoken once.
    pub id: String,
    pub text: String,
    /// Higher first.
    #[serde(default)]
    pub priority: i32,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
    /// A newer prompt with the same key replaces an older one still queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
    /// May cut the assistant's own reply (never the user).
    #[serde(default)]
    pub interrupt: bool,
}

impl Prompt {
    /// A prompt with a fresh random id and default options.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            id: format!("p-{:016x}", rand::random::<u64>()),
            text: text.into(),
            priority: 0,
            expires_at: None,
            dedupe_key: None,
            interrupt: false,
        }
    }

    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// Why a prompt was not spoken; the `reason` of a `prompt.dropped` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Its `expires_at` passed before a natural moment to speak came.
    Expired,
    /// No live session with that id (after waiting for a reconnect).
    NoSession,
    /// The session ended while the prompt waited.
    SessionEnded,
    /// A newer prompt with the same `dedupe_key` took its place.
    Replaced,
    /// Its id was already spoken or queued in this session.
    Duplicate,
    /// Not JSON, or fields missing, ill-typed or unknown.
    BadPayload,
    /// Text over the configured limit.
    TooLarge,
    /// The session's prompt queue was full of higher-priority prompts.
    QueueFull,
    /// Speech synthesis failed.
    TtsFailed,
    /// The session runs a pipeline that cannot speak (echo).
    NoSpeech,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Expired => "expired",
            DropReason::NoSession => "no_session",
            DropReason::SessionEnded => "session_ended",
            DropReason::Replaced => "replaced",
            DropReason::Duplicate => "duplicate",
            DropReason::BadPayload => "bad_payload",
            DropReason::TooLarge => "too_large",
            DropReason::QueueFull => "queue_full",
            DropReason::TtsFailed => "tts_failed",
            DropReason::NoSpeech => "no_speech_pipeline",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payload that is not a usable prompt: the reason, a sentence, and the id
/// if one could be read (so the `dropped` event can name it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejected {
    pub reason: DropReason,
    pub detail: String,
    pub prompt_id: Option<String>,
}

/// Longest accepted id or dedupe key.
pub const MAX_ID_LEN: usize = 128;

/// Parse and check a prompt payload. `max_chars` bounds the text.
pub fn parse_prompt(bytes: &[u8], max_chars: usize) -> Result<Prompt, Rejected> {
    // Read the id first, loosely, so even a rejected payload can be named.
    let loose: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    let prompt_id = loose
        .as_ref()
        .and_then(|v| v.get("id"))
        .and_then(|v| v.as_str())
        .map(|s| s.chars().take(MAX_ID_LEN).collect::<String>());
    let reject = |reason, detail: String| Rejected {
        reason,
        detail,
        prompt_id: prompt_id.clone(),
    };
    if loose.is_none() {
        let detail = match std::str::from_utf8(bytes) {
            Ok(_) => "payload is not JSON".to_string(),
            Err(_) => "payload is not UTF-8 JSON".to_string(),
        };
        return Err(reject(DropReason::BadPayload, detail));
    }
    // Size before schema: a huge text is `too_large` even with other faults.
    if let Some(text) = loose
        .as_ref()
        .and_then(|v| v.get("text"))
        .and_then(|v| v.as_str())
    {
        let n = text.chars().count();
        if n > max_chars {
            return Err(reject(
                DropReason::TooLarge,
                format!("text of {n} characters is over the {max_chars}-character limit"),
            ));
        }
    }
    let p: Prompt = serde_json::from_slice(bytes)
        .map_err(|e| reject(DropReason::BadPayload, format!("not a Prompt: {e}")))?;
    if p.id.is_empty() || p.id.len() > MAX_ID_LEN {
        return Err(reject(
            DropReason::BadPayload,
            format!("id must be 1 to {MAX_ID_LEN} bytes"),
        ));
    }
    if p.text.trim().is_empty() {
        return Err(reject(DropReason::BadPayload, "text is empty".into()));
    }
    if p.dedupe_key.as_ref().is_some_and(|k| k.len() > MAX_ID_LEN) {
        return Err(reject(
            DropReason::BadPayload,
            format!("dedupe_key is over {MAX_ID_LEN} bytes"),
        ));
    }
    Ok(p)
}

/// How a delivered prompt ended, reported back to whoever delivered it
/// (across servers too: `bus::relay`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum PromptOutcome {
    /// Its audio was synthesized and queued for playout as `turn`.
    Spoken {
        turn: u64,
    },
    Dropped(DropReason),
}

/// A prompt handed to one session, with the channel for its outcome.
#[derive(Debug)]
pub struct PromptDelivery {
    pub prompt: Prompt,
    pub done: tokio::sync::oneshot::Sender<PromptOutcome>,
}

impl PromptDelivery {
    pub fn new(prompt: Prompt) -> (Self, tokio::sync::oneshot::Receiver<PromptOutcome>) {
        let (done, rx) = tokio::sync::oneshot::channel();
        (Self { prompt, done }, rx)
    }
}

/// Commands a live session accepts besides audio.
#[derive(Debug)]
pub enum Control {
    /// Speak this prompt at the next natural moment.
    Prompt(PromptDelivery),
    /// A typed user message: answered as if it had been said.
    Text(String),
    /// The server is draining: tell the client it ends within `deadline_ms`.
    Draining { deadline_ms: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Prompt, Rejected> {
        parse_prompt(s.as_bytes(), 1000)
    }

    #[test]
    fn accepts_a_full_prompt() {
        let p = parse(
            r#"{"id":"a1","text":"How was your trip?","priority":3,"expires_at":"2030-01-02T03:04:05Z","dedupe_key":"trip","interrupt":true}"#,
        )
        .expect("valid");
        assert_eq!(p.id, "a1");
        assert_eq!(p.priority, 3);
        assert!(p.interrupt);
        assert_eq!(p.dedupe_key.as_deref(), Some("trip"));
        assert!(!p.expired(OffsetDateTime::now_utc()));
        let minimal = parse(r#"{"id":"b","text":"Hi"}"#).expect("valid");
        assert_eq!(minimal.priority, 0);
        assert!(minimal.expires_at.is_none());
    }

    #[test]
    fn rejects_bad_payloads_with_reasons() {
        let cases = [
            ("not json", DropReason::BadPayload, None),
            (r#"{"id":"x"}"#, DropReason::BadPayload, Some("x")),
            (
                r#"{"id":"x","text":"  "}"#,
                DropReason::BadPayload,
                Some("x"),
            ),
            (r#"{"text":"hi"}"#, DropReason::BadPayload, None),
            (
                r#"{"id":"x","text":"hi","colour":"red"}"#,
                DropReason::BadPayload,
                Some("x"),
            ),
            (
                r#"{"id":"x","text":"hi","expires_at":"tomorrow"}"#,
                DropReason::BadPayload,
                Some("x"),
            ),
            (r#"{"id":"","text":"hi"}"#, DropReason::BadPayload, Some("")),
            (r#"[1,2]"#, DropReason::BadPayload, None),
        ];
        for (input, reason, id) in cases {
            let e = parse(input).expect_err(input);
            assert_eq!(e.reason, reason, "{input}: {e}");
            assert_eq!(e.prompt_id.as_deref(), id, "{input}");
        }
        let e = parse_prompt(&[0xff, 0xfe, 0x00], 1000).expect_err("binary");
        assert_eq!(e.reason, DropReason::BadPayload);
        assert!(e.detail.contains("UTF-8"), "{}", e.detail);
    }

    #[test]
    fn oversized_text_is_too_large() {
        let text = "a".repeat(1 << 20);
        let body = serde_json::json!({"id": "big", "text": text}).to_string();
        let e = parse_prompt(body.as_bytes(), 1000).expect_err("too large");
        assert_eq!(e.reason, DropReason::TooLarge);
        assert_eq!(e.prompt_id.as_deref(), Some("big"));
    }

    #[test]
    fn expiry_is_compared_with_now() {
        let mut p = Prompt::new("hello");
        let now = OffsetDateTime::now_utc();
        p.expires_at = Some(now - time::Duration::seconds(1));
        assert!(p.expired(now));
        p.expires_at = Some(now + time::Duration::seconds(1));
        assert!(!p.expired(now));
    }
}
