//! The speech pipeline of one session: the tokio shell around the sans-IO
//! [`Conversation`].
//!
//! [`run`] is one task per session. It cuts the 16 kHz input into 32 ms
//! windows, asks Silero for their speech probabilities and feeds them to the
//! conversation with everything else that happens (Smart Turn answers,
//! transcripts, LLM tokens, synthesized pieces, playout progress, prompts,
//! typed text, timeouts). It carries out the [`Action`]s that come back:
//! inference jobs go to the engines' own threads (ASR and Smart Turn one
//! task each, one forwarding task per LLM generation, one TTS task per
//! session that synthesizes pieces in order), audio goes to the
//! [`OutQueue`], events to the session. Results come back on one channel
//! and are fed in as inputs, so all decisions stay in the state machine.
//!
//! Nothing here touches the network: the session feeds audio in and drains
//! the [`OutQueue`]; `voxloop converse` does the same with files.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::conversation::{Action, Conversation, Count, Input, Playout, Settings};
use super::jobs::{TtsJob, generate, tts_worker};
use super::playout::OutQueue;
use super::vad::{self, VadState, WINDOW};
use crate::events::Event;
use crate::metrics::Metrics;
use crate::prompt::{Control, DropReason, PromptOutcome};

pub use super::deps::{Inference, SpeechDeps};

/// The IO side of one conversation: running jobs and where results go.
struct Shell {
    deps: SpeechDeps,
    out: Arc<Mutex<OutQueue>>,
    events: mpsc::Sender<Event>,
    results: mpsc::UnboundedSender<Input>,
    /// The LLM engine keeps this conversation's KV cells under this key.
    key: u64,
    vad: VadState,
    vad_buf: Vec<f32>,
    /// ASR jobs: the task awaiting each, and whether its pool job is alive.
    asr: HashMap<u64, (JoinHandle<()>, Weak<()>)>,
    /// ASR jobs given up on that may still be running in the pool.
    given_up: Vec<Weak<()>>,
    prediction: Option<JoinHandle<()>>,
    llm: HashMap<u64, (Arc<AtomicBool>, JoinHandle<()>)>,
    tts: mpsc::UnboundedSender<TtsJob>,
    tts_cancel: HashMap<u64, CancellationToken>,
    tickets: HashMap<u64, oneshot::Sender<PromptOutcome>>,
    next_ticket: u64,
    last_playout: Option<Playout>,
    others_waiting: bool,
}

