//! Inference over NATS: `voxloop worker` serves ASR, LLM, TTS and the
//! knowledge base's document embedder ([`worker`]), `serve --inference nats` uses them ([`client`]), and
//! `voxloop workers` lists them ([`directory`]).
//!
//! Why the NATS service API rather than a JetStream work queue: a turn's
//! work is worth nothing seconds later, so nothing should be stored and
//! replayed; what matters is an immediate "busy" from a full worker, a
//! request that reaches a live worker or fails at once ("no responders"),
//! and discovery and per-endpoint stats for free (`$SRV.PING/INFO/STATS`).
//! Queue groups spread requests over the workers. The streamed results
//! (tokens, audio) go to a subject the server subscribed to before asking.
//!
//! Subjects, under the bus prefix (`voxloop`):
//! - `<prefix>.infer.asr|llm|tts|embed`: requests, queue group `q`;
//! - `<prefix>.infer.w.<worker>.llm`: requests for one worker (the one
//!   holding a conversation's KV cells);
//! - `<prefix>.infer.w.<worker>.control`: cancel a job, forget a conversation.

pub mod call;
pub mod client;
pub mod directory;
pub mod embed;
mod jobs;
pub mod load;
pub mod setup;
pub mod wire;
pub mod worker;

use std::time::Duration;

pub use client::{LocalEngines, RemoteInference};
pub use directory::{Directory, WorkerInfo};
pub use wire::Role;

/// The NATS service name every worker registers.
pub const SERVICE: &str = "voxloop-worker";
/// A working worker sends at least this often.
pub const HEARTBEAT: Duration = Duration::from_millis(100);
/// Silence for this long means the worker is gone.
pub const DEAD_AFTER: Duration = Duration::from_millis(500);

/// The worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("worker set-up: {0}")]
    Setup(String),
}

/// The inference subjects under one prefix.
#[derive(Debug, Clone)]
pub struct InferSubjects {
    prefix: String,
}

impl InferSubjects {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// Requests any worker of the role may take.
    pub fn role(&self, role: Role) -> String {
        format!("{}.infer.{}", self.prefix, role.as_str())
    }

    /// Requests for one worker.
    pub fn direct(&self, worker: &str, role: Role) -> String {
        format!("{}.infer.w.{worker}.{}", self.prefix, role.as_str())
    }

    pub fn control(&self, worker: &str) -> String {
        format!("{}.infer.w.{worker}.control", self.prefix)
    }
}

/// Parse `asr,llm,tts,embed` (any subset, in any order).
pub fn parse_roles(s: &str) -> Result<Vec<Role>, String> {
    let mut roles: Vec<Role> = s
        .split(',')
        .filter(|r| !r.trim().is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err("no roles: expected some of asr,llm,tts,embed".into());
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_roles("embed,asr,llm,tts").unwrap(),
            Role::ALL.to_vec()
        );
        assert_eq!(
            parse_roles("tts, asr,tts").unwrap(),
            vec![Role::Asr, Role::Tts]
        );
        assert!(parse_roles("").is_err());
        assert!(parse_roles("asr,gpu").unwrap_err().contains("gpu"));
    }

    #[test]
    fn subjects_sit_under_the_prefix() {
        let s = InferSubjects::new("vx");
        assert_eq!(s.role(Role::Llm), "vx.infer.llm");
        assert_eq!(s.direct("ab12", Role::Llm), "vx.infer.w.ab12.llm");
        assert_eq!(s.control("ab12"), "vx.infer.w.ab12.control");
    }
}
