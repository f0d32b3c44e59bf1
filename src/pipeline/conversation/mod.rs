//! The conversation of one session as a sans-IO state machine.
//!
//! [`Conversation::handle`] takes one [`Input`] (a VAD window, a Smart Turn
//! answer, a transcript, an LLM token, a synthesized piece, playout
//! progress, a prompt, typed text or a clock tick) and the time, and
//! returns the [`Action`]s the caller must carry out (start ASR, start or
//! cancel the LLM, synthesize, play, flush, emit an event, answer a prompt).
//! It never blocks, spawns, reads a clock or touches a model: the tokio
//! shell in `pipeline::speech` does that, `voxloop converse` drives the same
//! shell from files, and the tests in `tests/` drive it with scripted
//! inputs and no models at all.
//!
//! What it decides:
//! - turns: [`TurnTaking`] on VAD windows and Smart Turn answers, with the
//!   speculative transcript started at the first pause and used at the end
//!   of turn when only silence followed, and, while the user speaks, the
//!   turn so far transcribed now and then so the LLM prefills its words;
//! - replies: the transcript goes into the history, LLM tokens are chunked
//!   into clauses and synthesized in order, audio is queued as it comes;
//!   a reply that has not started `start_deadline` after the end of its
//!   turn becomes the busy line;
//! - barge-in: user speech over the assistant holds its audio at once; if
//!   the speech lasts `barge_in_ms` the audio is flushed, the LLM and TTS
//!   are cancelled and the history keeps what was heard, and if it stops
//!   sooner (a cough) the reply goes on where it paused;
//! - prompts: a [`PromptQueue`] spoken at [`prompts::moment`], requeued when
//!   cut off before any of it was heard.

mod early;
mod io;
mod reply;
mod stop;
#[cfg(test)]
mod tests;
mod turn;

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::llm::{ChatMessage, Role};
use super::prompts::{self, Activity, Moment, PromptQueue};
use super::turn_taking::TurnTaking;
use crate::events::{Event, Source, State};
use crate::prompt::{DropReason, PromptOutcome};

pub use io::{Action, Count, Failure, Heard, Input, Playout, Settings};
use reply::{Cause, Reply, ReplyKind, Stage};
pub use stop::heard_text;

/// Audio kept from before the turn started (VAD needs a few windows to be sure).
const PREROLL_MS: usize = 400;
/// How often queued prompts, and the playout while audio plays, are looked
/// at when nothing else happens. The playout matters even with no prompt
/// queued: the end of playback starts the quiet a later prompt waits for,
/// and a client that sends no audio (text only, no microphone) gives no
/// other input to notice it by.
const TICK: Duration = Duration::from_millis(50);

/// A turn Smart Turn ended before the silence fallback would have.
#[derive(Debug)]
struct EndedEarly {
    turn: u64,
    audio: Vec<f32>,
    /// When the user's pause began, and when the turn was ended.
    paused_at: Instant,
    ended_at: Instant,
}

/// A reply whose text is complete but whose audio may still be playing.
#[derive(Debug)]
struct Playing {
    id: u64,
    turn: u64,
    pieces: Vec<(String, usize)>,
    /// Index of its assistant message in the history.
    history_idx: usize,
    /// The prompt it speaks, answered `Spoken` once its last frame played.
    ticket: Option<u64>,
    /// Its knowledge-base sources, repeated if it is cut off.
    sources: Vec<Source>,
}

/// The speculative transcript started at the last pause, and the reply
/// started on it while Smart Turn and the silence decide.
#[derive(Debug)]
struct Speculative {
    job: u64,
    result: Option<Result<Heard, Failure>>,
    reply: Option<SpecReply>,
    /// Started at a lull while a transcript of the turn so far still ran:
    /// it waits for that job to stop, and Smart Turn need not wait for it.
    queued: bool,
    /// The pause came while it was decoded, and Smart Turn is asked about
    /// that pause once it is in (see `early::Conversation::after_lull`).
    /// Smart Turn then hears all the silence so far, as it would asked later.
    smart_turn_waits: bool,
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
    grounding: Option<reply::Grounding>,
}

