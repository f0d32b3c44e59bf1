//! The conversation of one session as a sans-IO state machine.
//!
//! [`Conversation::handle`] takes one [`Input`] (a VAD window, a Smart Turn
//! answer, a transcript, an LLM token, a synthesized piece, playout
//! progress, a prompt, typed text or a clock tick) and the time, and
//! returns the [`Action`]s the caller must carry out (start ASR, start or
//! cancel the LLM, synthesize, play, flush, emit an event, answer a prompt).
//! It never blocks, spawns, reads a clock or touches a model: the tokio
//! shell in `pipeline::speech` does that, `voxloop converse` drives the same
//! shell from files, and the tests in `tests.rs` drive it with scripted
//! inputs and no models at all.
//!
//! What it decides:
//! - turns: [`TurnTaking`] on VAD windows and Smart Turn answers, with the
//!   speculative transcript started at the first pause and used at the end
//!   of turn when only silence followed;
//! - replies: the transcript goes into the history, LLM tokens are chunked
//!   into clauses and synthesized in order, audio is queued as it comes;
//!   a reply that has not started `start_deadline` after the end of its
//!   turn becomes the busy line;
//! - barge-in: user speech over the assistant flushes its audio at once,
//!   cancels the LLM and TTS, and rewrites the history to what was heard;
//! - prompts: a [`PromptQueue`] spoken at [`prompts::moment`], requeued when
//!   cut off before any of it was queued.

mod reply;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::llm::{ChatMessage, Role};
use super::prompts::{self, Activity, Moment, PromptQueue};
use super::turn_taking::{EndReason, TurnEvent, TurnTaking};
use crate::PIPELINE_RATE;
use crate::config::{Config, TurnConfig};
use crate::events::{Event, State};
use crate::prompt::{DropReason, Prompt, PromptOutcome};

pub use reply::heard_text;
use reply::{Cause, Reply, ReplyKind, Stage};

/// Audio kept from before the turn started (VAD needs a few windows to be sure).
const PREROLL_MS: usize = 400;
/// How often queued prompts are looked at when nothing else happens.
const PROMPT_TICK: Duration = Duration::from_millis(50);

/// The settings a conversation needs, taken from [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub turn: TurnConfig,
    pub system_prompt: String,
    pub busy_line: String,
    /// Said when a reply has nothing speakable (empty = say nothing).
    pub fallback_line: String,
    pub min_clause_words: usize,
    /// Longest spoken reply in words (0 = no cap).
    pub max_spoken_words: usize,
    /// A turn whose reply has not started by then gets the busy line.
    pub start_deadline: Option<Duration>,
    /// Start the LLM on the speculative transcript at the first pause.
    pub speculative_reply: bool,
    pub prompt_grace: Duration,
    pub max_queued_prompts: usize,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Self {
        let deadline = cfg.inference.start_deadline_ms;
        Self {
            turn: cfg.turn.clone(),
            system_prompt: cfg.conversation.system_prompt.clone(),
            busy_line: cfg.conversation.busy_line.clone(),
            fallback_line: cfg.conversation.fallback_line.clone(),
            min_clause_words: cfg.conversation.min_clause_words,
            max_spoken_words: cfg.conversation.max_spoken_words,
            start_deadline: (deadline > 0).then(|| Duration::from_millis(deadline)),
            speculative_reply: cfg.turn.speculative_reply,
            prompt_grace: Duration::from_millis(cfg.prompts.grace_ms),
            max_queued_prompts: cfg.prompts.max_queued,
        }
    }
}

/// A transcript as the conversation needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    pub text: String,
    /// Whisper's own decode time.
    pub decode: Duration,
}

/// Why a job failed: `Busy` means its queue refused it (the busy line).
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Busy,
    Failed(String),
}

/// What the playout queue reports: how much of `reply` the user has heard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Playout {
    /// The reply whose audio played last.
    pub reply: u64,
    /// Its samples played so far (48 kHz).
    pub played: usize,
    /// Nothing is waiting to play.
    pub idle: bool,
}

