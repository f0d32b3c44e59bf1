//! `voxloop say`: publish one prompt and report what became of it.
//!
//! It subscribes to the prompt outcome events first, then publishes through
//! JetStream (so the prompt is stored even if no server is consuming yet,
//! and `Nats-Msg-Id` = prompt id makes a retried publish a no-op), then
//! waits for `prompt.spoken` / `prompt.dropped` events naming the prompt
//! ([`Event::PromptSpoken`], [`Event::PromptDropped`]).

use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use futures::StreamExt;
use time::OffsetDateTime;

use super::publish::publish_once;
use super::{BusError, Subjects, Target, ensure_streams};
use crate::config::BusConfig;
use crate::events::{BusEvent, Event, kind};
use crate::prompt::{DropReason, Prompt};

/// What `say` should publish and how long to wait.
#[derive(Debug, Clone)]
pub struct SayOptions {
    pub url: String,
    pub bus: BusConfig,
    pub target: Target,
    pub prompt: Prompt,
    /// Wait this long for outcomes; `None` = publish only.
    pub wait: Option<Duration>,
    /// For a broadcast: stop once no new outcome came for this long.
    pub settle: Duration,
}

/// One outcome event, as printed.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub spoken: bool,
    pub session_id: Option<String>,
    pub reason: Option<DropReason>,
    pub turn: Option<u64>,
    /// From publish to the event arriving here.
    pub latency: Duration,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let session = self.session_id.as_deref().unwrap_or("-");
        if self.spoken {
            write!(
                f,
                "spoken: session={session} turn={} latency_ms={}",
                self.turn.unwrap_or(0),
                self.latency.as_millis()
            )
        } else {
            write!(
                f,
                "dropped: session={session} reason={} latency_ms={}",
                self.reason.map(DropReason::as_str).unwrap_or("unknown"),
                self.latency.as_millis()
            )
        }
    }
}

/// The prompt's expiry `after` from now, for `--expires-in`.
pub fn expires_in(after: Duration) -> OffsetDateTime {
    OffsetDateTime::now_utc() + after
}

/// Publish and (unless `wait` is `None`) wait for outcomes, calling
/// `on_outcome` as each arrives. Returns every outcome seen.
pub async fn say(
    opts: &SayOptions,
    mut on_outcome: impl FnMut(&Outcome),
) -> Result<Vec<Outcome>, BusError> {
    let client = super::creds::apply(async_nats::ConnectOptions::new(), &opts.bus, &opts.url)
        .await?
        .name("voxloop-say")
        .connection_timeout(Duration::from_secs(3))
        .connect(&opts.url)
        .await
        .map_err(|e| {
            BusError::Nats(format!(
                "cannot reach NATS at {}: {e} (is nats-server running? `make run` starts one)",
                opts.url
            ))
        })?;
    let subjects = Subjects::new(&opts.bus.prefix);
    let mut outcomes = Vec::new();
    for k in [kind::PROMPT_SPOKEN, kind::PROMPT_DROPPED] {
        let sub = client
            .subscribe(subjects.event(k))
            .await
            .map_err(|e| BusError::Nats(e.to_string()))?;
        outcomes.push(sub);
    }
    let mut events = futures::stream::select_all(outcomes);
    let js = jetstream::new(client.clone());
    let subject = match &opts.target {
        Target::Session(id) => subjects.prompt_session(id),
        Target::Broadcast => subjects.prompt_broadcast(),
    };
    let payload = serde_json::to_vec(&opts.prompt).map_err(|e| BusError::Nats(e.to_string()))?;
    let published = Instant::now();
    // A publisher needs no right to create streams (docs/nats-permissions.conf):
    // only when no server made them yet does `say` create them itself.
    match publish_once(&js, subject.clone(), &opts.prompt.id, payload.clone()).await {
        Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
            ensure_streams(&js, &subjects, &opts.bus).await?;
            publish_once(&js, subject.clone(), &opts.prompt.id, payload).await
        }
        other => other,
    }
    .map_err(|e| BusError::JetStream(format!("publish to {subject}: {e}")))?;
    println!("published: prompt={} subject={subject}", opts.prompt.id);
    let Some(wait) = opts.wait else {
        return Ok(Vec::new());
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    loop {
        let until = match (&opts.target, out.is_empty()) {
            (Target::Broadcast, false) => (tokio::time::Instant::now() + opts.settle).min(deadline),
            _ => deadline,
        };
        let msg = tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            m = events.next() => match m {
                Some(m) => m,
                None => break,
            },
        };
        let Ok(ev) = serde_json::from_slice::<BusEvent>(&msg.payload) else {
            continue;
        };
        let (spoken, prompt_id, reason, turn) = match ev.event {
            Event::PromptSpoken {
                prompt_id, turn, ..
            } => (true, prompt_id, None, Some(turn)),
            Event::PromptDropped {
                prompt_id,
                reason,
                turn,
                ..
            } => (false, prompt_id, Some(reason), turn),
            _ => continue,
        };
        if prompt_id != opts.prompt.id {
            continue;
        }
        let o = Outcome {
            spoken,
            session_id: ev.session_id,
            reason,
            turn,
            latency: published.elapsed(),
        };
        on_outcome(&o);
        out.push(o);
        if matches!(opts.target, Target::Session(_)) {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_lines_are_stable() {
        let o = Outcome {
            spoken: true,
            session_id: Some("abc".into()),
            reason: None,
            turn: Some(2),
            latency: Duration::from_millis(812),
        };
        assert_eq!(o.to_string(), "spoken: session=abc turn=2 latency_ms=812");
        let d = Outcome {
            spoken: false,
            reason: Some(DropReason::Expired),
            ..o
        };
        assert_eq!(
            d.to_string(),
            "dropped: session=abc reason=expired latency_ms=812"
        );
    }
}
