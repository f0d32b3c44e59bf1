//! Prompt routing: a prompt (from NATS or `POST /sessions/{id}/prompt`) goes
//! to one live session or to all of them, waiting for a session id to come
//! back if it is not live; its outcome is counted and published.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Hub;
use time::OffsetDateTime;

use crate::bus::{PromptHandler, PromptIn, Settle, Target, now_rfc3339};
use crate::events::{BusEvent, Event};
use crate::metrics::Metrics;
use crate::prompt::{Control, DropReason, Prompt, PromptDelivery, PromptOutcome};

/// One prompt's fate in one session (`session_id` is `None` when no session was found).
#[derive(Debug, Clone)]
pub struct Delivered {
    pub session_id: Option<String>,
    pub outcome: PromptOutcome,
    /// Spoken or dropped by the server holding the session, not this one.
    pub relayed: bool,
}

impl Hub {
    /// Send a typed message into a session; false if it is not live.
    pub async fn send_text(&self, id: &str, text: String) -> bool {
        match self.control_of(id) {
            Some((c, _)) => c.send(Control::Text(text)).await.is_ok(),
            None => false,
        }
    }

    /// Hand `prompt` to a live session now; `None` if it is not live. The
    /// outcome is recorded (metrics, events) when it arrives.
    pub async fn offer(
        self: &Arc<Self>,
        id: &str,
        prompt: Prompt,
    ) -> Option<tokio::sync::oneshot::Receiver<PromptOutcome>> {
        self.offer_with(id, prompt, Retry::No).await
    }

    /// `offer`, where a prompt that may be retried is handed back
    /// unrecorded when its synthesis fails.
    async fn offer_with(
        self: &Arc<Self>,
        id: &str,
        prompt: Prompt,
        retry: Retry,
    ) -> Option<tokio::sync::oneshot::Receiver<PromptOutcome>> {
        let (control, _) = self.control_of(id)?;
        Metrics::inc(&self.metrics.prompts_received);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let hub = self.clone();
        let sid = id.to_string();
        let prompt_id = prompt.id.clone();
        let started = Instant::now();
        let (delivery, done) = PromptDelivery::new(prompt);
        if control.send(Control::Prompt(delivery)).await.is_err() {
            return None;
        }
        tokio::spawn(async move {
            let outcome = done
                .await
                .unwrap_or(PromptOutcome::Dropped(DropReason::SessionEnded));
            if let PromptOutcome::Spoken { .. } = outcome {
                // Remembered before the ack, so a redelivery is a duplicate.
                hub.bus.mark_heard(&sid, &prompt_id).await;
            }
            if hub.handed_back(&outcome) {
                tracing::info!(session = %sid, prompt = %prompt_id, "server draining: prompt handed back to JetStream");
            } else if retry == Retry::Allowed
                && outcome == PromptOutcome::Dropped(DropReason::TtsFailed)
            {
                tracing::warn!(session = %sid, prompt = %prompt_id, "prompt synthesis failed; JetStream delivers it again later");
            } else {
                let detail = (retry == Retry::Last
                    && outcome == PromptOutcome::Dropped(DropReason::TtsFailed))
                .then_some("synthesis failed on every delivery");
                hub.record(Some(&sid), &prompt_id, &outcome, started.elapsed(), detail);
            }
            let _ = tx.send(outcome);
        });
        Some(rx)
    }

    /// Deliver a prompt to its target and wait for every outcome. A session
    /// that is not live is waited for (reconnect) until
    /// `prompts.reconnect_wait_ms` or the prompt's expiry.
    pub async fn deliver(self: &Arc<Self>, target: Target, prompt: Prompt) -> Vec<Delivered> {
        self.deliver_with(target, prompt, Retry::No).await
    }

