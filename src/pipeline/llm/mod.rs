//! The LLM engine: llama.cpp (llama-cpp-2) on one dedicated thread, serving
//! every session from one model and one context.
//!
//! - **Continuous batching**: each active conversation has a sequence id and
//!   its own KV cells; every step decodes the next token of all of them in
//!   one llama.cpp batch, instead of running whole replies one after another.
//! - **Prefix reuse**: a conversation keeps its slot between turns; a new
//!   prompt only decodes the tokens after the longest prefix already in the
//!   KV cache (the system prompt and earlier turns are not re-read).
//! - **Streaming and cancellation**: tokens go out as they are sampled; a
//!   cancelled generation stops before its next token is decoded.
//! - **Warm-up**: while the user listens to a reply (or before the first
//!   question), the conversation's next prompt is prefilled up to where its
//!   next question goes, when no generation waits; the next reply then
//!   decodes little more than the question.
//!
//! Files: [`chat`] (the types every backend speaks), [`llama`] (the handle
//! to the embedded engine), [`engine`] (its thread: batching, KV reuse,
//! sampling; it remakes its context when the thread count should change;
//! `engine::kv` holds KV reuse, prefill and the warm-up),
//! [`utf8`] (token pieces into text) and [`http`] (an OpenAI-compatible server instead).

mod chat;
mod engine;
pub mod http;
mod llama;
mod utf8;

pub use chat::{ChatMessage, Completion, Finish, Generation, LlmEvent, Role};
pub use http::{HttpLlm, HttpLlmOptions};
pub use llama::{Llm, LlmError, LlmOptions};

use super::pool::Busy;

/// The default system prompt (a config default, so it lives there).
pub use crate::config::DEFAULT_SYSTEM_PROMPT;

/// The LLM behind the conversation: the embedded engine or an
/// OpenAI-compatible server, chosen by `llm.backend`.
pub enum LlmBackend {
    Embedded(Llm),
    Http(HttpLlm),
}

impl LlmBackend {
    /// Start a reply for conversation `key` (the embedded engine reuses its KV cells).
    pub fn generate(
        &self,
        key: u64,
        messages: Vec<ChatMessage>,
        max_tokens: Option<usize>,
    ) -> Result<Generation, Busy> {
        match self {
            LlmBackend::Embedded(l) => l.generate(key, messages, max_tokens),
            LlmBackend::Http(h) => h.generate(messages, max_tokens),
        }
    }

    /// Prefill conversation `key`'s next prompt ahead of its question
    /// (embedded only: a server behind HTTP keeps its own cache).
    pub fn warm(&self, key: u64, messages: Vec<ChatMessage>, so_far: String) {
        if let LlmBackend::Embedded(l) = self {
            l.warm(key, messages, so_far);
        }
    }

    /// The conversation is over.
    pub fn forget(&self, key: u64) {
        if let LlmBackend::Embedded(l) = self {
            l.forget(key);
        }
    }

    /// Prompt tokens prefilled by warm-ups so far.
    pub fn warmed_tokens(&self) -> usize {
        match self {
            LlmBackend::Embedded(l) => l.warmed_tokens(),
            LlmBackend::Http(_) => 0,
        }
    }

    pub fn pending(&self) -> usize {
        match self {
            LlmBackend::Embedded(l) => l.pending(),
            LlmBackend::Http(h) => h.pending(),
        }
    }
}
