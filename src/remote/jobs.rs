//! The work of one accepted job on a worker: run the engine, heartbeat
//! while it works, and stream the numbered result to the server.

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::HEARTBEAT;
use super::wire::{self, Chunk, Part, Summary};
use super::worker::RoleEngines;
use crate::pipeline::llm::LlmEvent;

/// Audio sent back per chunk: one second at 48 kHz (96 KB).
const AUDIO_CHUNK: usize = crate::WIRE_RATE as usize;

/// A job's result stream: numbered chunks to the server's subject.
pub(super) struct Out {
    client: async_nats::Client,
    subject: String,
    seq: u32,
}

impl Out {
    pub(super) fn new(client: async_nats::Client, subject: String) -> Self {
        Self {
            client,
            subject,
            seq: 0,
        }
    }

    async fn send(&mut self, part: Part, pcm: &[f32]) {
        let chunk = Chunk {
            seq: self.seq,
            part,
        };
        self.seq += 1;
        let _ = self
            .client
            .publish(self.subject.clone(), wire::encode(&chunk, pcm))
            .await;
    }

    /// Ends the stream with a failure; the job did not complete.
    async fn fail(mut self, message: String) -> bool {
        self.send(Part::Failed { message }, &[]).await;
        false
    }

    /// Ends the stream of a job that was stopped before its result.
    async fn stop(mut self, why: Stop) -> bool {
        match why {
            Stop::Expired => self.send(Part::Expired, &[]).await,
            Stop::Cancelled => {
                let message = "cancelled".into();
                self.send(Part::Failed { message }, &[]).await
            }
        }
        false
    }
}

/// Why a job stopped before its result.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Cancelled,
    Expired,
}

/// Wait for `work`, heartbeating; `None` when cancelled or past `deadline`
/// (the work future is dropped: queued work is skipped).
async fn beating<T>(
    out: &mut Out,
    work: impl std::future::Future<Output = T>,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<T, Stop> {
    tokio::pin!(work);
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    loop {
        tokio::select! {
            r = &mut work => return Ok(r),
            _ = cancel.cancelled() => return Err(Stop::Cancelled),
            _ = tokio::time::sleep_until(deadline.into()) => return Err(Stop::Expired),
            _ = beat.tick() => out.send(Part::Heartbeat, &[]).await,
        }
    }
}

/// A job with one result: `work`, heartbeating, then its `part`.
async fn single<T, E: ToString>(
    mut out: Out,
    work: impl std::future::Future<Output = Result<T, E>>,
    deadline: Instant,
    cancel: &CancellationToken,
    part: impl FnOnce(T) -> Part,
) -> bool {
    match beating(&mut out, work, deadline, cancel).await {
        Ok(Ok(t)) => {
            out.send(part(t), &[]).await;
            true
        }
        Ok(Err(e)) => out.fail(e.to_string()).await,
        Err(why) => out.stop(why).await,
    }
}

pub(super) async fn asr_job(
    engines: &RoleEngines,
    pcm: Vec<f32>,
    deadline: Instant,
    cancel: &CancellationToken,
    out: Out,
) -> bool {
    let Some(asr) = &engines.asr else {
        return out.fail("no asr engine".into()).await;
    };
    single(out, asr.transcribe(pcm), deadline, cancel, |t| {
        Part::Transcript {
            text: t.text,
            decode_ms: t.elapsed.as_millis() as u64,
        }
    })
    .await
}

pub(super) async fn tts_job(
    engines: &RoleEngines,
    text: String,
    deadline: Instant,
    cancel: &CancellationToken,
    mut out: Out,
) -> bool {
    let Some(tts) = &engines.tts else {
        return out.fail("no tts engine".into()).await;
    };
    let speech = match beating(
        &mut out,
        tts.synthesize_by(text, deadline),
        deadline,
        cancel,
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return out.fail(e.to_string()).await,
        Err(why) => return out.stop(why).await,
    };
    let pcm = match crate::audio::resample_clip(&speech.pcm, speech.sample_rate, crate::WIRE_RATE) {
        Ok(p) => p,
        Err(e) => return out.fail(e.to_string()).await,
    };
    for piece in pcm.chunks(AUDIO_CHUNK) {
        if cancel.is_cancelled() {
            return out.stop(Stop::Cancelled).await;
        }
        out.send(Part::Audio, piece).await;
    }
    out.send(Part::Done { summary: None }, &[]).await;
    true
}

pub(super) async fn llm_job(
    engines: &RoleEngines,
    key: u64,
    messages: Vec<crate::pipeline::llm::ChatMessage>,
    max_tokens: Option<usize>,
    deadline: Instant,
    cancel: &CancellationToken,
    mut out: Out,
) -> bool {
    let Some(llm) = &engines.llm else {
        return out.fail("no llm engine".into()).await;
    };
    let mut g = match llm.generate(key, messages, max_tokens) {
        Ok(g) => g,
        Err(e) => return out.fail(e.to_string()).await,
    };
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    let mut started = false;
    loop {
        tokio::select! {
            ev = g.events.recv() => match ev {
                Some(LlmEvent::Token(text)) => {
                    started = true;
                    out.send(Part::Token { text }, &[]).await;
                }
                Some(LlmEvent::Done(c)) => {
                    let summary = Some(Summary::of(&c));
                    out.send(Part::Done { summary }, &[]).await;
                    return true;
                }
                None => return out.fail("the engine dropped the generation".into()).await,
            },
            _ = cancel.cancelled() => {
                // Stops before the next token is decoded.
                g.cancel();
                return out.stop(Stop::Cancelled).await;
            }
            _ = tokio::time::sleep_until(deadline.into()), if !started => {
                g.cancel();
                return out.stop(Stop::Expired).await;
            }
            _ = beat.tick() => out.send(Part::Heartbeat, &[]).await,
        }
    }
}

pub(super) async fn embed_job(
    engines: &RoleEngines,
    texts: Vec<String>,
    deadline: Instant,
    cancel: &CancellationToken,
    out: Out,
) -> bool {
    let Some(embed) = &engines.embed else {
        return out.fail("no embed engine".into()).await;
    };
    single(out, embed.embed(texts), deadline, cancel, |vectors| {
        Part::Vectors { vectors }
    })
    .await
}