    pub(super) async fn deliver_with(
        self: &Arc<Self>,
        target: Target,
        prompt: Prompt,
        retry: Retry,
    ) -> Vec<Delivered> {
        match target {
            Target::Session(id) => {
                // Held by another server on the NATS: that one speaks it.
                if self.control_of(&id).is_none()
                    && let Some(outcome) = self.relay(&id, &prompt, retry).await
                {
                    return vec![Delivered {
                        session_id: Some(id),
                        outcome,
                        relayed: true,
                    }];
                }
                let deadline = self.reconnect_deadline(&prompt);
                if !self.wait_for(&id, deadline).await {
                    Metrics::inc(&self.metrics.prompts_received);
                    let reason = if prompt.expired(OffsetDateTime::now_utc()) {
                        DropReason::Expired
                    } else {
                        DropReason::NoSession
                    };
                    let outcome = PromptOutcome::Dropped(reason);
                    self.record(Some(&id), &prompt.id, &outcome, Duration::ZERO, None);
                    return vec![Delivered {
                        session_id: Some(id),
                        outcome,
                        relayed: false,
                    }];
                }
                let outcome = self.offer_unheard(&id, prompt, retry).await;
                vec![Delivered {
                    session_id: Some(id),
                    outcome,
                    relayed: false,
                }]
            }
            Target::Broadcast => {
                let targets = self.all_controls();
                // The other servers' sessions hear it too; a broadcast they
                // relay here is not sent on again (`relay_handlers`).
                if retry != Retry::Relayed {
                    self.bus.relay_broadcast(&prompt).await;
                }
                if targets.is_empty() && retry == Retry::Relayed {
                    // The relaying server counts and reports its own outcome.
                    return Vec::new();
                }
                if targets.is_empty() {
                    Metrics::inc(&self.metrics.prompts_received);
                    let outcome = PromptOutcome::Dropped(DropReason::NoSession);
                    self.record(None, &prompt.id, &outcome, Duration::ZERO, None);
                    return vec![Delivered {
                        session_id: None,
                        outcome,
                        relayed: false,
                    }];
                }
                let waits = targets.into_iter().map(|(id, _)| {
                    let hub = self.clone();
                    let p = prompt.clone();
                    async move {
                        let outcome = hub.offer_unheard(&id, p, Retry::No).await;
                        Delivered {
                            session_id: Some(id),
                            outcome,
                            relayed: false,
                        }
                    }
                });
                futures::future::join_all(waits).await
            }
        }
    }

    /// Offer `prompt` to live session `id` unless that session heard it
    /// already (on any server: the bus's heard log), and wait for its outcome.
    pub(super) async fn offer_unheard(
        self: &Arc<Self>,
        id: &str,
        prompt: Prompt,
        retry: Retry,
    ) -> PromptOutcome {
        if self.bus.heard(id, &prompt.id).await {
            Metrics::inc(&self.metrics.prompts_received);
            let outcome = PromptOutcome::Dropped(DropReason::Duplicate);
            let detail = "this session heard this prompt id already";
            self.record(Some(id), &prompt.id, &outcome, Duration::ZERO, Some(detail));
            return outcome;
        }
        match self.offer_with(id, prompt, retry).await {
            Some(rx) => rx
                .await
                .unwrap_or(PromptOutcome::Dropped(DropReason::SessionEnded)),
            None => PromptOutcome::Dropped(DropReason::SessionEnded),
        }
    }

    pub(super) fn reconnect_deadline(&self, prompt: &Prompt) -> Instant {
        let mut wait = Duration::from_millis(self.config.prompts.reconnect_wait_ms);
        if let Some(exp) = prompt.expires_at {
            let left = exp - OffsetDateTime::now_utc();
            wait = wait.min(left.try_into().unwrap_or(Duration::ZERO));
        }
        Instant::now() + wait
    }

