//! Prompts parked for absent sessions. A prompt for a session no server
//! holds used to wait for its reconnect inside the prompt consumer, holding
//! one of its ack-pending slots for up to `prompts.reconnect_wait_ms`, so a
//! burst of prompts for absent sessions stalled every other prompt. Now the
//! consumer acks it once a copy is stored on `<prefix>.parked.<id>` (its own
//! stream), and the server that admits the session moves the copy back onto
//! the session's prompt subject, where it is delivered like any other.
//!
//! Order of writes keeps a crash from losing a prompt: the copy is stored
//! before the original is acked, and republished before it is deleted; a
//! prompt that ends up delivered twice is dropped by the heard log.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use async_nats::jetstream;
use async_nats::jetstream::stream::DeleteMessageErrorKind;

use super::publish::publish_once;
use super::{Bus, BusError, Inner};
use crate::prompt::Prompt;

/// What the parked stream stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParkedPrompt {
    pub prompt: Prompt,
    /// After this the prompt is dropped with `no_session`.
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
}

/// One parked copy and its sequence in the parked stream.
#[derive(Debug, Clone)]
pub struct ParkedCopy {
    pub seq: u64,
    pub parked: ParkedPrompt,
}

impl Bus {
    fn enabled(&self) -> Result<&Inner, BusError> {
        self.inner
            .as_deref()
            .ok_or_else(|| BusError::Nats("NATS is disabled".into()))
    }

    async fn parked_stream(&self) -> Result<jetstream::stream::Stream<()>, BusError> {
        let inner = self.enabled()?;
        inner
            .js
            .get_stream_no_info(inner.subjects.parked_stream())
            .await
            .map_err(|e| BusError::JetStream(format!("parked stream: {e}")))
    }

    /// Store `prompt` (prompt stream message `origin`) for absent session
    /// `id` until `until`; the copy's sequence.
    pub async fn park(
        &self,
        id: &str,
        prompt: &Prompt,
        origin: u64,
        until: OffsetDateTime,
    ) -> Result<u64, BusError> {
        let inner = self.enabled()?;
        let body = ParkedPrompt {
            prompt: prompt.clone(),
            until,
        };
        let payload = serde_json::to_vec(&body).map_err(|e| BusError::Nats(e.to_string()))?;
        let subject = inner.subjects.parked(id);
        // A redelivered original parks once (within the duplicate window; a
        // duplicate's ack names the first copy). Keyed by the message, not
        // the prompt id, so a prompt moved back and parked again is stored again.
        let msg_id = format!("parked-{origin}");
        publish_once(&inner.js, subject, &msg_id, payload)
            .await
            .map_err(|e| BusError::JetStream(e.to_string()))
    }

    /// The copies parked for session `id`, oldest first.
    pub async fn parked(&self, id: &str) -> Result<Vec<ParkedCopy>, BusError> {
        let subject = self.enabled()?.subjects.parked(id);
        let stream = self.parked_stream().await?;
        let mut out = Vec::new();
        let mut from = 0u64;
        loop {
            let got = stream
                .raw_message_builder()
                .sequence(from)
                .next_by_subject(subject.clone())
                .send()
                .await;
            let msg = match got {
                Ok(m) => m,
                Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                    return Ok(out);
                }
                Err(e) => return Err(BusError::JetStream(format!("parked prompts: {e}"))),
            };
            from = msg.sequence + 1;
            match serde_json::from_slice::<ParkedPrompt>(&msg.payload) {
                Ok(parked) => out.push(ParkedCopy {
                    seq: msg.sequence,
                    parked,
                }),
                // Only voxloop servers write there; anything else is skipped.
                Err(e) => {
                    tracing::warn!(error = %e, seq = msg.sequence, "unreadable parked prompt skipped")
                }
            }
        }
    }

    /// Delete parked copy `seq`: `Ok(true)` only for the caller that deleted
    /// it, so the server timing it out and the one republishing it never both
    /// act; `Ok(false)` when it is gone; an error when NATS did not answer.
    pub async fn unpark(&self, seq: u64) -> Result<bool, BusError> {
        let stream = self.parked_stream().await?;
        match stream.delete_message(seq).await {
            Ok(deleted) => Ok(deleted),
            // JetStream answered: no such message.
            Err(e) if matches!(e.kind(), DeleteMessageErrorKind::JetStream(_)) => Ok(false),
            Err(e) => Err(BusError::Nats(format!("delete parked prompt {seq}: {e}"))),
        }
    }

    /// Put parked copy `seq` of `prompt` back on session `id`'s prompt
    /// subject (once: the message id names the copy).
    pub async fn republish(&self, id: &str, prompt: &Prompt, seq: u64) -> Result<(), BusError> {
        let inner = self.enabled()?;
        let payload = serde_json::to_vec(prompt).map_err(|e| BusError::Nats(e.to_string()))?;
        let subject = inner.subjects.prompt_session(id);
        publish_once(&inner.js, subject, &format!("unparked-{seq}"), payload)
            .await
            .map(|_| ())
            .map_err(|e| BusError::JetStream(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_prompt_round_trips() {
        let until = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let p = ParkedPrompt {
            prompt: Prompt::new("Shall we go on?"),
            until,
        };
        let json = serde_json::to_string(&p).expect("serialize");
        let back: ParkedPrompt = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.until, until);
        assert_eq!(back.prompt.text, "Shall we go on?");
        assert_eq!(back.prompt.id, p.prompt.id);
    }
}