/// The conversation state of one session (see the module docs).
pub struct Conversation {
    cfg: Settings,
    turns: TurnTaking,
    preroll: std::collections::VecDeque<f32>,
    utterance: Vec<f32>,
    spec: Option<Speculative>,
    /// The transcript of the turn so far taken while the user speaks (its
    /// ASR job), and how much of the utterance it was given: its words
    /// prefill the LLM before the turn ends (`turn.prefill_every_ms`).
    so_far: Option<u64>,
    so_far_upto: usize,
    /// The pause whose Smart Turn answer is awaited; its speculative
    /// transcript starts on a "not yet".
    predicting: Option<u64>,
    reply: Option<Reply>,
    playing: Option<Playing>,
    playout: Playout,
    /// The playout is held: the user started speaking over the assistant.
    held: bool,
    /// Other sessions' work is queued in the engines.
    others_waiting: bool,
    /// Decodes of turns whose reply was cut: (job, turn), reported when done.
    orphans: Vec<(u64, u64)>,
    /// The last turn Smart Turn ended early, while the user might still
    /// go on (see `turn::Conversation::continue_turn`).
    ended_early: Option<EndedEarly>,
    /// The next reply answers a continued turn and keeps its number.
    continued_turn: Option<u64>,
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
            history: history.clone(),
            turns: TurnTaking::new(cfg.turn.clone()),
            prompts: PromptQueue::new(cfg.max_queued_prompts),
            preroll: std::collections::VecDeque::new(),
            utterance: Vec::new(),
            spec: None,
            so_far: None,
            so_far_upto: 0,
            predicting: None,
            reply: None,
            playing: None,
            playout: Playout {
                idle: true,
                ..Playout::default()
            },
            held: false,
            others_waiting: false,
            orphans: Vec::new(),
            ended_early: None,
            continued_turn: None,
            turn: 0,
            next_id: 1,
            quiet_since: now,
            start: (now, wall),
            now,
            out: vec![
                Action::Emit(Event::state(State::Listening)),
                // The system prompt, ready before the first question.
                Action::WarmLlm {
                    messages: history,
                    so_far: String::new(),
                },
            ],
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
        let look = (!self.prompts.is_empty() || !self.playout.idle).then(|| self.now + TICK);
        match (deadline, look) {
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
            Input::TurnPredicted { pause, complete } => self.on_prediction(pause, complete),
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
            Input::Retrieved {
                reply,
                sources,
                kb,
                vocabulary,
            } => {
                let g = Some(reply::Grounding {
                    sources,
                    kb,
                    vocabulary,
                });
                if let Some(sr) = self.spec_reply(reply) {
                    sr.grounding = g;
                } else if let Some(r) = self.reply.as_mut().filter(|r| r.id == reply) {
                    r.grounding = g;
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
            Input::Playout(p) => {
                self.playout = p;
                self.on_played();
            }
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
                // Heard only if some of it played: audio queued but not yet
                // played is lost with the session, so the prompt goes back.
                let outcome = if self.played_of(r.id) > 0 {
                    PromptOutcome::Spoken { turn: r.turn }
                } else {
                    PromptOutcome::Dropped(DropReason::SessionEnded)
                };
                self.answer(ticket, outcome);
            }
        }
        if let Some(p) = self.playing.take()
            && let Some(ticket) = p.ticket
        {
            // Ended mid-prompt: heard if any of it played.
            let outcome = if self.played_of(p.id) > 0 {
                PromptOutcome::Spoken { turn: p.turn }
            } else {
                PromptOutcome::Dropped(DropReason::SessionEnded)
            };
            self.answer(ticket, outcome);
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

    /// Samples of reply `id` the user has heard (48 kHz).
    fn played_of(&self, id: u64) -> usize {
        if self.playout.reply == id {
            self.playout.played
        } else {
            0
        }
    }

    /// A prompt counts as spoken (and its message is acked) only once its
    /// last frame has played: acked earlier, a crash mid-sentence would lose
    /// it. `playout.idle` is cleared whenever audio is queued, so an idle
    /// report for this reply means all of its audio was heard.
    fn on_played(&mut self) {
        let Some(p) = &mut self.playing else {
            return;
        };
        if self.playout.idle
            && self.playout.reply == p.id
            && let Some(ticket) = p.ticket.take()
        {
            let turn = p.turn;
            self.answer(ticket, PromptOutcome::Spoken { turn });
        }
    }

    /// Forget the reply that finished playing; a prompt in it was heard.
    fn end_playing(&mut self) {
        if let Some(p) = self.playing.take()
            && let Some(ticket) = p.ticket
        {
            self.answer(ticket, PromptOutcome::Spoken { turn: p.turn });
        }
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
        self.end_playing();
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
        self.end_playing();
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
        let pieces = r.chunk(&text, true, false);
        r.llm_done = true;
        for p in pieces {
            self.synthesize(&mut r, p);
        }
        self.reply = Some(r);
        self.with_current(Self::maybe_finish);
    }

    /// A new reply numbered as the next turn.
    fn new_reply(&mut self, kind: ReplyKind, silence_ms: u32) -> Reply {
        // Whatever held the last reply, this one must be heard.
        self.hold(false);
        match self.continued_turn.take() {
            Some(t) if matches!(kind, ReplyKind::Speech) => self.turn = t,
            _ => self.turn += 1,
        }
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
            self.cfg.chunking,
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
