//! Which prompts each session has heard, in a JetStream key-value bucket
//! (`<PREFIX>_PROMPTS_HEARD`), so a redelivered prompt is spoken once even
//! after a resume on another server or a restart.
//!
//! The in-memory check of a session's prompt queue catches repeats within
//! one connection; this one catches the rest: a server that died after the
//! last frame played but before its ack, or a prompt republished under the
//! same id. A key lives as long as the prompt stream keeps a message (24 h),
//! so nothing the stream can redeliver is forgotten.
//!
//! Failures never stop a prompt: when the bucket cannot be read, the prompt
//! is spoken (at least once wins over at most once), and the failure logged.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use base64::Engine as _;
use tokio::sync::Mutex;

/// How long a prompt id is remembered: the prompt stream's `max_age`.
pub const HEARD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest wait for the bucket; past it the prompt is treated as unheard.
const KV_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a heard prompt keeps being written while NATS is away.
pub const MARK_RETRY_FOR: Duration = Duration::from_secs(600);

pub struct HeardLog {
    js: jetstream::Context,
    bucket: String,
    /// Opened on first use and again after a failure (NATS may come later).
    store: Mutex<Option<kv::Store>>,
}

/// The key of `prompt_id` in `session`: session ids are already key-safe;
/// prompt ids are free text, so they go in base64url. `None` for an empty id.
pub fn key(session: &str, prompt_id: &str) -> Option<String> {
    if prompt_id.is_empty() || session.is_empty() {
        return None;
    }
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(prompt_id);
    Some(format!("{session}.{id}"))
}

#[derive(Debug, thiserror::Error)]
enum KvError {
    #[error("{0}")]
    Nats(String),
    #[error("no answer within {KV_TIMEOUT:?}")]
    Timeout,
}

impl HeardLog {
    pub fn new(js: jetstream::Context, bucket: String) -> Self {
        Self {
            js,
            bucket,
            store: Mutex::new(None),
        }
    }

    async fn store(&self) -> Result<kv::Store, KvError> {
        let mut slot = self.store.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let config = kv::Config {
            bucket: self.bucket.clone(),
            description: "voxloop: prompt ids each session has heard".into(),
            history: 1,
            max_age: HEARD_TTL,
            max_bytes: 64 * 1024 * 1024,
            ..Default::default()
        };
        let store = tokio::time::timeout(KV_TIMEOUT, self.js.create_or_update_key_value(config))
            .await
            .map_err(|_| KvError::Timeout)?
            .map_err(|e| KvError::Nats(e.to_string()))?;
        *slot = Some(store.clone());
        Ok(store)
    }

    async fn forget_store(&self) {
        *self.store.lock().await = None;
    }

    /// Has `session` heard `prompt_id`? False when unknown or unreadable.
    pub async fn heard(&self, session: &str, prompt_id: &str) -> bool {
        let Some(key) = key(session, prompt_id) else {
            return false;
        };
        let got = async {
            let store = self.store().await?;
            tokio::time::timeout(KV_TIMEOUT, store.get(key))
                .await
                .map_err(|_| KvError::Timeout)?
                .map_err(|e| KvError::Nats(e.to_string()))
        }
        .await;
        match got {
            Ok(v) => v.is_some(),
            Err(e) => {
                tracing::warn!(session, prompt = prompt_id, error = %e, bucket = %self.bucket, "cannot read which prompts were heard; speaking it (it may be heard twice)");
                self.forget_store().await;
                false
            }
        }
    }

    /// Remember that `session` heard `prompt_id` (before its message is
    /// acked). While NATS does not answer (an outage) this tries again for up
    /// to [`MARK_RETRY_FOR`]: the ack could not get through before NATS is
    /// back anyway.
    pub async fn mark(&self, session: &str, prompt_id: &str) {
        let Some(key) = key(session, prompt_id) else {
            return;
        };
        let give_up = std::time::Instant::now() + MARK_RETRY_FOR;
        let mut backoff = super::backoff::Backoff::default();
        let mut warned = false;
        loop {
            let put = async {
                let store = self.store().await?;
                let at = crate::bus::now_rfc3339();
                tokio::time::timeout(KV_TIMEOUT, store.put(&key, at.into_bytes().into()))
                    .await
                    .map_err(|_| KvError::Timeout)?
                    .map_err(|e| KvError::Nats(e.to_string()))
            }
            .await;
            let Err(e) = put else {
                if warned {
                    tracing::info!(
                        session,
                        prompt = prompt_id,
                        "heard prompt recorded after all"
                    );
                }
                return;
            };
            self.forget_store().await;
            if std::time::Instant::now() >= give_up {
                tracing::warn!(session, prompt = prompt_id, error = %e, bucket = %self.bucket, "cannot record a heard prompt; a redelivery would be spoken again");
                return;
            }
            if !warned {
                warned = true;
                tracing::warn!(session, prompt = prompt_id, error = %e, bucket = %self.bucket, "cannot record a heard prompt yet; trying again until NATS answers");
            }
            backoff.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_for_any_prompt_id() {
        let valid = |k: &str| {
            !k.starts_with('.')
                && !k.ends_with('.')
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=/.".contains(c))
        };
        for id in ["p-1", "followup:abc/1", "a b.c*>", "é✓", &"x".repeat(128)] {
            let k = key("session-01", id).unwrap();
            assert!(valid(&k), "{id:?} gives {k:?}");
        }
        assert_ne!(key("s1234567", "a"), key("s1234567", "b"));
        assert_ne!(key("s1234567", "a"), key("s7654321", "a"));
        assert_eq!(key("s1234567", ""), None);
    }
}
