//! Prompts for absent sessions wait outside the prompt consumer
//! (`bus::parked`): this server parks them, times them out, and moves them
//! back when it admits their session.
//!
//! A copy is handled by whoever deletes it from the parked stream: the
//! parking server at the deadline (the prompt is dropped with `no_session`),
//! or the server admitting the session before that (it republishes the
//! prompt first, so a crash between the two delivers it twice at worst, and
//! the heard log speaks it once). A session admitted on another server in the
//! millisecond between this server's relay miss and its park gets the prompt
//! at its next admission, or the `no_session` event at the deadline.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::Hub;
use crate::bus::parked::ParkedCopy;
use crate::metrics::Metrics;
use crate::prompt::{DropReason, Prompt, PromptOutcome};

impl Hub {
    /// Park `prompt` for absent session `id` until its reconnect deadline;
    /// false when JetStream would not take it (the caller retries later).
    pub(super) async fn park(self: &Arc<Self>, id: &str, prompt: &Prompt, origin: u64) -> bool {
        let wait = self
            .reconnect_deadline(prompt)
            .saturating_duration_since(std::time::Instant::now());
        let until = OffsetDateTime::now_utc() + wait;
        let seq = match self.bus.park(id, prompt, origin, until).await {
            Ok(seq) => seq,
            Err(e) => {
                tracing::warn!(session = %id, prompt = %prompt.id, error = %e, "cannot park a prompt for an absent session");
                return false;
            }
        };
        Metrics::inc(&self.metrics.prompts_parked);
        tracing::info!(session = %id, prompt = %prompt.id, wait_ms = wait.as_millis() as u64, "prompt parked until its session is back");
        let hub = self.clone();
        let (sid, pid) = (id.to_string(), prompt.id.clone());
        let expired = prompt.expires_at.is_some_and(|t| t <= until);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            hub.drop_parked(&sid, &pid, seq, expired).await;
        });
        // Admitted here while it was being parked: move it back now.
        if self.control_of(id).is_some() {
            self.spawn_unpark(id);
        }
        true
    }

    /// Drop parked copy `seq` with `no_session` (or `expired`) unless
    /// someone moved it back already.
    async fn drop_parked(&self, id: &str, prompt_id: &str, seq: u64, expired: bool) {
        if !self.bus.unpark(seq).await {
            return;
        }
        Metrics::inc(&self.metrics.prompts_received);
        let reason = if expired {
            DropReason::Expired
        } else {
            DropReason::NoSession
        };
        let outcome = PromptOutcome::Dropped(reason);
        self.record(Some(id), prompt_id, &outcome, Duration::ZERO, None);
    }

    /// Session `id` is live here: put its parked prompts back on its prompt
    /// subject, oldest first. Nothing to do without NATS.
    pub(super) fn spawn_unpark(self: &Arc<Self>, id: &str) {
        if self.bus.client().is_none() {
            return;
        }
        let hub = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let copies = match hub.bus.parked(&id).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "cannot read the prompts parked for this session; they are dropped at their deadline");
                    return;
                }
            };
            for copy in copies {
                hub.unpark_one(&id, copy).await;
            }
        });
    }

    async fn unpark_one(&self, id: &str, copy: ParkedCopy) {
        let ParkedCopy { seq, parked } = copy;
        if parked.until <= OffsetDateTime::now_utc() {
            // The server that parked it did not time it out (it died).
            let expired = parked.prompt.expired(parked.until);
            self.drop_parked(id, &parked.prompt.id, seq, expired).await;
            return;
        }
        match self.bus.republish(id, &parked.prompt, seq).await {
            Ok(()) => {
                self.bus.unpark(seq).await;
                tracing::info!(session = %id, prompt = %parked.prompt.id, "parked prompt moved back to its session");
            }
            Err(e) => {
                tracing::warn!(session = %id, prompt = %parked.prompt.id, error = %e, "cannot move a parked prompt back; it is dropped at its deadline");
            }
        }
    }
}
