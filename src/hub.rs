//! The live sessions of one server, as signaling, prompts and events see them.
//!
//! The hub owns the session table: signaling admits and releases sessions
//! here, and every prompt (from NATS or `POST /sessions/{id}/prompt`) is
//! routed here to the session's [`Control`] channel. It also numbers each
//! session's events, so `Nats-Msg-Id` (session id + sequence) is unique and
//! a consumer can see gaps.
//!
//! Session ids can be chosen by the client (`session_id` in the `offer`,
//! `?session=` on WHIP) to resume a conversation's identity after a
//! reconnect: a prompt for an id that is not live waits up to
//! `prompts.reconnect_wait_ms` (bounded by its expiry) for that id to come
//! back before it is dropped as `no_session`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::bus::payload::rfc3339;
use crate::bus::{Bus, PromptHandler, PromptIn, Target, new_session_id, now_rfc3339};
use crate::config::Config;
use crate::events::{BusEvent, Event};
use crate::metrics::Metrics;
use crate::prompt::{Control, DropReason, Prompt, PromptDelivery, PromptOutcome};
use crate::rtc::{ErrorCode, SignalError};

/// Commands a session may have waiting before it reads them.
pub const CONTROL_QUEUE: usize = 64;

/// Numbers and publishes one session's events.
pub struct SessionEvents {
    bus: Bus,
    session_id: String,
    seq: AtomicU64,
    last_turn: AtomicU64,
}

impl std::fmt::Debug for SessionEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEvents")
            .field("session_id", &self.session_id)
            .field("seq", &self.seq)
            .finish()
    }
}

impl SessionEvents {
    pub fn new(bus: Bus, session_id: String) -> Self {
        Self {
            bus,
            session_id,
            seq: AtomicU64::new(0),
            last_turn: AtomicU64::new(0),
        }
    }

    /// The highest turn this session's events named so far.
    pub fn last_turn(&self) -> u64 {
        self.last_turn.load(Ordering::Relaxed)
    }

    /// Number `event` and publish it on `<prefix>.event.<kind>`.
    pub fn publish(&self, event: Event) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(t) = event.turn() {
            self.last_turn.fetch_max(t, Ordering::Relaxed);
        }
        let ev = BusEvent {
            session_id: Some(self.session_id.clone()),
            seq: Some(seq),
            at: now_rfc3339(),
            event,
        };
        self.bus
            .publish_event(ev.event.kind(), format!("{}-{seq}", self.session_id), &ev);
    }

    /// Mirror a data-channel event to the bus when it is one consumers want:
    /// final transcripts and replies.
    pub fn mirror(&self, ev: &Event) {
        if matches!(
            ev,
            Event::Transcript { is_final: true, .. } | Event::Reply { .. }
        ) {
            self.publish(ev.clone());
        }
    }
}

struct Entry {
    cancel: CancellationToken,
    /// Set once the session's tasks run (after the offer was answered).
    control: Option<mpsc::Sender<Control>>,
    events: Arc<SessionEvents>,
    started_at: OffsetDateTime,
}

/// A live session, as `GET /sessions` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub started_at: String,
    pub turns: u64,
}

/// One prompt's fate in one session (`session_id` is `None` when no session was found).
#[derive(Debug, Clone)]
pub struct Delivered {
    pub session_id: Option<String>,
    pub outcome: PromptOutcome,
}

/// Registry of live sessions and router of prompts.
pub struct Hub {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    bus: Bus,
    sessions: Mutex<HashMap<String, Entry>>,
    changed: Notify,
}

