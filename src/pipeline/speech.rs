//! The speech pipeline of one conversation: VAD → end of turn → ASR → LLM
//! (streamed) → sentence chunks → TTS → playout, with barge-in.
//!
//! [`run`] is one task per session. It reads 16 kHz audio, drives the
//! IO-free [`TurnTaking`] state machine with Silero's verdicts, and starts a
//! reply task at the end of each turn. The reply task streams LLM tokens into
//! the [`SentenceChunker`], synthesizes each piece as soon as it is complete
//! and queues the audio, so the first sentence plays while the LLM is still
//! writing. User speech of `barge_in_ms` during a reply cancels it: the LLM
//! stops before its next token, queued audio is dropped at once, and the
//! history records the reply as cut off where the user stopped hearing it.
//!
//! Nothing here touches the network: the session feeds audio in and drains
//! the [`OutQueue`]; `voxloop converse` does the same with files.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::asr::Transcript;
use super::llm::{ChatMessage, LlmEvent, Role};
use super::playout::OutQueue;
use super::turn::TurnPrediction;
use super::turn_taking::{EndReason, TurnEvent, TurnTaking};
use super::vad::{VadState, WINDOW};
use crate::audio::resample_clip;
use crate::config::Config;
use crate::engines::Engines;
use crate::metrics::Metrics;
use crate::text::SentenceChunker;
use crate::{PIPELINE_RATE, WIRE_RATE};

/// Audio kept from before the turn started (VAD needs a few windows to be sure).
const PREROLL_MS: usize = 400;

/// Shared, long-lived things a speech session needs.
#[derive(Clone)]
pub struct SpeechDeps {
    pub engines: Arc<Engines>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// "One moment, please", synthesized once at start-up (48 kHz).
    pub busy_line: Arc<Vec<f32>>,
}

/// The speech pipeline's engines could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading models: {0}")]
    Engines(#[from] crate::engines::EngineError),
    #[error("preparing the busy line: {0}")]
    BusyLine(#[from] super::tts::TtsError),
    #[error("model loading thread failed: {0}")]
    Join(String),
}

impl SpeechDeps {
    /// Load every engine of `config`'s profile (off the async workers) and
    /// synthesize the busy line.
    pub async fn load(config: Arc<Config>, metrics: Arc<Metrics>) -> Result<Self, LoadError> {
        let cfg = config.clone();
        let engines = tokio::task::spawn_blocking(move || Engines::load(&cfg))
            .await
            .map_err(|e| LoadError::Join(e.to_string()))??;
        Self::new(Arc::new(engines), config, metrics).await
    }

    async fn new(
        engines: Arc<Engines>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, LoadError> {
        let speech = engines
            .tts
            .synthesize(config.conversation.busy_line.clone())
            .await?;
        let pcm = resample_clip(&speech.pcm, speech.sample_rate, WIRE_RATE).unwrap_or_default();
        Ok(Self {
            engines,
            config,
            metrics,
            busy_line: Arc::new(pcm),
        })
    }
}

/// What a reply task has done so far; read by the session on barge-in.
#[derive(Debug, Default)]
struct Progress {
    user_text: Option<String>,
    /// Text of each synthesized piece and its length in 48 kHz samples, in play order.
    pieces: Vec<(String, usize)>,
    reply_text: String,
}

/// A reply whose text is complete but whose audio is (maybe) still queued.
struct Playing {
    id: u64,
    turn: u64,
    progress: Arc<Mutex<Progress>>,
    /// Index of its assistant message in the history.
    history_idx: usize,
}

struct Reply {
    id: u64,
    turn: u64,
    cancel: CancellationToken,
    progress: Arc<Mutex<Progress>>,
    task: JoinHandle<ReplyOutcome>,
}

#[derive(Debug)]
enum ReplyOutcome {
    /// Nothing was understood: no reply.
    Empty,
    /// Inference was overloaded; the busy line was played.
    Busy,
    Done {
        user: String,
        reply: String,
    },
    Cancelled,
    Failed(String),
}

async fn opt_join<T>(h: &mut Option<JoinHandle<T>>) -> Option<T> {
    match h {
        Some(j) => {
            let r = j.await.ok();
            *h = None;
            r
        }
        None => std::future::pending().await,
    }
}

/// State of one conversation's speech loop.
struct Loop {
    deps: SpeechDeps,
    out: Arc<Mutex<OutQueue>>,
    events: mpsc::Sender<Value>,
    turns: TurnTaking,
    vad: VadState,
    vad_buf: Vec<f32>,
    preroll: std::collections::VecDeque<f32>,
    utterance: Vec<f32>,
    /// Speculative transcript started at the last pause: (samples covered, task).
    spec_asr: Option<(usize, JoinHandle<Option<Transcript>>)>,
    prediction: Option<JoinHandle<(u64, Option<TurnPrediction>)>>,
    reply: Option<Reply>,
    /// A finished reply whose audio may still be playing.
    playing: Option<Playing>,
    history: Vec<ChatMessage>,
    turn: u64,
    key: u64,
    next_reply_id: u64,
}

/// Run the speech loop until `cancel` fires or the input ends.
pub async fn run(
    mut input: mpsc::Receiver<Vec<f32>>,
    out: Arc<Mutex<OutQueue>>,
    events: mpsc::Sender<Value>,
    deps: SpeechDeps,
    cancel: CancellationToken,
) {
    let cfg = deps.config.clone();
    let mut lp = Loop {
        turns: TurnTaking::new(cfg.turn.clone()),
        vad: VadState::default(),
        vad_buf: Vec::with_capacity(WINDOW * 2),
        preroll: std::collections::VecDeque::new(),
        utterance: Vec::new(),
        spec_asr: None,
        prediction: None,
        reply: None,
        playing: None,
        history: vec![ChatMessage::new(
            Role::System,
            cfg.conversation.system_prompt.clone(),
        )],
        turn: 0,
        key: rand::random::<u64>(),
        next_reply_id: 1,
        deps,
        out,
        events,
    };
    lp.emit(json!({"type": "state", "state": "listening"}))
        .await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            f = super::next_input(&mut input, lp.turns.in_turn()) => match f {
                Some(pcm) => lp.on_audio(&pcm).await,
                None => break,
            },
            p = opt_join(&mut lp.prediction) => {
                if let Some((id, Some(pred))) = p {
                    tracing::debug!(probability = pred.probability, "smart turn");
                    if let Some(ev) = lp.turns.on_prediction(id, pred.complete()) {
                        lp.on_turn_event(ev).await;
                    }
                }
            },
            outcome = async {
                match lp.reply.as_mut() {
                    Some(r) => (&mut r.task).await.ok(),
                    None => std::future::pending().await,
                }
            } => {
                if let Some(r) = lp.reply.take() {
                    lp.finish_reply(r, outcome.unwrap_or(ReplyOutcome::Failed("reply task died".into()))).await;
                }
            },
        }
    }
    if let Some(r) = lp.reply.take() {
        r.cancel.cancel();
        let _ = r.task.await;
    }
    lp.deps.engines.llm.forget(lp.key);
}

