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
//! at its next admission, or the `no_session` event at the deadline. The
//! copies of a server that exits before their deadline stay: the next server
//! admitting the session moves them back or drops them, and the stream's
//! max age (1 h) removes the rest without an event.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::Hub;
use crate::bus::backoff::Backoff;
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

    /// Delete parked copy `seq`; true if this call did. While NATS does not
    /// answer (an outage) it tries again, up to the stream's max age.
    async fn claim(&self, seq: u64) -> bool {
        let give_up = std::time::Instant::now() + Duration::from_secs(3600);
        let mut backoff = Backoff::default();
        loop {
            match self.bus.unpark(seq).await {
                Ok(deleted) => return deleted,
                Err(e) if std::time::Instant::now() < give_up => {
                    tracing::debug!(seq, error = %e, "parked prompt not settled yet; trying again");
                }
                Err(_) => return false,
            }
            backoff.wait().await;
        }
    }

    /// Drop parked copy `seq` with `no_session` (or `expired`) unless
    /// someone moved it back already.
    async fn drop_parked(&self, id: &str, prompt_id: &str, seq: u64, expired: bool) {
        if !self.claim(seq).await {
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
        // NATS may be down as the session comes back: try again while it lives.
        tokio::spawn(async move {
            let mut backoff = Backoff::default();
            loop {
                let done = match hub.bus.parked(&id).await {
                    Ok(copies) => {
                        let mut all = true;
                        for copy in copies {
                            all &= hub.unpark_one(&id, copy).await;
                        }
                        all
                    }
                    Err(e) => {
                        tracing::debug!(session = %id, error = %e, "cannot read the prompts parked for this session yet");
                        false
                    }
                };
                if done || hub.control_of(&id).is_none() {
                    return;
                }
                backoff.wait().await;
            }
        });
    }

    /// Move one copy back (or drop it, past its deadline); false if NATS
    /// did not take the republish.
    async fn unpark_one(&self, id: &str, copy: ParkedCopy) -> bool {
        let ParkedCopy { seq, parked } = copy;
        if parked.until <= OffsetDateTime::now_utc() {
            // Its deadline passed and the parking server has not settled it
            // (it died, or NATS was down): whoever deletes it drops it.
            let expired = parked.prompt.expired(parked.until);
            self.drop_parked(id, &parked.prompt.id, seq, expired).await;
            return true;
        }
        match self.bus.republish(id, &parked.prompt, seq).await {
            Ok(()) => {
                self.claim(seq).await;
                tracing::info!(session = %id, prompt = %parked.prompt.id, "parked prompt moved back to its session");
                true
            }
            Err(e) => {
                tracing::warn!(session = %id, prompt = %parked.prompt.id, error = %e, "cannot move a parked prompt back yet");
                false
            }
        }
    }
}