/// Something that happened, fed to [`Conversation::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// One VAD window of 16 kHz audio and Silero's speech probability for it.
    Window {
        pcm: Vec<f32>,
        prob: f32,
    },
    /// Smart Turn's answer for pause `pause`.
    TurnPredicted {
        pause: u64,
        complete: bool,
    },
    /// The result of ASR job `job`.
    Transcript {
        job: u64,
        result: Result<Heard, Failure>,
    },
    LlmToken {
        reply: u64,
        text: String,
    },
    /// The LLM finished `reply` (or its stream ended).
    LlmDone {
        reply: u64,
    },
    /// The LLM refused or failed to start `reply`.
    LlmFailed {
        reply: u64,
        failure: Failure,
    },
    /// Piece `piece` of `reply`, synthesized and resampled to 48 kHz;
    /// `None` when synthesis failed (the piece is skipped).
    Synthesized {
        reply: u64,
        piece: usize,
        pcm: Option<Vec<f32>>,
    },
    Playout(Playout),
    /// Whether other sessions' inference work is queued (the shell's view of
    /// the engines' queues): only then does the start deadline shed a turn.
    Load {
        others_waiting: bool,
    },
    /// A proactive prompt; `ticket` comes back in [`Action::AnswerPrompt`].
    Prompt {
        prompt: Prompt,
        ticket: u64,
    },
    /// A typed user message.
    Text(String),
    /// Time passed (see [`Conversation::poll_timeout`]).
    Tick,
}

/// Counters the caller keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Utterance,
    BargeIn,
    BusyLine,
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send an event to the client (and the bus mirror).
    Emit(Event),
    /// Transcribe 16 kHz `audio` as job `job`, then feed [`Input::Transcript`].
    StartAsr {
        job: u64,
        audio: Vec<f32>,
    },
    /// Nobody waits for `job` any more: drop it.
    CancelAsr {
        job: u64,
    },
    /// Ask Smart Turn whether the turn so far is complete.
    PredictTurn {
        pause: u64,
        audio: Vec<f32>,
    },
    CancelTurnPrediction,
    /// Generate a reply to `messages`; feed its tokens back.
    StartLlm {
        reply: u64,
        messages: Vec<ChatMessage>,
    },
    /// Stop generating before the next token.
    CancelLlm {
        reply: u64,
    },
    /// Synthesize one piece; results must come back in piece order.
    Synthesize {
        reply: u64,
        piece: usize,
        text: String,
    },
    /// Drop `reply`'s pieces waiting for or in synthesis.
    CancelSynthesis {
        reply: u64,
    },
    /// Queue 48 kHz audio for playout, tagged with its reply.
    Play {
        reply: u64,
        pcm: Vec<f32>,
    },
    /// Queue the pre-synthesized busy line.
    PlayBusyLine {
        reply: u64,
    },
    /// Drop all audio waiting to play, at once.
    Flush,
    /// Report a prompt's fate to whoever delivered it.
    AnswerPrompt {
        ticket: u64,
        outcome: PromptOutcome,
    },
    Count(Count),
}

/// A reply whose text is complete but whose audio may still be playing.
#[derive(Debug)]
struct Playing {
    id: u64,
    turn: u64,
    pieces: Vec<(String, usize)>,
    /// Index of its assistant message in the history.
    history_idx: usize,
}

/// The speculative transcript started at the last pause, and the reply
/// started on it while Smart Turn and the silence decide.
#[derive(Debug)]
struct Speculative {
    job: u64,
    result: Option<Result<Heard, Failure>>,
    reply: Option<SpecReply>,
}

/// An LLM generation on a speculative transcript: its tokens are held back
/// until the turn ends with only silence after that transcript (then they
/// are the reply), or dropped with it when the user goes on.
#[derive(Debug)]
struct SpecReply {
    id: u64,
    started: Instant,
    first_token: Option<Duration>,
    tokens: Vec<String>,
    done: bool,
}

