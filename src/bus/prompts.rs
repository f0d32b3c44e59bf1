//! Prompts in: the durable JetStream consumer that hands each prompt to a
//! [`PromptHandler`] and settles it (ack, nak, retry, term) once the
//! handler knows its fate, with progress acks while it waits.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{Bus, BusError, Inner, Target, durable_messages};
use crate::prompt::{Prompt, Rejected, parse_prompt};

/// Ack deadline of the prompt consumer; progress acks extend it while a
/// prompt waits for its moment, so only a dead server lets it lapse.
const ACK_WAIT: Duration = Duration::from_secs(30);
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// One prompt message as the handler sees it.
#[derive(Debug)]
pub struct PromptIn {
    pub subject: String,
    /// `None` when the subject is not a prompt subject this server knows.
    pub target: Option<Target>,
    pub prompt: Result<Prompt, Rejected>,
    /// How many times JetStream has delivered this message (1 the first time).
    pub delivered: u64,
    /// The message's sequence in the prompt stream: the same on every
    /// redelivery, different for a republished copy.
    pub stream_seq: u64,
}

/// Decides a prompt's fate; the returned future ends when the prompt may be acked.
pub type PromptHandler = Arc<dyn Fn(PromptIn) -> BoxFuture<'static, Settle> + Send + Sync>;

/// What the consumer does with a prompt once its handler is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Spoken or dropped for good: remove it from the stream.
    Ack,
    /// Not spoken, and another server may: deliver it again now.
    Nak,
    /// Not spoken this time (synthesis failed): deliver it again after a while.
    Retry(Duration),
    /// Never spoken and not to be tried again (its `dropped` event is out).
    Term,
}

impl Bus {
    /// Consume prompts from the durable consumer until `cancel`, handing each
    /// to `handler` and acking it when the handler is done. Survives NATS
    /// restarts: the consumer is set up again after any error.
    /// Texts over `max_chars` characters are rejected as `too_large`.
    pub fn spawn_prompt_consumer(
        &self,
        handler: PromptHandler,
        max_chars: usize,
        cancel: CancellationToken,
    ) {
        let Some(inner) = self.inner.clone() else {
            return;
        };
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                if cancel.is_cancelled() {
                    break;
                }
                if inner.client.connection_state() != async_nats::connection::State::Connected {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
                let run = consume(inner.clone(), handler.clone(), max_chars, cancel.clone());
                match run.await {
                    Ok(()) => break,
                    Err(e) => {
                        failures += 1;
                        if failures == 1 || failures.is_power_of_two() {
                            tracing::warn!(error = %e, failures, "prompt consumer stopped; setting it up again");
                        }
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        }
                    }
                }
            }
        });
    }
}

async fn consume(
    inner: Arc<Inner>,
    handler: PromptHandler,
    max_chars: usize,
    cancel: CancellationToken,
) -> Result<(), BusError> {
    let name = inner.config.consumer.clone();
    let mut messages = durable_messages(
        &inner.js,
        &inner.subjects,
        &inner.config,
        inner.subjects.prompt_stream(),
        consumer::pull::Config {
            durable_name: Some(name.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: 1024,
            filter_subject: inner.subjects.prompt_all(),
            ..Default::default()
        },
    )
    .await?;
    tracing::info!(consumer = %name, stream = %inner.subjects.prompt_stream(), "consuming prompts");
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            m = messages.next() => m,
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(BusError::Nats(e.to_string())),
            None => return Err(BusError::Nats("prompt message stream ended".into())),
        };
        let subject = msg.subject.to_string();
        let (delivered, stream_seq) = msg
            .info()
            .map(|i| (i.delivered.max(1) as u64, i.stream_sequence))
            .unwrap_or((1, 0));
        let input = PromptIn {
            target: inner.subjects.target(&subject),
            prompt: parse_prompt(&msg.payload, max_chars),
            subject,
            delivered,
            stream_seq,
        };
        let fut = handler(input);
        tokio::spawn(async move {
            tokio::pin!(fut);
            let settle = loop {
                tokio::select! {
                    s = &mut fut => break s,
                    _ = tokio::time::sleep(PROGRESS_EVERY) => {
                        let _ = msg.ack_with(jetstream::AckKind::Progress).await;
                    }
                }
            };
            let sent = match settle {
                Settle::Ack => msg.ack().await,
                Settle::Nak => msg.ack_with(jetstream::AckKind::Nak(None)).await,
                Settle::Retry(after) => msg.ack_with(jetstream::AckKind::Nak(Some(after))).await,
                Settle::Term => msg.ack_with(jetstream::AckKind::Term).await,
            };
            if let Err(e) = sent {
                tracing::warn!(error = %e, ?settle, "could not settle a prompt; it may be delivered again (and dropped as a duplicate)");
            }
        });
    }
}