/// Run the speech loop until `cancel` fires or the input ends.
pub async fn run(
    mut input: mpsc::Receiver<Vec<f32>>,
    mut control: mpsc::Receiver<Control>,
    out: Arc<Mutex<OutQueue>>,
    events: mpsc::Sender<Event>,
    deps: SpeechDeps,
    cancel: CancellationToken,
) {
    let (results, mut results_rx) = mpsc::unbounded_channel();
    let (tts, tts_rx) = mpsc::unbounded_channel();
    let tts_task = tokio::spawn(tts_worker(
        deps.clone(),
        tts_rx,
        results.clone(),
        out.clone(),
    ));
    let settings = Settings::from_config(&deps.config);
    let mut conv = Conversation::new(settings, Instant::now(), time::OffsetDateTime::now_utc());
    let mut sh = Shell {
        deps,
        out,
        events,
        results,
        key: rand::random::<u64>(),
        vad: VadState::default(),
        vad_buf: Vec::with_capacity(WINDOW * 2),
        asr: HashMap::new(),
        given_up: Vec::new(),
        prediction: None,
        llm: HashMap::new(),
        tts,
        tts_cancel: HashMap::new(),
        tickets: HashMap::new(),
        next_ticket: 1,
        last_playout: None,
        others_waiting: false,
    };
    sh.feed(&mut conv, Input::Tick);
    let mut control_open = true;
    loop {
        let timeout = conv.poll_timeout();
        tokio::select! {
            _ = cancel.cancelled() => break,
            c = control.recv(), if control_open => match c {
                Some(Control::Prompt(d)) => {
                    let ticket = sh.next_ticket;
                    sh.next_ticket += 1;
                    sh.tickets.insert(ticket, d.done);
                    sh.feed(&mut conv, Input::Prompt { prompt: d.prompt, ticket });
                }
                Some(Control::Text(text)) => sh.feed(&mut conv, Input::Text(text)),
                Some(Control::Draining { deadline_ms }) => {
                    sh.execute(vec![Action::Emit(Event::Draining { deadline_ms })]);
                }
                None => control_open = false,
            },
            Some(result) = results_rx.recv() => sh.feed(&mut conv, result),
            f = super::next_input(&mut input, conv.in_turn()) => match f {
                Some(pcm) => {
                    let t = Instant::now();
                    if sh.on_audio(&mut conv, &pcm).await {
                        // The VAD lag: this batch's wait and run on the VAD
                        // thread, plus the audio that queued meanwhile (20 ms
                        // chunks). Real time means it stays near one window.
                        let queued = Duration::from_millis(u64::from(crate::FRAME_MS)) * input.len() as u32;
                        sh.deps.metrics.vad_lag.observe(t.elapsed() + queued);
                    }
                }
                None => break,
            },
            _ = sleep_until_opt(timeout) => sh.feed(&mut conv, Input::Tick),
        }
    }
    let actions = conv.close();
    sh.execute(actions);
    control.close();
    while let Ok(c) = control.try_recv() {
        if let Control::Prompt(d) = c {
            let _ = d
                .done
                .send(PromptOutcome::Dropped(DropReason::SessionEnded));
        }
    }
    for (_, (h, _)) in sh.asr.drain() {
        h.abort();
    }
    for (_, (stop, h)) in sh.llm.drain() {
        stop.store(true, Ordering::SeqCst);
        h.abort();
    }
    if let Some(h) = sh.prediction.take() {
        h.abort();
    }
    tts_task.abort();
    sh.deps.engines.forget(sh.key);
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

impl Shell {
    /// Feed one input (after the playout progress, if it changed) and carry
    /// out what the conversation decides.
    fn feed(&mut self, conv: &mut Conversation, input: Input) {
        match &input {
            Input::Transcript { job, .. } => {
                self.asr.remove(job);
            }
            Input::LlmDone { reply } | Input::LlmFailed { reply, .. } => {
                self.llm.remove(reply);
            }
            _ => {}
        }
        let now = Instant::now();
        let playout = self.playout();
        if self.last_playout != Some(playout) {
            self.last_playout = Some(playout);
            let actions = conv.handle(Input::Playout(playout), now);
            self.execute(actions);
        }
        // Work in the engines beyond this session's own jobs is someone else's.
        self.given_up.retain(|w| w.strong_count() > 0);
        let own = self.asr.len() + self.given_up.len() + self.llm.len();
        let others_waiting = self.deps.engines.pending() > own;
        if self.others_waiting != others_waiting {
            self.others_waiting = others_waiting;
            let actions = conv.handle(Input::Load { others_waiting }, now);
            self.execute(actions);
        }
        let actions = conv.handle(input, now);
        self.execute(actions);
    }

    fn playout(&self) -> Playout {
        self.out
            .lock()
            .map(|q| {
                let (reply, played) = q.progress();
                Playout {
                    reply,
                    played,
                    idle: q.is_empty(),
                }
            })
            .unwrap_or_default()
    }

    /// Cut the input into VAD windows, score them (on the VAD's thread) and
    /// feed each one.
    /// Returns whether a batch was scored.
    async fn on_audio(&mut self, conv: &mut Conversation, pcm: &[f32]) -> bool {
        self.vad_buf.extend_from_slice(pcm);
        if self.vad_buf.len() < WINDOW {
            return false;
        }
        let n = self.vad_buf.len() / WINDOW;
        let windows: Vec<Vec<f32>> = self
            .vad_buf
            .drain(..n * WINDOW)
            .collect::<Vec<f32>>()
            .chunks_exact(WINDOW)
            .map(<[f32]>::to_vec)
            .collect();
        let floor = self.deps.config.turn.vad_floor_dbfs;
        let scored = !windows.iter().all(|w| vad::under_floor(w, floor));
        let probs = if scored {
            let state = std::mem::take(&mut self.vad);
            match self.deps.engines.vad(state.clone(), windows.clone()).await {
                Ok((probs, st)) => {
                    self.vad = st;
                    probs
                }
                Err(e) => {
                    tracing::warn!(error = %e, "VAD failed; treating audio as silence");
                    self.vad = state;
                    vec![0.0; n]
                }
            }
        } else {
            // Silence by level alone: Silero would say ~0 and costs a
            // listening session most of its CPU. Its context is the last
            // window's tail, so only that window is kept.
            if let Some(last) = windows.last() {
                self.vad.skip(last);
            }
            self.deps
                .metrics
                .vad_windows_skipped
                .fetch_add(n as u64, Ordering::Relaxed);
            vec![0.0; n]
        };
        for (pcm, prob) in windows.into_iter().zip(probs) {
            self.feed(conv, Input::Window { pcm, prob });
        }
        scored
    }

    fn execute(&mut self, actions: Vec<Action>) {
        for a in actions {
            self.act(a);
        }
    }

    fn act(&mut self, action: Action) {
        let engines = &self.deps.engines;
        match action {
            Action::Emit(ev) => {
                if !matches!(ev, Event::ReplyDelta { .. }) {
                    tracing::debug!(?ev, "event");
                }
                // Events are best-effort: a slow reader must not stall the audio loop.
                let _ = self.events.try_send(ev);
            }
            Action::StartAsr { job, audio } => {
                let engines = engines.clone();
                let results = self.results.clone();
                let alive = Arc::new(());
                let weak = Arc::downgrade(&alive);
                let h = tokio::spawn(async move {
                    let result = engines.transcribe(audio, alive).await;
                    let _ = results.send(Input::Transcript { job, result });
                });
                self.asr.insert(job, (h, weak));
            }
            Action::CancelAsr { job } => {
                // Dropping the job's future tells its pool to skip it; one
                // already running stops at whisper.cpp's next abort check
                // and counts as ours until then.
                if let Some((h, alive)) = self.asr.remove(&job) {
                    h.abort();
                    self.given_up.push(alive);
                }
            }
            Action::PredictTurn { pause, audio } => {
                let engines = engines.clone();
                let results = self.results.clone();
                let task = tokio::spawn(async move {
                    let complete = match engines.turn_complete(audio).await {
                        Ok(complete) => complete,
                        Err(e) => {
                            // As "incomplete": the silence ends the turn, and the
                            // speculative transcript still starts.
                            tracing::warn!(error = %e, "Smart Turn failed; waiting for silence");
                            false
                        }
                    };
                    let _ = results.send(Input::TurnPredicted { pause, complete });
                });
                if let Some(h) = self.prediction.replace(task) {
                    h.abort();
                }
            }
            Action::CancelTurnPrediction => {
                if let Some(h) = self.prediction.take() {
                    h.abort();
                }
            }
            Action::StartLlm { reply, messages } => {
                let stop = Arc::new(AtomicBool::new(false));
                let task = generate(
                    engines.clone(),
                    self.key,
                    reply,
                    messages,
                    self.results.clone(),
                    stop.clone(),
                );
                self.llm.insert(reply, (stop, tokio::spawn(task)));
            }
            Action::WarmLlm { messages, so_far } => engines.warm(self.key, messages, so_far),
            Action::CancelLlm { reply } => {
                if let Some((stop, h)) = self.llm.remove(&reply) {
                    // The engine ends it before decoding another token.
                    stop.store(true, Ordering::SeqCst);
                    h.abort();
                }
            }
            Action::Synthesize { reply, piece, text } => {
                // One reply synthesizes at a time: older ones are done or cancelled.
                self.tts_cancel.retain(|r, _| *r == reply);
                let cancel = self.tts_cancel.entry(reply).or_default().clone();
                let _ = self.tts.send(TtsJob {
                    reply,
                    piece,
                    text,
                    cancel,
                });
            }
            Action::CancelSynthesis { reply } => {
                if let Some(c) = self.tts_cancel.remove(&reply) {
                    c.cancel();
                }
            }
            Action::Play { reply, pcm } => {
                if let Ok(mut q) = self.out.lock() {
                    q.push_reply(reply, pcm);
                }
            }
            Action::PlayBusyLine { reply } => {
                if let Ok(mut q) = self.out.lock() {
                    q.push_reply(reply, self.deps.busy_line.get().to_vec());
                }
            }
            Action::Flush => {
                let dropped = self.out.lock().map(|mut q| q.clear()).unwrap_or(0);
                tracing::debug!(dropped_ms = dropped / 48, "playout flushed");
            }
            Action::Hold(held) => {
                if let Ok(mut q) = self.out.lock() {
                    q.set_held(held);
                }
            }
            Action::AnswerPrompt { ticket, outcome } => {
                if let Some(done) = self.tickets.remove(&ticket) {
                    let _ = done.send(outcome);
                }
            }
            Action::Count(c) => {
                let m = &self.deps.metrics;
                Metrics::inc(match c {
                    Count::Utterance => &m.utterances,
                    Count::BargeIn => &m.barge_ins,
                    Count::HoldResumed => &m.holds_resumed,
                    Count::TurnContinued => &m.turns_continued,
                    Count::BusyLine => &m.busy_replies,
                    Count::Unsupported => &m.unsupported_replies,
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "speech_tests.rs"]
mod tests;
