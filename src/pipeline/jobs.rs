//! The inference tasks a session's shell (`pipeline::speech`) starts: one
//! reply's LLM work (grounding on the knowledge base, the generation, its
//! tokens fed back) and the session's one TTS task, which synthesizes its
//! pieces in order. Each sends its results back as conversation inputs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::conversation::Input;
use super::deps::{Inference, SpeechDeps};
use super::llm::{ChatMessage, LlmEvent, Role};
use super::playout::OutQueue;
use super::retrieve;
use crate::kb::support::Vocabulary;

/// One piece for the session's TTS task.
pub(super) struct TtsJob {
    pub(super) reply: u64,
    pub(super) piece: usize,
    pub(super) text: String,
    pub(super) cancel: CancellationToken,
}

/// Synthesizes a session's pieces one at a time, in order, resampled to the
/// wire rate; a cancelled reply's pieces are skipped.
pub(super) async fn tts_worker(
    deps: SpeechDeps,
    mut jobs: mpsc::UnboundedReceiver<TtsJob>,
    results: mpsc::UnboundedSender<Input>,
    out: Arc<Mutex<OutQueue>>,
) {
    while let Some(job) = jobs.recv().await {
        if job.cancel.is_cancelled() {
            continue;
        }
        // The piece is needed when the audio already queued runs out: now
        // for a reply's first piece, seconds away for a later one. Across
        // sessions the TTS pool serves the earliest first.
        let buffered = out.lock().map_or(0, |q| q.queued());
        let due =
            Instant::now() + Duration::from_secs_f64(buffered as f64 / f64::from(crate::WIRE_RATE));
        let pcm = tokio::select! {
            _ = job.cancel.cancelled() => continue,
            s = deps.engines.synthesize(job.text, due) => s,
        };
        let pcm = pcm
            .map_err(|e| tracing::warn!(error = %e, "TTS failed for a piece"))
            .ok();
        if job.cancel.is_cancelled() {
            continue;
        }
        let input = Input::Synthesized {
            reply: job.reply,
            piece: job.piece,
            pcm,
        };
        if results.send(input).is_err() {
            return;
        }
    }
}

/// Sets the engine's stop flag when dropped: a reply task aborted by
/// `CancelLlm` stops its generation before the next token.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One reply's LLM work: ground the question on the knowledge base (if
/// there is one), start the generation and feed its tokens back.
pub(super) async fn generate(
    engines: Arc<dyn Inference>,
    key: u64,
    reply: u64,
    mut messages: Vec<ChatMessage>,
    results: mpsc::UnboundedSender<Input>,
    stop: Arc<AtomicBool>,
) {
    if let Some(last) = messages.last_mut().filter(|m| m.role == Role::User) {
        let t0 = Instant::now();
        match engines.retrieve(last.content.clone()).await {
            Some(Ok(hits)) => {
                let kb = t0.elapsed();
                tracing::debug!(
                    reply,
                    hits = hits.len(),
                    kb_ms = kb.as_millis() as u64,
                    "kb: retrieved"
                );
                last.content = retrieve::ground(&last.content, &hits);
                let sources = retrieve::sources(&hits);
                // With notes, the reply's numbers and names must come from
                // what the model is given (the notes, the history, the
                // instructions); see `kb::support`.
                let vocabulary = (!hits.is_empty()).then(|| {
                    let given: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
                    Arc::new(Vocabulary::of(&given.join("\n")))
                });
                let _ = results.send(Input::Retrieved {
                    reply,
                    sources,
                    kb,
                    vocabulary,
                });
            }
            Some(Err(e)) => {
                tracing::warn!(reply, error = %e, "kb: search failed; answering without notes")
            }
            None => {}
        }
    }
    if stop.load(Ordering::SeqCst) {
        return;
    }
    let mut g = match engines.generate(key, messages).await {
        Ok(g) => g,
        Err(failure) => {
            let _ = results.send(Input::LlmFailed { reply, failure });
            return;
        }
    };
    let _stop = StopOnDrop(g.canceller());
    while let Some(ev) = g.events.recv().await {
        let input = match ev {
            LlmEvent::Token(text) => Input::LlmToken { reply, text },
            LlmEvent::Done(c) => {
                tracing::debug!(finish = ?c.finish, prompt = c.prompt_tokens, reused = c.reused_tokens, generated = c.generated, "llm done");
                break;
            }
        };
        if stop.load(Ordering::SeqCst) || results.send(input).is_err() {
            return;
        }
    }
    let _ = results.send(Input::LlmDone { reply });
}
