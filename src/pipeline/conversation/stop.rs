//! How a reply stops early: the busy line (a full queue, or the start
//! deadline while the server is overloaded), a failure, and a cut (barge-in,
//! typed text, an `interrupt` prompt) that flushes the playout and keeps in
//! the history what the user heard.

use super::reply::{Cause, DEADLINE_RECHECK, Reply, ReplyKind, Stage};
use super::{Action, Conversation, Count, Failure};
use crate::events::{BusyReason, Event, State};
use crate::pipeline::llm::{ChatMessage, Role};
use crate::prompt::PromptOutcome;

impl Conversation {
    /// The reply could not start: the busy line if a queue refused it.
    pub(super) fn fail_start(&mut self, r: Reply, failure: Failure) -> Option<Reply> {
        match failure {
            Failure::Busy => self.busy_line(r, BusyReason::QueueFull),
            Failure::Failed(message) => {
                tracing::warn!(turn = r.turn, error = %message, "reply failed");
                self.cancel_work(&r);
                self.emit(Event::Error {
                    code: None,
                    turn: Some(r.turn),
                    message,
                });
                self.emit(Event::state(State::Listening));
                None
            }
        }
    }

    pub(super) fn busy_line(&mut self, r: Reply, reason: BusyReason) -> Option<Reply> {
        tracing::info!(turn = r.turn, reason = reason.as_str(), "busy line");
        self.cancel_work(&r);
        self.out.push(Action::Count(Count::BusyLine));
        self.out.push(Action::PlayBusyLine { reply: r.id });
        self.playout.idle = false;
        self.emit(Event::Busy {
            turn: r.turn,
            text: self.cfg.busy_line.clone(),
            reason,
        });
        self.emit(Event::state(State::Speaking));
        None
    }

    /// Queues bound how much work waits, not how long: a reply that has not
    /// started by its deadline becomes the busy line instead of silence —
    /// when other sessions' work is queued, i.e. when the server is
    /// overloaded. A lone turn on a slow or shared machine is answered; the
    /// deadline is looked at again every [`DEADLINE_RECHECK`].
    pub(super) fn check_deadline(&mut self) {
        let now = self.now;
        let due = self
            .reply
            .as_ref()
            .and_then(Reply::start_deadline)
            .is_some_and(|d| now >= d);
        if !due {
            return;
        }
        if self.others_waiting {
            self.with_current(|c, r| c.busy_line(r, BusyReason::Deadline));
        } else if let Some(r) = self.reply.as_mut() {
            if !r.late {
                tracing::info!(
                    turn = r.turn,
                    "start deadline passed, but no other work is queued: still answering"
                );
                r.late = true;
            }
            r.deadline = Some(now + DEADLINE_RECHECK);
        }
    }

    /// Stop the jobs `r` still has running or queued.
    pub(super) fn cancel_work(&mut self, r: &Reply) {
        match r.stage {
            Stage::Transcribing { job, .. } => self.out.push(Action::CancelAsr { job }),
            Stage::Generating { llm: true } => self.out.push(Action::CancelLlm { reply: r.id }),
            Stage::Generating { llm: false } => {}
        }
        if r.answered < r.asked.len() {
            self.out.push(Action::CancelSynthesis { reply: r.id });
        }
    }

    /// Stop the assistant's reply at once. Returns whether there was one.
    pub(super) fn cut_reply(&mut self, cause: Cause) -> bool {
        if !self.replying() {
            return false;
        }
        self.out.push(Action::Flush);
        // A flush ends a hold too: the next reply must play.
        self.held = false;
        let (turn, heard, sources) = if let Some(mut r) = self.reply.take() {
            // Still working: stop the LLM and TTS. A transcription in progress
            // goes on: what the user said is still reported.
            if let Stage::Transcribing { job, .. } = r.stage {
                self.orphans.push((job, r.turn));
                r.stage = Stage::Generating { llm: false };
            }
            self.cancel_work(&r);
            let played = self.played_of(r.id);
            let heard = heard_text(&r.pieces, played);
            let sources = r.sources();
            match r.kind {
                ReplyKind::Prompt { prompt, ticket } if played == 0 => {
                    // Cut off before any of it was heard (perhaps queued,
                    // but flushed unplayed): it goes back in line.
                    tracing::info!(prompt = %prompt.id, "prompt cut off before it was heard; queued again");
                    self.prompts.requeue(prompt, ticket);
                }
                ReplyKind::Prompt { ticket, .. } => {
                    self.answer(ticket, PromptOutcome::Spoken { turn: r.turn });
                    self.history
                        .push(ChatMessage::new(Role::Assistant, cut_off(&heard)));
                }
                ReplyKind::Speech | ReplyKind::Text => {
                    // History keeps what the user actually heard, marked as cut off.
                    if let Some(user) = r.user {
                        self.history.push(ChatMessage::new(Role::User, user));
                        self.history
                            .push(ChatMessage::new(Role::Assistant, cut_off(&heard)));
                    }
                }
            }
            (r.turn, heard, sources)
        } else if let Some(p) = self.playing.take() {
            // Text complete, audio still playing: a prompt in it was heard in part.
            if let Some(ticket) = p.ticket {
                self.answer(ticket, PromptOutcome::Spoken { turn: p.turn });
            }
            let heard = heard_text(&p.pieces, self.played_of(p.id));
            if let Some(m) = self.history.get_mut(p.history_idx) {
                m.content = cut_off(&heard);
            }
            (p.turn, heard, p.sources)
        } else {
            return false;
        };
        self.playout.idle = true;
        tracing::info!(turn, ?cause, "reply cut off");
        if cause == Cause::User {
            self.emit(Event::BargeIn { turn });
        }
        self.emit(Event::Reply {
            turn,
            text: heard,
            interrupted: true,
            prompt_id: None,
            sources,
        });
        self.warm_llm();
        true
    }

    /// The history changed and nothing generates: let the LLM prefill it.
    pub(super) fn warm_llm(&mut self) {
        self.out.push(Action::WarmLlm {
            messages: self.history.clone(),
            so_far: String::new(),
        });
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
pub fn heard_text(pieces: &[(String, usize)], played: usize) -> String {
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