impl Loop {
    async fn emit(&self, ev: Value) {
        // Events are best-effort: a slow reader must not stall the audio loop.
        let _ = self.events.try_send(ev);
    }

    async fn on_audio(&mut self, pcm: &[f32]) {
        self.vad_buf.extend_from_slice(pcm);
        self.preroll.extend(pcm.iter().copied());
        let keep = PREROLL_MS * PIPELINE_RATE as usize / 1000;
        while self.preroll.len() > keep {
            self.preroll.pop_front();
        }
        if self.turns.in_turn() {
            self.utterance.extend_from_slice(pcm);
        }
        if self.vad_buf.len() < WINDOW {
            return;
        }
        let n = self.vad_buf.len() / WINDOW;
        let windows: Vec<Vec<f32>> = self
            .vad_buf
            .drain(..n * WINDOW)
            .collect::<Vec<f32>>()
            .chunks_exact(WINDOW)
            .map(<[f32]>::to_vec)
            .collect();
        let state = std::mem::take(&mut self.vad);
        let probs = match self.deps.engines.vad.probs(state.clone(), windows).await {
            Ok((probs, st)) => {
                self.vad = st;
                probs
            }
            Err(e) => {
                tracing::warn!(error = %e, "VAD failed; treating audio as silence");
                self.vad = state;
                vec![0.0; n]
            }
        };
        for p in probs {
            for ev in self.turns.on_window(p) {
                self.on_turn_event(ev).await;
            }
        }
    }