/// The conversation state of one session (see the module docs).
pub struct Conversation {
    cfg: Settings,
    turns: TurnTaking,
    preroll: std::collections::VecDeque<f32>,
    utterance: Vec<f32>,
    spec: Option<Speculative>,
    predicting: bool,
    reply: Option<Reply>,
    playing: Option<Playing>,
    playout: Playout,
    /// Other sessions' work is queued in the engines.
    others_waiting: bool,
    /// Decodes of turns whose reply was cut: (job, turn), reported when done.
    orphans: Vec<(u64, u64)>,
    history: Vec<ChatMessage>,
    turn: u64,
    next_id: u64,
    prompts: PromptQueue<u64>,
    /// When the user's turn or the assistant's audio last ended.
    quiet_since: Instant,
    /// Wall-clock time at `start`, for prompt expiry.
    start: (Instant, OffsetDateTime),
    now: Instant,
    out: Vec<Action>,
}

impl Conversation {
    /// A new conversation at `now` (`wall` is the same moment in UTC). Its
    /// first actions (the `listening` state) come from the first `handle`.
    pub fn new(cfg: Settings, now: Instant, wall: OffsetDateTime) -> Self {
        let history = vec![ChatMessage::new(Role::System, cfg.system_prompt.clone())];
        Self {
            turns: TurnTaking::new(cfg.turn.clone()),
            prompts: PromptQueue::new(cfg.max_queued_prompts),
            preroll: std::collections::VecDeque::new(),
            utterance: Vec::new(),
            spec: None,
            predicting: false,
            reply: None,
            playing: None,
            playout: Playout {
                idle: true,
                ..Playout::default()
            },
            others_waiting: false,
            orphans: Vec::new(),
            history,
            turn: 0,
            next_id: 1,
            quiet_since: now,
            start: (now, wall),
            now,
            out: vec![Action::Emit(Event::state(State::Listening))],
            cfg,
        }
    }

    /// The history the next reply is generated from.
    pub fn history(&self) -> &[ChatMessage] {
        &self.history
    }

    /// Is the user in a turn (speaking or pausing)?
    pub fn in_turn(&self) -> bool {
        self.turns.in_turn()
    }

