//! Prompts between the servers on one NATS. The prompt stream's durable
//! consumer is shared, so a prompt reaches one server, which may not hold
//! its session:
//! - every server answers requests on `<prefix>.relay.session.<id>` for each
//!   session it holds (a subscription per live session); the server that got
//!   the prompt asks there first, and the holder speaks it and answers with
//!   the outcome (NATS says "no responders" at once when nobody holds it, and
//!   the prompt waits for the session to come back as before);
//! - a broadcast is delivered to this server's sessions and published on
//!   `<prefix>.relay.broadcast` for the other servers' sessions.
//!
//! The JetStream message is acked by the server that received it, after the
//! holder's outcome, so a crash of either before then redelivers it; the
//! heard log keeps a redelivery from being spoken twice.

use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Bus;
use crate::prompt::{Prompt, PromptOutcome};

/// Whether a relayed prompt may be handed back for another delivery when
/// its synthesis fails (the receiving server's JetStream delivery count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayRetry {
    No,
    Allowed,
    Last,
}

/// A prompt relayed to the server holding its session, or to all servers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Relayed {
    pub prompt: Prompt,
    pub retry: RelayRetry,
    /// The relaying server, so it ignores its own broadcast.
    pub origin: String,
}

/// Why a prompt relayed to its session's server has no outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMiss {
    /// No server holds the session (or NATS is off): wait for it here.
    NotHeld,
    /// A server held it but gave no outcome (it died, or NATS failed).
    Lost,
}

/// Takes a relayed prompt; resolves to its outcome.
pub type RelayHandler =
    std::sync::Arc<dyn Fn(Relayed) -> BoxFuture<'static, PromptOutcome> + Send + Sync>;

impl Bus {
    fn relay_session_subject(&self, id: &str) -> Option<String> {
        let s = self.subjects()?;
        Some(format!("{}.relay.session.{id}", s.prefix()))
    }

    fn relay_broadcast_subject(&self) -> Option<String> {
        let s = self.subjects()?;
        Some(format!("{}.relay.broadcast", s.prefix()))
    }

    /// This server's id among the servers on the NATS.
    pub fn origin(&self) -> &str {
        self.inner.as_ref().map_or("", |i| i.origin.as_str())
    }

    /// Answer prompts relayed to session `id` with `handler` until `cancel`
    /// (the session ended). Does nothing without NATS.
    pub fn serve_session_relay(&self, id: &str, handler: RelayHandler, cancel: CancellationToken) {
        let (Some(client), Some(subject)) =
            (self.client().cloned(), self.relay_session_subject(id))
        else {
            return;
        };
        listen(client.clone(), subject, cancel, move |msg| {
            let Some(reply) = msg.reply.clone() else {
                return;
            };
            let Ok(relayed) = serde_json::from_slice::<Relayed>(&msg.payload) else {
                tracing::warn!("unreadable relayed prompt");
                return;
            };
            let handler = handler.clone();
            let client = client.clone();
            tokio::spawn(async move {
                let outcome = handler(relayed).await;
                let body = serde_json::to_vec(&outcome).unwrap_or_default();
                let _ = client.publish(reply, body.into()).await;
            });
        });
    }

    /// Hand `prompt` to the server holding session `id` and wait (up to
    /// `wait`) for its outcome.
    pub async fn relay_to_session(
        &self,
        id: &str,
        prompt: &Prompt,
        retry: RelayRetry,
        wait: Duration,
    ) -> Result<PromptOutcome, RelayMiss> {
        let (Some(client), Some(subject)) = (self.client(), self.relay_session_subject(id)) else {
            return Err(RelayMiss::NotHeld);
        };
        let body = serde_json::to_vec(&Relayed {
            prompt: prompt.clone(),
            retry,
            origin: self.origin().to_string(),
        })
        .map_err(|_| RelayMiss::NotHeld)?;
        let request = async_nats::Request::new()
            .payload(body.into())
            .timeout(Some(wait));
        match client.send_request(subject, request).await {
            Ok(answer) => serde_json::from_slice(&answer.payload).map_err(|_| RelayMiss::Lost),
            Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
                Err(RelayMiss::NotHeld)
            }
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "relayed prompt: no outcome from the server holding the session");
                Err(RelayMiss::Lost)
            }
        }
    }

    /// Publish a broadcast for the other servers' sessions.
    pub async fn relay_broadcast(&self, prompt: &Prompt) {
        let (Some(client), Some(subject)) = (self.client(), self.relay_broadcast_subject()) else {
            return;
        };
        let relayed = Relayed {
            prompt: prompt.clone(),
            retry: RelayRetry::No,
            origin: self.origin().to_string(),
        };
        if let Ok(body) = serde_json::to_vec(&relayed) {
            let _ = client.publish(subject, body.into()).await;
        }
    }

    /// Deliver the broadcasts other servers relay, with `handler`, until `cancel`.
    pub fn serve_broadcast_relay(&self, handler: RelayHandler, cancel: CancellationToken) {
        let (Some(client), Some(subject)) =
            (self.client().cloned(), self.relay_broadcast_subject())
        else {
            return;
        };
        let me = self.origin().to_string();
        listen(
            client,
            subject,
            cancel,
            move |msg| match serde_json::from_slice::<Relayed>(&msg.payload) {
                Ok(r) if r.origin != me => {
                    tokio::spawn(handler(r));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "unreadable relayed broadcast"),
            },
        );
    }
}

/// Hand each message on `subject` to `on_message` until `cancel`.
fn listen(
    client: async_nats::Client,
    subject: String,
    cancel: CancellationToken,
    on_message: impl Fn(async_nats::Message) + Send + 'static,
) {
    tokio::spawn(async move {
        let Ok(mut sub) = client.subscribe(subject).await else {
            return;
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                m = sub.next() => match m {
                    Some(m) => on_message(m),
                    None => break,
                },
            }
        }
        let _ = sub.unsubscribe().await;
    });
}