impl Hub {
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, bus: Bus) -> Arc<Self> {
        Arc::new(Self {
            config,
            metrics,
            bus,
            sessions: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        })
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    fn table(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Entry>>, SignalError> {
        self.sessions
            .lock()
            .map_err(|_| SignalError::new(ErrorCode::Internal, "session table poisoned"))
    }

    /// Reserve a slot for a new session, with the client's id if it asked
    /// for one (to resume), or refuse with `busy` / `session_in_use`.
    pub fn admit(
        &self,
        requested: Option<&str>,
    ) -> Result<(String, CancellationToken, Arc<SessionEvents>), SignalError> {
        let mut sessions = self.table()?;
        if sessions.len() >= self.config.max_sessions {
            return Err(SignalError::new(
                ErrorCode::Busy,
                format!(
                    "server is at its limit of {} sessions; try again later",
                    self.config.max_sessions
                ),
            ));
        }
        let id = match requested {
            Some(id) if !crate::bus::valid_session_id(id) => {
                return Err(SignalError::new(
                    ErrorCode::BadMessage,
                    "session_id must be 8 to 64 letters, digits, '-' or '_'",
                ));
            }
            Some(id) if sessions.contains_key(id) => {
                return Err(SignalError::new(
                    ErrorCode::SessionInUse,
                    format!("session {id} is live on another connection"),
                ));
            }
            Some(id) => id.to_string(),
            None => new_session_id(),
        };
        let cancel = CancellationToken::new();
        let events = Arc::new(SessionEvents::new(self.bus.clone(), id.clone()));
        sessions.insert(
            id.clone(),
            Entry {
                cancel: cancel.clone(),
                control: None,
                events: events.clone(),
                started_at: OffsetDateTime::now_utc(),
            },
        );
        Ok((id, cancel, events))
    }

    /// The session's tasks run: prompts may now reach it.
    pub fn attach(&self, id: &str, control: mpsc::Sender<Control>) {
        if let Ok(mut s) = self.sessions.lock()
            && let Some(e) = s.get_mut(id)
        {
            e.control = Some(control);
            e.events.publish(Event::SessionStarted { turn: 0 });
        }
        self.changed.notify_waiters();
    }

    /// Forget a session (ended, or its offer failed).
    pub fn release(&self, id: &str) {
        let gone = self.sessions.lock().ok().and_then(|mut s| s.remove(id));
        if let Some(e) = gone
            && e.control.is_some()
        {
            e.events.publish(Event::SessionEnded {
                turn: e.events.last_turn(),
            });
        }
    }

    pub fn cancel_session(&self, id: &str) -> bool {
        match self.sessions.lock() {
            Ok(s) => s.get(id).map(|e| e.cancel.cancel()).is_some(),
            Err(_) => false,
        }
    }

    pub fn cancel_all(&self) {
        if let Ok(s) = self.sessions.lock() {
            for e in s.values() {
                e.cancel.cancel();
            }
        }
    }

    pub fn count(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Live sessions, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut out: Vec<(OffsetDateTime, SessionInfo)> = match self.sessions.lock() {
            Ok(s) => s
                .iter()
                .filter(|(_, e)| e.control.is_some())
                .map(|(id, e)| {
                    (
                        e.started_at,
                        SessionInfo {
                            id: id.clone(),
                            started_at: rfc3339(e.started_at),
                            turns: e.events.last_turn(),
                        },
                    )
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        out.sort_by_key(|(t, _)| *t);
        out.into_iter().map(|(_, i)| i).collect()
    }

    fn control_of(&self, id: &str) -> Option<(mpsc::Sender<Control>, Arc<SessionEvents>)> {
        let s = self.sessions.lock().ok()?;
        let e = s.get(id)?;
        Some((e.control.clone()?, e.events.clone()))
    }

    fn all_controls(&self) -> Vec<(String, mpsc::Sender<Control>)> {
        match self.sessions.lock() {
            Ok(s) => s
                .iter()
                .filter_map(|(id, e)| Some((id.clone(), e.control.clone()?)))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

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
            hub.record(Some(&sid), &prompt_id, &outcome, started.elapsed(), None);
            let _ = tx.send(outcome);
        });
        Some(rx)
    }

    /// Deliver a prompt to its target and wait for every outcome. A session
    /// that is not live is waited for (reconnect) until
    /// `prompts.reconnect_wait_ms` or the prompt's expiry.
    pub async fn deliver(self: &Arc<Self>, target: Target, prompt: Prompt) -> Vec<Delivered> {
        match target {
            Target::Session(id) => {
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
                    }];
                }
                let outcome = match self.offer(&id, prompt).await {
                    Some(rx) => rx
                        .await
                        .unwrap_or(PromptOutcome::Dropped(DropReason::SessionEnded)),
                    None => PromptOutcome::Dropped(DropReason::SessionEnded),
                };
                vec![Delivered {
                    session_id: Some(id),
                    outcome,
                }]
            }
            Target::Broadcast => {
                let targets = self.all_controls();
                if targets.is_empty() {
                    Metrics::inc(&self.metrics.prompts_received);
                    let outcome = PromptOutcome::Dropped(DropReason::NoSession);
                    self.record(None, &prompt.id, &outcome, Duration::ZERO, None);
                    return vec![Delivered {
                        session_id: None,
                        outcome,
                    }];
                }
                let waits = targets.into_iter().map(|(id, _)| {
                    let hub = self.clone();
                    let p = prompt.clone();
                    async move {
                        let outcome = match hub.offer(&id, p).await {
                            Some(rx) => rx
                                .await
                                .unwrap_or(PromptOutcome::Dropped(DropReason::SessionEnded)),
                            None => PromptOutcome::Dropped(DropReason::SessionEnded),
                        };
                        Delivered {
                            session_id: Some(id),
                            outcome,
                        }
                    }
                });
                futures::future::join_all(waits).await
            }
        }
    }

    fn reconnect_deadline(&self, prompt: &Prompt) -> Instant {
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
    fn record(
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
    pub fn prompt_handler(self: &Arc<Self>) -> PromptHandler {
        let hub = self.clone();
        Arc::new(move |input: PromptIn| {
            let hub = hub.clone();
            Box::pin(async move { hub.handle(input).await })
        })
    }

    async fn handle(self: Arc<Self>, input: PromptIn) {
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
            return;
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
                return;
            }
        };
        self.deliver(target, prompt).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(max_sessions: usize) -> Arc<Hub> {
        let config = Config {
            max_sessions,
            ..Config::default()
        };
        Hub::new(
            Arc::new(config),
            Arc::new(Metrics::default()),
            Bus::disabled(),
        )
    }

    #[test]
    fn admit_resume_and_limits() {
        let h = hub(2);
        let (a, _, _) = h.admit(None).expect("first");
        assert_eq!(a.len(), 32);
        let e = h.admit(Some("bad id")).expect_err("invalid id");
        assert_eq!(e.code, ErrorCode::BadMessage);
        let (b, _, _) = h.admit(Some("user-42-tab-1")).expect("resume id");
        assert_eq!(b, "user-42-tab-1");
        let e = h.admit(None).expect_err("full");
        assert_eq!(e.code, ErrorCode::Busy);
        h.release(&b);
        let e = h.admit(Some(&a)).expect_err("in use");
        assert_eq!(e.code, ErrorCode::SessionInUse);
        assert_eq!(h.count(), 1);
    }

    #[tokio::test]
    async fn prompts_reach_attached_sessions_and_wait_for_reconnects() {
        let h = hub(4);
        let (id, _, _) = h.admit(Some("session-one")).expect("admit");
        // Not attached yet: a prompt waits for it.
        let h2 = h.clone();
        let waiting = tokio::spawn(async move {
            h2.deliver(Target::Session("session-one".into()), Prompt::new("hi"))
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (tx, mut rx) = mpsc::channel(4);
        h.attach(&id, tx);
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