    /// Wait until session `id` is live (true) or `deadline` passes (false).
    async fn wait_for(&self, id: &str, deadline: Instant) -> bool {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.control_of(id).is_some() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let _ = tokio::time::timeout(deadline - now, notified).await;
        }
    }

    /// Count an outcome and publish `prompt.spoken` / `prompt.dropped`.
    pub(super) fn record(
        &self,
        session_id: Option<&str>,
        prompt_id: &str,
        outcome: &PromptOutcome,
        waited: Duration,
        detail: Option<&str>,
    ) {
        let events = session_id.and_then(|id| {
            self.sessions
                .lock()
                .ok()
                .and_then(|s| s.get(id).map(|e| e.events.clone()))
        });
        let event = match outcome {
            PromptOutcome::Spoken { turn } => {
                Metrics::inc(&self.metrics.prompts_spoken);
                tracing::info!(
                    session = session_id.unwrap_or("-"),
                    prompt = prompt_id,
                    waited_ms = waited.as_millis() as u64,
                    "prompt spoken"
                );
                Event::PromptSpoken {
                    turn: *turn,
                    prompt_id: prompt_id.to_string(),
                    waited_ms: waited.as_millis() as u64,
                }
            }
            PromptOutcome::Dropped(reason) => {
                Metrics::inc(&self.metrics.prompts_dropped);
                tracing::info!(session = session_id.unwrap_or("-"), prompt = prompt_id, %reason, detail = detail.unwrap_or(""), "prompt dropped");
                Event::PromptDropped {
                    turn: events.as_ref().map(|e| e.last_turn()),
                    prompt_id: prompt_id.to_string(),
                    reason: *reason,
                    detail: detail.map(str::to_string),
                }
            }
        };
        match events {
            Some(ev) => ev.publish(event),
            None => {
                // No live session to number it: the prompt id names the event.
                let reason = match &event {
                    Event::PromptDropped { reason, .. } => reason.as_str(),
                    _ => "",
                };
                let sid = session_id.unwrap_or("broadcast");
                let msg_id = format!("{sid}-{prompt_id}-{reason}");
                let ev = BusEvent {
                    session_id: session_id.map(str::to_string),
                    seq: None,
                    at: now_rfc3339(),
                    event,
                };
                self.bus.publish_event(ev.event.kind(), msg_id, &ev);
            }
        }
    }

    /// The handler the NATS prompt consumer calls for each message.
    /// A prompt whose session ended because the server is draining goes
    /// back to JetStream unspoken (nak), so another server can speak it.
    fn handed_back(&self, outcome: &PromptOutcome) -> bool {
        self.draining() && *outcome == PromptOutcome::Dropped(DropReason::SessionEnded)
    }

    pub fn prompt_handler(self: &Arc<Self>) -> PromptHandler {
        let hub = self.clone();
        Arc::new(move |input: PromptIn| {
            let hub = hub.clone();
            Box::pin(async move { hub.handle(input).await })
        })
    }

    async fn handle(self: Arc<Self>, input: PromptIn) -> Settle {
        let session_of = |t: &Option<Target>| match t {
            Some(Target::Session(id)) => Some(id.clone()),
            _ => None,
        };
        let Some(target) = input.target.clone() else {
            Metrics::inc(&self.metrics.prompts_received);
            let id = input
                .prompt
                .as_ref()
                .map(|p| p.id.clone())
                .unwrap_or_else(|r| r.prompt_id.clone().unwrap_or_default());
            let detail = format!(
                "subject {:?} is not a prompt subject (prompt.session.<id> or prompt.broadcast)",
                input.subject
            );
            tracing::warn!(%detail, "prompt dropped");
            self.record(
                None,
                &id,
                &PromptOutcome::Dropped(DropReason::BadPayload),
                Duration::ZERO,
                Some(&detail),
            );
            return Settle::Ack;
        };
        let prompt = match input.prompt {
            Ok(p) => p,
            Err(r) => {
                Metrics::inc(&self.metrics.prompts_received);
                tracing::warn!(subject = %input.subject, reason = %r.reason, detail = %r.detail, "bad prompt payload");
                let id = r.prompt_id.clone().unwrap_or_default();
                self.record(
                    session_of(&input.target).as_deref(),
                    &id,
                    &PromptOutcome::Dropped(r.reason),
                    Duration::ZERO,
                    Some(&r.detail),
                );
                return Settle::Ack;
            }
        };
        let single = matches!(target, Target::Session(_));
        let retry = match (single, input.delivered < self.config.prompts.max_deliveries) {
            (false, _) => Retry::No,
            (true, true) => Retry::Allowed,
            (true, false) => Retry::Last,
        };
        if let Target::Session(id) = &target
            && self.control_of(id).is_none()
            && !prompt.expired(OffsetDateTime::now_utc())
        {
            // Held by another server: that one speaks it.
            if let Some(outcome) = self.relay(id, &prompt, retry).await {
                return self.settle(Some(outcome), true, retry);
            }
            // Absent: wait in the parked stream, not in this consumer's
            // ack-pending window (`hub::parked`).
            if self.park(id, &prompt, input.stream_seq).await {
                return Settle::Ack;
            }
            if retry == Retry::Allowed {
                return Settle::Retry(Duration::from_millis(self.config.prompts.retry_delay_ms));
            }
            // Out of deliveries: wait here as a last resort.
        }
        let out = self.deliver_with(target, prompt, retry).await;
        let relayed = out.first().is_some_and(|d| d.relayed);
        let outcome = out.first().map(|d| d.outcome.clone());
        self.settle(outcome, single && relayed, retry)
    }

    /// What the consumer does with a message whose (first) outcome is `outcome`.
    fn settle(&self, outcome: Option<PromptOutcome>, relayed: bool, retry: Retry) -> Settle {
        let single = retry != Retry::No;
        match outcome {
            Some(o) if single && self.handed_back(&o) => Settle::Nak,
            // The holder ended (draining, or gone) before speaking it.
            Some(PromptOutcome::Dropped(DropReason::SessionEnded)) if relayed => Settle::Nak,
            Some(PromptOutcome::Dropped(DropReason::TtsFailed)) if retry == Retry::Allowed => {
                Settle::Retry(Duration::from_millis(self.config.prompts.retry_delay_ms))
            }
            Some(PromptOutcome::Dropped(DropReason::TtsFailed)) if retry == Retry::Last => {
                Settle::Term
            }
            _ => Settle::Ack,
        }
    }
}