    async fn on_turn_event(&mut self, ev: TurnEvent) {
        match ev {
            TurnEvent::SpeechStarted => {
                self.utterance = self.preroll.iter().copied().collect();
                self.spec_asr = None;
                self.emit(json!({"type": "state", "state": "user_speaking"}))
                    .await;
            }
            TurnEvent::SustainedSpeech => self.barge_in().await,
            TurnEvent::Paused => {
                let audio = self.utterance.clone();
                let covered = audio.len();
                if self.deps.config.turn.smart_turn {
                    let id = self.turns.pause_id();
                    let turn = self.deps.engines.turn.clone();
                    let a = audio.clone();
                    self.prediction =
                        Some(tokio::spawn(
                            async move { (id, turn.predict(a).await.ok()) },
                        ));
                }
                // Start decoding now, so the transcript is ready when the turn ends.
                let asr = self.deps.engines.asr.clone();
                self.spec_asr = Some((
                    covered,
                    tokio::spawn(async move { asr.transcribe(audio).await.ok() }),
                ));
            }
            TurnEvent::Resumed => {
                if let Some((_, h)) = self.spec_asr.take() {
                    h.abort();
                }
                if let Some(h) = self.prediction.take() {
                    h.abort();
                }
            }
            TurnEvent::EndOfTurn { silence_ms, reason } => {
                self.end_turn(silence_ms, reason).await;
            }
        }
    }

    /// Is the assistant thinking or still talking?
    fn replying(&self) -> bool {
        self.reply.is_some()
            || (self.playing.is_some() && self.out.lock().map(|q| !q.is_empty()).unwrap_or(false))
    }

    async fn barge_in(&mut self) {
        if !self.replying() {
            return;
        }
        let dropped = self.out.lock().map(|mut q| q.clear()).unwrap_or(0);
        Metrics::inc(&self.deps.metrics.barge_ins);
        let (id, turn, progress, history_idx) = if let Some(r) = self.reply.take() {
            // Still generating: stop the LLM and TTS; let the task wind down.
            r.cancel.cancel();
            let (id, turn, progress) = (r.id, r.turn, r.progress.clone());
            tokio::spawn(async move {
                let _ = r.task.await;
            });
            (id, turn, progress, None)
        } else if let Some(p) = self.playing.take() {
            // Text complete, audio still playing.
            (p.id, p.turn, p.progress, Some(p.history_idx))
        } else {
            return;
        };
        let played = self.out.lock().map(|q| q.played(id)).unwrap_or(0);
        let (user, heard) = progress
            .lock()
            .map(|p| (p.user_text.clone(), heard_text(&p.pieces, played)))
            .unwrap_or((None, String::new()));
        // History keeps what the user actually heard, marked as cut off.
        match history_idx {
            Some(idx) => {
                if let Some(m) = self.history.get_mut(idx) {
                    m.content = cut_off(&heard);
                }
            }
            None => {
                if let Some(user) = user {
                    self.history.push(ChatMessage::new(Role::User, user));
                    self.history
                        .push(ChatMessage::new(Role::Assistant, cut_off(&heard)));
                }
            }
        }
        tracing::info!(
            turn,
            played_ms = played / 48,
            dropped_ms = dropped / 48,
            "barge-in"
        );
        self.emit(json!({"type": "reply", "turn": turn, "text": heard, "interrupted": true}))
            .await;
    }

    async fn end_turn(&mut self, silence_ms: u32, reason: EndReason) {
        self.turn += 1;
        let turn = self.turn;
        let audio = std::mem::take(&mut self.utterance);
        let ended_at = Instant::now();
        Metrics::inc(&self.deps.metrics.utterances);
        tracing::info!(
            turn,
            silence_ms,
            ?reason,
            audio_ms = audio.len() / 16,
            "end of turn"
        );
        self.emit(json!({"type": "state", "state": "thinking"}))
            .await;
        if let Some(h) = self.prediction.take() {
            h.abort();
        }
        // A speculative transcript is valid if only silence came after it.
        let spec = self.spec_asr.take().map(|(_, h)| h);
        if self.reply.is_some() || self.playing.is_some() {
            // The user spoke again while the assistant was replying, without
            // reaching the barge-in threshold: treat the new turn as one.
            self.barge_in().await;
        }
        self.playing = None;
        let id = self.next_reply_id;
        self.next_reply_id += 1;
        let cancel = CancellationToken::new();
        let progress = Arc::new(Mutex::new(Progress::default()));
        let ctx = ReplyCtx {
            deps: self.deps.clone(),
            out: self.out.clone(),
            events: self.events.clone(),
            history: self.history.clone(),
            key: self.key,
            id,
            turn,
            cancel: cancel.clone(),
            progress: progress.clone(),
            ended_at,
            silence_ms,
        };
        let task = tokio::spawn(respond(ctx, audio, spec));
        self.reply = Some(Reply {
            id,
            turn,
            cancel,
            progress,
            task,
        });
    }

