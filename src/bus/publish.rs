//! Publishing to a JetStream stream once: the message carries a
//! `Nats-Msg-Id` (a retried publish inside the stream's duplicate window is
//! stored once), and it counts as published only when the stream acks it.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};

/// How long a stream's ack may take before the publish counts as failed.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Publish `payload` on `subject` with message id `msg_id`; the sequence
/// the stream stored it at (a duplicate's ack names the first copy's).
pub async fn publish_once(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    payload: Vec<u8>,
) -> Result<u64, PublishError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    let ack = js
        .publish_with_headers(subject, headers, payload.into())
        .await?;
    match tokio::time::timeout(ACK_TIMEOUT, ack).await {
        Ok(r) => r.map(|a| a.sequence),
        Err(_) => Err(PublishError::new(PublishErrorKind::TimedOut)),
    }
}
