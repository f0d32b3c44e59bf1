//! The chat types every LLM backend speaks: messages in, a streamed
//! [`Generation`] of [`LlmEvent`]s out, ending in a [`Completion`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    Stop,
    Length,
    Cancelled,
    Error(String),
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub finish: Finish,
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV cells were reused from the previous turn.
    pub reused_tokens: usize,
    pub generated: usize,
    /// From submission to the first token.
    pub first_token: Option<Duration>,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    Token(String),
    Done(Completion),
}

/// A running generation: read its events, or cancel it.
pub struct Generation {
    pub events: mpsc::UnboundedReceiver<LlmEvent>,
    cancel: Arc<AtomicBool>,
}

impl Generation {
    pub(crate) fn new(events: mpsc::UnboundedReceiver<LlmEvent>, cancel: Arc<AtomicBool>) -> Self {
        Self { events, cancel }
    }

    /// Stop generating; the engine ends it before decoding another token.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// A handle that cancels this generation from elsewhere.
    pub fn canceller(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Wait for the whole reply (tests, CLI).
    pub async fn collect(mut self) -> Completion {
        while let Some(ev) = self.events.recv().await {
            if let LlmEvent::Done(c) = ev {
                return c;
            }
        }
        Completion {
            text: String::new(),
            finish: Finish::Error("engine dropped the generation".into()),
            prompt_tokens: 0,
            reused_tokens: 0,
            generated: 0,
            first_token: None,
            elapsed: Duration::ZERO,
        }
    }
}