    async fn finish_reply(&mut self, r: Reply, outcome: ReplyOutcome) {
        match outcome {
            ReplyOutcome::Done { user, reply } => {
                self.history.push(ChatMessage::new(Role::User, user));
                self.history.push(ChatMessage::new(Role::Assistant, reply));
                self.playing = Some(Playing {
                    id: r.id,
                    turn: r.turn,
                    progress: r.progress,
                    history_idx: self.history.len() - 1,
                });
            }
            ReplyOutcome::Empty => {
                self.emit(json!({"type": "state", "state": "listening"}))
                    .await;
            }
            ReplyOutcome::Busy | ReplyOutcome::Cancelled => {}
            ReplyOutcome::Failed(e) => {
                tracing::warn!(turn = r.turn, error = %e, "reply failed");
                self.emit(json!({"type": "error", "turn": r.turn, "message": e}))
                    .await;
            }
        }
    }
}

/// How an interrupted reply is remembered: what was heard, marked as cut off.
fn cut_off(heard: &str) -> String {
    if heard.is_empty() {
        "…".to_string()
    } else {
        format!("{heard}…")
    }
}

/// The words of the pieces the user heard, the last one cut proportionally.
fn heard_text(pieces: &[(String, usize)], played: usize) -> String {
    let mut left = played;
    let mut words: Vec<&str> = Vec::new();
    for (text, samples) in pieces {
        if left >= *samples {
            words.extend(text.split_whitespace());
            left -= samples;
        } else {
            let w: Vec<&str> = text.split_whitespace().collect();
            let n = w.len() * left / (*samples).max(1);
            words.extend(&w[..n]);
            break;
        }
    }
    words.join(" ")
}

struct ReplyCtx {
    deps: SpeechDeps,
    out: Arc<Mutex<OutQueue>>,
    events: mpsc::Sender<Value>,
    history: Vec<ChatMessage>,
    key: u64,
    id: u64,
    turn: u64,
    cancel: CancellationToken,
    progress: Arc<Mutex<Progress>>,
    ended_at: Instant,
    silence_ms: u32,
}

impl ReplyCtx {
    fn emit(&self, ev: Value) {
        let _ = self.events.try_send(ev);
    }

    /// `reason`: `queue_full` (an inference queue refused the job) or
    /// `deadline` (the reply had not started by `inference.start_deadline_ms`).
    fn play_busy_line(&self, reason: &'static str) -> ReplyOutcome {
        tracing::info!(turn = self.turn, reason, "busy line");
        Metrics::inc(&self.deps.metrics.busy_replies);
        if let Ok(mut q) = self.out.lock() {
            q.push_reply(self.id, self.deps.busy_line.to_vec());
        }
        self.emit(json!({"type": "busy", "turn": self.turn, "text": self.deps.config.conversation.busy_line, "reason": reason}));
        self.emit(json!({"type": "state", "state": "speaking"}));
        ReplyOutcome::Busy
    }

    /// When the reply must have started (transcript and first LLM token).
    fn start_deadline(&self) -> Option<tokio::time::Instant> {
        let ms = self.deps.config.inference.start_deadline_ms;
        (ms > 0).then(|| tokio::time::Instant::from_std(self.ended_at + Duration::from_millis(ms)))
    }
}

/// `f`'s output, or `None` if `deadline` passed first.
async fn within<F: std::future::Future>(
    deadline: Option<tokio::time::Instant>,
    f: F,
) -> Option<F::Output> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, f).await.ok(),
        None => Some(f.await),
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