/// Whether a prompt whose synthesis fails goes back to JetStream for
/// another try (NATS prompts for one session, up to `prompts.max_deliveries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// A broadcast another server relayed: delivered here only, a failure is final.
    Relayed,
    /// Not a retried delivery (HTTP, broadcast): a failure is final.
    No,
    /// Deliveries are left: hand it back, unrecorded.
    Allowed,
    /// The last delivery: a failure is final and terminates the message.
    Last,
}

#[cfg(test)]
mod tests {
    use super::super::tests::hub;
    use super::*;
    use crate::bus::Bus;
    use crate::config::Config;
    use std::sync::atomic::Ordering;
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn prompts_reach_attached_sessions_and_wait_for_reconnects() {
        let h = hub(4);
        let mut slot = h.admit(Some("session-one"), None, None).expect("admit");
        // Not attached yet: a prompt waits for it.
        let h2 = h.clone();
        let waiting = tokio::spawn(async move {
            h2.deliver(Target::Session("session-one".into()), Prompt::new("hi"))
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (tx, mut rx) = mpsc::channel(4);
        slot.attach(tx, Arc::new(std::sync::atomic::AtomicBool::new(false)));
        let Some(Control::Prompt(d)) = rx.recv().await else {
            panic!("prompt not delivered");
        };
        assert_eq!(d.prompt.text, "hi");
        d.done
            .send(PromptOutcome::Spoken { turn: 3 })
            .expect("receiver alive");
        let out = waiting.await.expect("join");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].outcome, PromptOutcome::Spoken { turn: 3 });
        assert_eq!(h.list().len(), 1);
    }

    #[tokio::test]
    async fn unknown_sessions_and_empty_broadcasts_drop_with_no_session() {
        let config = Config {
            prompts: crate::config::PromptsConfig {
                reconnect_wait_ms: 100,
                ..Default::default()
            },
            ..Config::default()
        };
        let metrics = Arc::new(Metrics::default());
        let h = Hub::new(Arc::new(config), metrics.clone(), Bus::disabled());
        let t0 = Instant::now();
        let out = h
            .deliver(Target::Session("nobody-here".into()), Prompt::new("hi"))
            .await;
        assert!(t0.elapsed() >= Duration::from_millis(90));
        assert_eq!(
            out[0].outcome,
            PromptOutcome::Dropped(DropReason::NoSession)
        );
        let out = h.deliver(Target::Broadcast, Prompt::new("hi")).await;
        assert_eq!(
            out[0].outcome,
            PromptOutcome::Dropped(DropReason::NoSession)
        );
        assert_eq!(metrics.prompts_dropped.load(Ordering::Relaxed), 2);
    }
}