    /// When to feed [`Input::Tick`] if nothing else comes first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.reply.as_ref().and_then(Reply::start_deadline);
        let prompt = (!self.prompts.is_empty()).then(|| self.now + PROMPT_TICK);
        match (deadline, prompt) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Take in one input at `now`; returns what to do.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        self.now = now;
        if self.replying() {
            self.quiet_since = now;
        }
        match input {
            Input::Window { pcm, prob } => self.on_window(pcm, prob),
            Input::TurnPredicted { pause, complete } => {
                self.predicting = false;
                if let Some(ev) = self.turns.on_prediction(pause, complete) {
                    self.on_turn_event(ev);
                }
            }
            Input::Transcript { job, result } => self.on_transcript(job, result),
            Input::LlmToken { reply, text } => {
                if let Some(sr) = self.spec_reply(reply) {
                    sr.first_token
                        .get_or_insert(now.saturating_duration_since(sr.started));
                    sr.tokens.push(text);
                } else {
                    self.with_reply(reply, |c, r| c.on_token(r, text));
                }
            }
            Input::LlmDone { reply } => {
                if let Some(sr) = self.spec_reply(reply) {
                    sr.done = true;
                } else {
                    self.with_reply(reply, Self::on_llm_done);
                }
            }
            Input::LlmFailed { reply, failure } => {
                if self.spec_reply(reply).is_some() {
                    // The turn's end starts it again, and reports a failure then.
                    if let Some(s) = self.spec.as_mut() {
                        s.reply = None;
                    }
                } else {
                    self.with_reply(reply, |c, r| c.fail_start(r, failure));
                }
            }
            Input::Synthesized { reply, piece, pcm } => {
                self.with_reply(reply, |c, r| c.on_synthesized(r, piece, pcm))
            }
            Input::Playout(p) => self.playout = p,
            Input::Load { others_waiting } => self.others_waiting = others_waiting,
            Input::Prompt { prompt, ticket } => {
                tracing::info!(prompt = %prompt.id, priority = prompt.priority, "prompt queued");
                let wall = self.wall(now);
                for (ticket, reason) in self.prompts.push(prompt, ticket, wall) {
                    self.answer(ticket, PromptOutcome::Dropped(reason));
                }
            }
            Input::Text(text) => self.on_text(text),
            Input::Tick => {}
        }
        self.check_deadline();
        self.consider_prompts();
        std::mem::take(&mut self.out)
    }

    /// The session is over: cancel what runs and answer every prompt.
    pub fn close(&mut self) -> Vec<Action> {
        if let Some(r) = self.reply.take() {
            self.cancel_work(&r);
            if let ReplyKind::Prompt { ticket, .. } = r.kind {
                let outcome = if r.queued > 0 {
                    PromptOutcome::Spoken { turn: r.turn }
                } else {
                    PromptOutcome::Dropped(DropReason::SessionEnded)
                };
                self.answer(ticket, outcome);
            }
        }
        self.drop_speculation();
        for (ticket, reason) in self.prompts.drain() {
            self.answer(ticket, PromptOutcome::Dropped(reason));
        }
        std::mem::take(&mut self.out)
    }

    fn wall(&self, now: Instant) -> OffsetDateTime {
        self.start.1 + now.saturating_duration_since(self.start.0)
    }

    fn emit(&mut self, ev: Event) {
        self.out.push(Action::Emit(ev));
    }

    fn answer(&mut self, ticket: u64, outcome: PromptOutcome) {
        self.out.push(Action::AnswerPrompt { ticket, outcome });
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Is the assistant thinking or still talking?
    fn replying(&self) -> bool {
        self.reply.is_some() || (self.playing.is_some() && !self.playout.idle)
    }

    fn on_window(&mut self, pcm: Vec<f32>, prob: f32) {
        self.preroll.extend(pcm.iter().copied());
        let keep = PREROLL_MS * PIPELINE_RATE as usize / 1000;
        let excess = self.preroll.len().saturating_sub(keep);
        self.preroll.drain(..excess);
        if self.turns.in_turn() {
            self.utterance.extend_from_slice(&pcm);
            self.quiet_since = self.now;
        }
        for ev in self.turns.on_window(prob) {
            self.on_turn_event(ev);
        }
    }

    fn on_turn_event(&mut self, ev: TurnEvent) {
        match ev {
            TurnEvent::SpeechStarted => {
                self.utterance = self.preroll.iter().copied().collect();
                self.drop_speculation();
                self.emit(Event::state(State::UserSpeaking));
            }
            TurnEvent::SustainedSpeech => {
                if self.cut_reply(Cause::User) {
                    self.out.push(Action::Count(Count::BargeIn));
                }
            }
            TurnEvent::Paused => {
                if self.cfg.turn.smart_turn {
                    self.predicting = true;
                    self.out.push(Action::PredictTurn {
                        pause: self.turns.pause_id(),
                        audio: self.utterance.clone(),
                    });
                }
                // Decode now, so the transcript is ready when the turn ends.
                self.drop_speculation();
                let job = self.next_id();
                self.spec = Some(Speculative {
                    job,
                    result: None,
                    reply: None,
                });
                self.out.push(Action::StartAsr {
                    job,
                    audio: self.utterance.clone(),
                });
            }
            TurnEvent::Resumed => {
                self.drop_speculation();
                self.cancel_prediction();
            }
            TurnEvent::EndOfTurn { silence_ms, reason } => self.end_turn(silence_ms, reason),
        }
    }

    fn drop_speculation(&mut self) {
        let Some(s) = self.spec.take() else {
            return;
        };
        if s.result.is_none() {
            self.out.push(Action::CancelAsr { job: s.job });
        }
        if let Some(sr) = s.reply
            && !sr.done
        {
            self.out.push(Action::CancelLlm { reply: sr.id });
        }
    }

    /// The speculative reply `id`, if it is the one running.
    fn spec_reply(&mut self, id: u64) -> Option<&mut SpecReply> {
        self.spec
            .as_mut()
            .and_then(|s| s.reply.as_mut())
            .filter(|sr| sr.id == id)
    }

    fn cancel_prediction(&mut self) {
        if std::mem::take(&mut self.predicting) {
            self.out.push(Action::CancelTurnPrediction);
        }
    }

    fn end_turn(&mut self, silence_ms: u32, reason: EndReason) {
        let audio = std::mem::take(&mut self.utterance);
        tracing::info!(
            turn = self.turn + 1,
            silence_ms,
            ?reason,
            audio_ms = audio.len() / 16,
            "end of turn"
        );
        self.out.push(Action::Count(Count::Utterance));
        self.emit(Event::state(State::Thinking));
        self.cancel_prediction();
        if self.reply.is_some() || self.playing.is_some() {
            // The user spoke again while the assistant was replying, without
            // reaching the barge-in threshold: treat the new turn as one.
            if self.cut_reply(Cause::User) {
                self.out.push(Action::Count(Count::BargeIn));
            }
        }
        self.playing = None;
        // A speculative transcript is valid if only silence came after it.
        let spec = self.spec.take();
        let mut r = self.new_reply(ReplyKind::Speech, silence_ms);
        match spec {
            Some(Speculative {
                job, result: None, ..
            }) => r.stage = Stage::Transcribing { job, audio },
            Some(Speculative {
                result: Some(Ok(heard)),
                reply: Some(sr),
                ..
            }) => {
                // Only silence came after the speculative transcript: its
                // reply is this turn's reply.
                self.reply = Some(r);
                self.with_current(|c, r| c.adopt_speculation(r, heard, sr));
                return;
            }
            Some(Speculative {
                result: Some(Ok(heard)),
                ..
            }) => {
                self.reply = Some(r);
                self.with_current(|c, r| c.on_heard(r, heard));
                return;
            }
            // No speculation, or it failed: decode the whole turn now.
            _ => {
                let job = self.next_id();
                self.out.push(Action::StartAsr { job, audio });
                r.stage = Stage::Transcribing {
                    job,
                    audio: Vec::new(),
                };
            }
        }
        self.reply = Some(r);
    }

    fn on_transcript(&mut self, job: u64, result: Result<Heard, Failure>) {
        if let Some(i) = self.orphans.iter().position(|(j, _)| *j == job) {
            // The turn's reply was cut while this decode ran: report what the
            // user said, with nothing to answer it.
            let (_, turn) = self.orphans.swap_remove(i);
            if let Ok(heard) = result
                && !heard.text.trim().is_empty()
            {
                self.emit(Event::Transcript {
                    turn,
                    text: heard.text.trim().to_string(),
                    is_final: true,
                    typed: false,
                });
            }
            return;
        }
        if let Some(s) = self.spec.as_mut()
            && s.job == job
        {
            let heard = result.as_ref().ok().map(|h| h.text.trim().to_string());
            s.result = Some(result);
            if let Some(user) = heard.filter(|t| !t.is_empty())
                && self.cfg.speculative_reply
                && self.reply.is_none()
                && self.turns.in_turn()
            {
                // Start answering while Smart Turn and the silence decide.
                let id = self.next_id();
                let mut messages = self.history.clone();
                messages.push(ChatMessage::new(Role::User, user));
                self.out.push(Action::StartLlm {
                    reply: id,
                    messages,
                });
                if let Some(s) = self.spec.as_mut() {
                    s.reply = Some(SpecReply {
                        id,
                        started: self.now,
                        first_token: None,
                        tokens: Vec::new(),
                        done: false,
                    });
                }
            }
            return;
        }
        let waiting = matches!(
            self.reply.as_ref().map(|r| &r.stage),
            Some(Stage::Transcribing { job: j, .. }) if *j == job
        );
        if !waiting {
            return; // a job nobody waits for any more
        }
        self.with_current(|c, mut r| match result {
            Ok(heard) => c.on_heard(r, heard),
            Err(failure) => {
                // A failed speculative decode falls back to decoding the whole turn.
                let fallback = match &mut r.stage {
                    Stage::Transcribing { audio, .. } if !audio.is_empty() => {
                        Some(std::mem::take(audio))
                    }
                    _ => None,
                };
                match fallback {
                    Some(audio) => {
                        let job = c.next_id();
                        c.out.push(Action::StartAsr { job, audio });
                        r.stage = Stage::Transcribing {
                            job,
                            audio: Vec::new(),
                        };
                        Some(r)
                    }
                    None => c.fail_start(r, failure),
                }
            }
        });
    }

    fn on_text(&mut self, text: String) {
        let text = text.trim().to_string();
        if text.is_empty() {
            return;
        }
        if self.replying() {
            self.cut_reply(Cause::Typed);
        }
        // A reply started on speech in progress would answer the wrong thing.
        self.drop_speculation();
        self.playing = None;
        self.emit(Event::state(State::Thinking));
        let r = self.new_reply(ReplyKind::Text, 0);
        self.emit(Event::Transcript {
            turn: r.turn,
            text: text.clone(),
            is_final: true,
            typed: true,
        });
        self.reply = Some(r);
        self.with_current(|c, r| Some(c.start_llm(r, text)));
    }

    /// Expire prompts, and speak the next one if this is a natural moment.
    fn consider_prompts(&mut self) {
        if self.prompts.is_empty() {
            return;
        }
        for (ticket, reason) in self.prompts.expire(self.wall(self.now)) {
            self.answer(ticket, PromptOutcome::Dropped(reason));
        }
        let Some(interrupt) = self.prompts.head().map(|p| p.interrupt) else {
            return;
        };
        let activity = Activity {
            user_in_turn: self.turns.in_turn(),
            assistant_busy: self.replying(),
            quiet_for: self.now.saturating_duration_since(self.quiet_since),
        };
        match prompts::moment(activity, self.cfg.prompt_grace, interrupt) {
            Moment::Wait => {}
            Moment::SpeakOverAssistant => {
                self.cut_reply(Cause::Prompt);
                self.speak_next_prompt();
            }
            Moment::Speak => self.speak_next_prompt(),
        }
    }

    fn speak_next_prompt(&mut self) {
        let Some((prompt, ticket)) = self.prompts.pop() else {
            return;
        };
        self.playing = None;
        let text = prompt.text.trim().to_string();
        let mut r = self.new_reply(ReplyKind::Prompt { prompt, ticket }, 0);
        if let ReplyKind::Prompt { prompt, .. } = &r.kind {
            self.emit(Event::Prompt {
                id: prompt.id.clone(),
                text: prompt.text.clone(),
                turn: r.turn,
            });
        }
        r.text = text.clone();
        r.stage = Stage::Generating { llm: false };
        let pieces = r.chunk(&text, true);
        r.llm_done = true;
        for p in pieces {
            self.synthesize(&mut r, p);
        }
        self.reply = Some(r);
        self.with_current(Self::maybe_finish);
    }

    /// A new reply numbered as the next turn.
    fn new_reply(&mut self, kind: ReplyKind, silence_ms: u32) -> Reply {
        self.turn += 1;
        let id = self.next_id();
        let deadline = match kind {
            ReplyKind::Prompt { .. } => None,
            _ => self.cfg.start_deadline.map(|d| self.now + d),
        };
        Reply::new(
            id,
            self.turn,
            kind,
            self.now,
            silence_ms,
            deadline,
            self.cfg.min_clause_words,
        )
    }

    /// Run `f` on the reply `id` if it is the current one; `f` gives the
    /// reply back unless it is over.
    fn with_reply(&mut self, id: u64, f: impl FnOnce(&mut Self, Reply) -> Option<Reply>) {
        if self.reply.as_ref().is_some_and(|r| r.id == id) {
            self.with_current(f);
        }
    }

    fn with_current(&mut self, f: impl FnOnce(&mut Self, Reply) -> Option<Reply>) {
        if let Some(r) = self.reply.take() {
            self.reply = f(self, r);
        }
    }
}