async fn respond(
    ctx: ReplyCtx,
    audio: Vec<f32>,
    spec: Option<JoinHandle<Option<Transcript>>>,
) -> ReplyOutcome {
    let engines = ctx.deps.engines.clone();
    // Queues bound how much work waits, not how long: past this deadline the
    // user hears the busy line instead of silence.
    let deadline = ctx.start_deadline();
    // 1. Transcript: the speculative one if it is there, else decode now.
    let mut spec = spec;
    let transcript = within(deadline, async {
        if let Some(h) = spec.as_mut()
            && let Ok(Some(t)) = h.await
        {
            return Ok(t);
        }
        engines.asr.transcribe(audio).await
    })
    .await;
    let transcript = match transcript {
        Some(Ok(t)) => t,
        Some(Err(super::asr::AsrError::Busy(_))) => return ctx.play_busy_line("queue_full"),
        Some(Err(e)) => return ReplyOutcome::Failed(e.to_string()),
        None => {
            // Nobody waits for the speculative decode any more: drop its job.
            if let Some(h) = spec {
                h.abort();
            }
            return ctx.play_busy_line("deadline");
        }
    };
    let asr_done = ctx.ended_at.elapsed();
    let user = transcript.text.trim().to_string();
    if user.is_empty() {
        return ReplyOutcome::Empty;
    }
    if let Ok(mut p) = ctx.progress.lock() {
        p.user_text = Some(user.clone());
    }
    ctx.emit(json!({"type": "transcript", "turn": ctx.turn, "text": user, "final": true}));
    if ctx.cancel.is_cancelled() {
        return ReplyOutcome::Cancelled;
    }

    // 2. LLM, streamed.
    let mut messages = ctx.history.clone();
    messages.push(ChatMessage::new(Role::User, user.clone()));
    let llm_start = Instant::now();
    let mut generation = match engines.llm.generate(ctx.key, messages, None) {
        Ok(g) => g,
        Err(_) => return ctx.play_busy_line("queue_full"),
    };
    let mut chunker = SentenceChunker::new(ctx.deps.config.conversation.min_clause_words);
    let mut first_token: Option<Duration> = None;
    let mut first_piece: Option<Duration> = None;
    let mut first_audio: Option<Duration> = None;
    let mut tts_first: Option<Duration> = None;
    let mut reply = String::new();
    let mut cancelled = false;
    loop {
        let ev = tokio::select! {
            _ = ctx.cancel.cancelled() => {
                generation.cancel();
                cancelled = true;
                break;
            }
            _ = sleep_until_opt(deadline), if first_token.is_none() => {
                // Still waiting for an LLM slot: give it up (a queued request
                // is dropped before it decodes) and say we are busy.
                generation.cancel();
                return ctx.play_busy_line("deadline");
            }
            ev = generation.events.recv() => ev,
        };
        let (pieces, done) = match ev {
            Some(LlmEvent::Token(t)) => {
                first_token.get_or_insert(llm_start.elapsed());
                reply.push_str(&t);
                ctx.emit(json!({"type": "reply_delta", "turn": ctx.turn, "text": t}));
                (chunker.push(&t), false)
            }
            Some(LlmEvent::Done(c)) => {
                tracing::debug!(finish = ?c.finish, prompt = c.prompt_tokens, reused = c.reused_tokens, generated = c.generated, "llm done");
                (chunker.finish().into_iter().collect(), true)
            }
            None => (chunker.finish().into_iter().collect(), true),
        };
        for piece in pieces {
            first_piece.get_or_insert(llm_start.elapsed());
            let tts_start = Instant::now();
            let speech = tokio::select! {
                _ = ctx.cancel.cancelled() => { cancelled = true; break; }
                s = engines.tts.synthesize(piece.clone()) => s,
            };
            let speech = match speech {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "TTS failed for a piece; skipping it");
                    continue;
                }
            };
            let pcm = resample_clip(&speech.pcm, speech.sample_rate, WIRE_RATE).unwrap_or_default();
            if ctx.cancel.is_cancelled() {
                cancelled = true;
                break;
            }
            if let Ok(mut p) = ctx.progress.lock() {
                p.pieces.push((piece, pcm.len()));
            }
            if let Ok(mut q) = ctx.out.lock() {
                q.push_reply(ctx.id, pcm);
            }
            if first_audio.is_none() {
                first_audio = Some(ctx.ended_at.elapsed());
                tts_first = Some(tts_start.elapsed());
                ctx.emit(json!({"type": "state", "state": "speaking"}));
            }
        }
        if cancelled || done {
            break;
        }
    }
    if let Ok(mut p) = ctx.progress.lock() {
        p.reply_text = reply.clone();
    }
    if cancelled {
        return ReplyOutcome::Cancelled;
    }
    let reply = reply.trim().to_string();
    ctx.emit(json!({"type": "reply", "turn": ctx.turn, "text": reply, "interrupted": false}));
    let total = first_audio.map(|d| u64::from(ctx.silence_ms) + ms(d));
    ctx.emit(json!({
        "type": "timings",
        "turn": ctx.turn,
        "endpoint_ms": ctx.silence_ms,
        "asr_ms": ms(asr_done),
        "asr_decode_ms": ms(transcript.elapsed),
        "llm_first_token_ms": first_token.map(ms),
        "first_sentence_ms": first_piece.map(ms),
        "tts_first_audio_ms": tts_first.map(ms),
        "total_ms": total,
    }));
    ReplyOutcome::Done { user, reply }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heard_text_cuts_where_playback_stopped() {
        let pieces = vec![
            ("The capital of France is Paris,".to_string(), 1000),
            ("a city of light.".to_string(), 400),
        ];
        assert_eq!(heard_text(&pieces, 0), "");
        assert_eq!(heard_text(&pieces, 1000), "The capital of France is Paris,");
        assert_eq!(
            heard_text(&pieces, 1200),
            "The capital of France is Paris, a city"
        );
        assert_eq!(
            heard_text(&pieces, 5000),
            "The capital of France is Paris, a city of light."
        );
    }
}
