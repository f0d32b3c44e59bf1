//! One reply of the conversation, from the end of a turn (or a typed
//! message, or a prompt) to its last piece queued: transcript, LLM tokens,
//! clauses, synthesis, the start deadline, the busy line and barge-in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Action, Conversation, Count, Heard, Playing, SpecReply};
use crate::events::{Event, Source, State, Timings};
use crate::kb::support::{DONT_KNOW, Vocabulary};
use crate::pipeline::llm::{ChatMessage, Role};
use crate::prompt::{DropReason, Prompt, PromptOutcome};
use crate::text::{SentenceChunker, repeat_at};

#[derive(Debug)]
pub(super) enum ReplyKind {
    /// An answer to the user's speech.
    Speech,
    /// An answer to a typed message.
    Text,
    /// A proactive prompt: its text is the reply.
    Prompt { prompt: Prompt, ticket: u64 },
}

#[derive(Debug)]
pub(super) enum Stage {
    /// Waiting for ASR job `job`; `audio` is the whole turn when `job` is
    /// the speculative decode (decoded again if that one fails).
    Transcribing { job: u64, audio: Vec<f32> },
    /// Text is coming (`llm`: from a running LLM generation) and being spoken.
    Generating { llm: bool },
}

/// Who stopped a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// The user spoke over it (a barge-in).
    User,
    /// The user typed a new message.
    Typed,
    /// An `interrupt` prompt takes its place.
    Prompt,
}

#[derive(Debug)]
pub(super) struct Reply {
    pub(super) id: u64,
    pub(super) turn: u64,
    pub(super) kind: ReplyKind,
    pub(super) stage: Stage,
    /// When the turn ended (or the text came): the origin of its timings.
    pub(super) ended_at: Instant,
    pub(super) silence_ms: u32,
    /// The transcript and first LLM token must be here by then.
    pub(super) deadline: Option<Instant>,
    /// The deadline passed while nobody else waited (logged once).
    pub(super) late: bool,
    pub(super) user: Option<String>,
    pub(super) chunker: SentenceChunker,
    /// The reply text so far.
    pub(super) text: String,
    /// Pieces sent to synthesis, with when.
    pub(super) asked: Vec<(String, Instant)>,
    /// Pieces whose synthesis came back (in order).
    pub(super) answered: usize,
    /// Pieces queued for playout: text and 48 kHz samples.
    pub(super) pieces: Vec<(String, usize)>,
    /// Pieces queued for playout.
    pub(super) queued: usize,
    /// Words sent to synthesis.
    pub(super) words: usize,
    /// The spoken-length cap was reached, or the reply looped: the LLM is stopped.
    pub(super) capped: bool,
    /// The fallback line replaced an unspeakable reply.
    pub(super) fallback: bool,
    pub(super) llm_done: bool,
    pub(super) asr_done: Duration,
    pub(super) asr_decode: Duration,
    pub(super) llm_start: Option<Instant>,
    pub(super) first_token: Option<Duration>,
    pub(super) first_piece: Option<Duration>,
    pub(super) tts_first: Option<Duration>,
    pub(super) first_audio: Option<Duration>,
    /// The knowledge-base chunks the LLM was given, and how long finding
    /// them took.
    pub(super) grounding: Option<Grounding>,
}

/// What the knowledge base gave one reply (see [`Input::Retrieved`]).
#[derive(Debug, Clone, Default)]
pub(super) struct Grounding {
    pub(super) sources: Vec<Source>,
    pub(super) kb: Duration,
    /// What the reply's numbers and names must come from (with notes).
    pub(super) vocabulary: Option<Arc<Vocabulary>>,
}

/// How often a late reply's deadline is looked at again.
pub(super) const DEADLINE_RECHECK: Duration = Duration::from_millis(250);

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Reply {
    pub fn new(
        id: u64,
        turn: u64,
        kind: ReplyKind,
        now: Instant,
        silence_ms: u32,
        deadline: Option<Instant>,
        chunking: crate::text::ChunkRules,
    ) -> Self {
        Self {
            id,
            turn,
            kind,
            stage: Stage::Generating { llm: false },
            ended_at: now,
            silence_ms,
            deadline,
            late: false,
            user: None,
            chunker: SentenceChunker::new(chunking),
            text: String::new(),
            asked: Vec::new(),
            answered: 0,
            pieces: Vec::new(),
            queued: 0,
            words: 0,
            capped: false,
            fallback: false,
            llm_done: false,
            asr_done: Duration::ZERO,
            asr_decode: Duration::ZERO,
            llm_start: None,
            first_token: None,
            first_piece: None,
            tts_first: None,
            first_audio: None,
            grounding: None,
        }
    }

    /// When the busy line takes over if the reply has not started.
    pub fn start_deadline(&self) -> Option<Instant> {
        self.first_token
            .is_none()
            .then_some(self.deadline)
            .flatten()
    }

    /// Clauses ready to speak from `text` (and the rest, if `last`).
    /// `check`: the reply is checked against its notes (`kb.check_replies`).
    pub fn chunk(&mut self, text: &str, last: bool, check: bool) -> Vec<String> {
        if check
            && self
                .grounding
                .as_ref()
                .is_some_and(|g| g.vocabulary.is_some())
        {
            // A first piece cut early would be spoken before the check sees
            // the rest of its sentence ("The bakery's phone number | is
            // 123-…"): a checked reply is spoken in whole clauses.
            self.chunker.no_early_first_piece();
        }
        let mut pieces = self.chunker.push(text);
        if last {
            pieces.extend(self.chunker.finish());
        }
        pieces
    }

    /// The chunks this reply was grounded on (empty without a knowledge base).
    pub(super) fn sources(&self) -> Vec<Source> {
        self.grounding
            .as_ref()
            .map(|g| g.sources.clone())
            .unwrap_or_default()
    }

    fn timings(&self) -> Timings {
        Timings {
            turn: self.turn,
            endpoint_ms: self.silence_ms,
            asr_ms: ms(self.asr_done),
            asr_decode_ms: ms(self.asr_decode),
            kb_ms: self.grounding.as_ref().map(|g| ms(g.kb)),
            llm_first_token_ms: self.first_token.map(ms),
            first_sentence_ms: self.first_piece.map(ms),
            tts_first_audio_ms: self.tts_first.map(ms),
            total_ms: self.first_audio.map(|d| u64::from(self.silence_ms) + ms(d)),
        }
    }
}

impl Conversation {
    /// The transcript of a speech turn is here.
    pub(super) fn on_heard(&mut self, mut r: Reply, heard: Heard) -> Option<Reply> {
        r.asr_done = self.now.saturating_duration_since(r.ended_at);
        r.asr_decode = heard.decode;
        let user = heard.text.trim().to_string();
        if user.is_empty() {
            // Nothing was understood: no reply.
            self.emit(Event::state(State::Listening));
            return None;
        }
        self.emit(Event::Transcript {
            turn: r.turn,
            text: user.clone(),
            is_final: true,
            typed: false,
        });
        Some(self.start_llm(r, user))
    }

    /// The turn ended on the speculative transcript: the reply started on it
    /// becomes this turn's, with the tokens it already has.
    pub(super) fn adopt_speculation(
        &mut self,
        mut r: Reply,
        heard: Heard,
        sr: SpecReply,
    ) -> Option<Reply> {
        let user = heard.text.trim().to_string();
        r.asr_decode = heard.decode;
        self.emit(Event::Transcript {
            turn: r.turn,
            text: user.clone(),
            is_final: true,
            typed: false,
        });
        tracing::info!(
            turn = r.turn,
            tokens = sr.tokens.len(),
            "speculative reply adopted"
        );
        r.id = sr.id;
        r.user = Some(user);
        r.stage = Stage::Generating { llm: !sr.done };
        r.llm_start = Some(sr.started);
        r.first_token = sr.first_token;
        r.grounding = sr.grounding;
        let mut r = Some(r);
        for t in sr.tokens {
            r = match r {
                Some(r) => self.on_token(r, t),
                None => return None,
            };
        }
        match r {
            Some(r) if sr.done => self.on_llm_done(r),
            r => r,
        }
    }

    pub(super) fn start_llm(&mut self, mut r: Reply, user: String) -> Reply {
        let mut messages = self.history.clone();
        messages.push(ChatMessage::new(Role::User, user.clone()));
        r.user = Some(user);
        r.stage = Stage::Generating { llm: true };
        r.llm_start = Some(self.now);
        self.out.push(Action::StartLlm {
            reply: r.id,
            messages,
        });
        r
    }

    pub(super) fn on_token(&mut self, mut r: Reply, token: String) -> Option<Reply> {
        if r.capped {
            return Some(r); // the LLM is being stopped
        }
        let since = r.llm_start.map(|t| self.now.saturating_duration_since(t));
        if r.first_token.is_none() {
            r.first_token = Some(since.unwrap_or_default());
        }
        r.text.push_str(&token);
        self.emit(Event::ReplyDelta {
            turn: r.turn,
            text: token.clone(),
        });
        let pieces = r.chunk(&token, false, self.cfg.check_replies);
        self.speak_pieces(&mut r, pieces);
        if r.capped {
            return self.maybe_finish(r);
        }
        Some(r)
    }

    pub(super) fn on_llm_done(&mut self, mut r: Reply) -> Option<Reply> {
        if !r.capped {
            let pieces = r.chunk("", true, self.cfg.check_replies);
            self.speak_pieces(&mut r, pieces);
        }
        r.llm_done = true;
        r.stage = Stage::Generating { llm: false };
        self.maybe_finish(r)
    }

    /// Synthesize the LLM's pieces up to the spoken-length cap; past it the
    /// LLM is stopped and the reply ends with the last whole piece. A piece
    /// that repeats an earlier one of the same reply ends it the same way:
    /// the model is looping, and the penalty in the sampler did not stop it.
    fn speak_pieces(&mut self, r: &mut Reply, pieces: Vec<String>) {
        let cap = self.cfg.max_spoken_words;
        for piece in pieces {
            if let Some(word) = r
                .grounding
                .as_ref()
                .filter(|_| self.cfg.check_replies)
                .and_then(|g| g.vocabulary.as_ref())
                .and_then(|v| v.unsupported(&piece))
            {
                // The notes do not say it: an invented phone number, year
                // or name. Never spoken; the reply ends with what was
                // said so far, or is "I don't know" if nothing was.
                tracing::info!(turn = r.turn, piece = %piece, word = %word,
                    "reply states what its notes do not; ending it");
                self.out.push(Action::Count(Count::Unsupported));
                if r.asked.is_empty() {
                    r.words += DONT_KNOW.split_whitespace().count();
                    self.synthesize(r, DONT_KNOW.to_string());
                }
                return self.stop_early(r);
            }
            let words = piece.split_whitespace().count();
            if cap > 0 && !r.asked.is_empty() && r.words + words > cap {
                tracing::info!(
                    turn = r.turn,
                    words = r.words,
                    cap,
                    "reply reached the spoken-length cap"
                );
                return self.stop_early(r);
            }
            if let Some(cut) = repeat_at(r.asked.iter().map(|(t, _)| t.as_str()), &piece) {
                let kept = piece[..cut].trim();
                tracing::info!(turn = r.turn, piece = %piece, "reply repeats itself; ending it");
                if !kept.is_empty() {
                    r.words += kept.split_whitespace().count();
                    self.synthesize(r, kept.to_string());
                }
                return self.stop_early(r);
            }
            r.words += words;
            self.synthesize(r, piece);
        }
    }

    /// End `r` with what it has asked to speak so far: stop the LLM.
    fn stop_early(&mut self, r: &mut Reply) {
        if matches!(r.stage, Stage::Generating { llm: true }) {
            self.out.push(Action::CancelLlm { reply: r.id });
        }
        r.stage = Stage::Generating { llm: false };
        r.capped = true;
        r.llm_done = true;
        r.text = r
            .asked
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>()
            .join(" ");
    }

    pub(super) fn synthesize(&mut self, r: &mut Reply, text: String) {
        if r.first_piece.is_none() {
            r.first_piece = r.llm_start.map(|t| self.now.saturating_duration_since(t));
        }
        let piece = r.asked.len();
        r.asked.push((text.clone(), self.now));
        self.out.push(Action::Synthesize {
            reply: r.id,
            piece,
            text,
        });
    }

    pub(super) fn on_synthesized(
        &mut self,
        mut r: Reply,
        piece: usize,
        pcm: Option<Vec<f32>>,
    ) -> Option<Reply> {
        if piece != r.answered || piece >= r.asked.len() {
            tracing::warn!(
                piece,
                expected = r.answered,
                "synthesized piece out of order; ignored"
            );
            return Some(r);
        }
        r.answered += 1;
        match pcm {
            Some(pcm) if !pcm.is_empty() => {
                let (text, asked_at) = r.asked[piece].clone();
                r.pieces.push((text, pcm.len()));
                r.queued += 1;
                self.out.push(Action::Play { reply: r.id, pcm });
                self.playout.idle = false;
                if r.first_audio.is_none() {
                    r.first_audio = Some(self.now.saturating_duration_since(r.ended_at));
                    r.tts_first = Some(self.now.saturating_duration_since(asked_at));
                    self.emit(Event::state(State::Speaking));
                }
            }
            _ => tracing::warn!(turn = r.turn, piece, "TTS failed for a piece; skipping it"),
        }
        self.maybe_finish(r)
    }

    /// Finish `r` if its text is complete and every piece came back.
    pub(super) fn maybe_finish(&mut self, r: Reply) -> Option<Reply> {
        if !r.llm_done || r.answered < r.asked.len() {
            return Some(r);
        }
        let text = r.text.trim().to_string();
        match &r.kind {
            ReplyKind::Prompt { prompt, ticket } => {
                if r.queued == 0 {
                    self.prompts.forget(&prompt.id);
                    self.answer(*ticket, PromptOutcome::Dropped(DropReason::TtsFailed));
                    self.emit(Event::Error {
                        code: None,
                        turn: Some(r.turn),
                        message: format!("could not synthesize prompt {}", prompt.id),
                    });
                    self.emit(Event::state(State::Listening));
                    return None;
                }
                self.emit(Event::Reply {
                    turn: r.turn,
                    text: text.clone(),
                    interrupted: false,
                    prompt_id: Some(prompt.id.clone()),
                    sources: Vec::new(),
                });
            }
            ReplyKind::Speech | ReplyKind::Text
                if r.queued == 0 && !r.fallback && !self.cfg.fallback_line.is_empty() =>
            {
                // Nothing speakable came: say the fallback line rather than
                // leave the user in silence.
                tracing::info!(turn = r.turn, reply = %text, "no speakable reply; saying the fallback line");
                let mut r = r;
                r.fallback = true;
                r.text = self.cfg.fallback_line.clone();
                let line = r.text.clone();
                self.synthesize(&mut r, line);
                return Some(r);
            }
            ReplyKind::Speech | ReplyKind::Text => {
                self.emit(Event::Reply {
                    turn: r.turn,
                    text: text.clone(),
                    interrupted: false,
                    prompt_id: None,
                    sources: r.sources(),
                });
                self.emit(Event::Timings(r.timings()));
                if let Some(user) = &r.user {
                    self.history
                        .push(ChatMessage::new(Role::User, user.clone()));
                }
                if r.queued == 0 {
                    // Nothing to hear (an empty or unspeakable reply): the
                    // playout will never say `listening`, so say it here.
                    self.emit(Event::state(State::Listening));
                }
            }
        }
        self.history.push(ChatMessage::new(Role::Assistant, text));
        self.warm_llm();
        let ticket = match r.kind {
            ReplyKind::Prompt { ticket, .. } => Some(ticket),
            _ => None,
        };
        self.playing = Some(Playing {
            id: r.id,
            turn: r.turn,
            pieces: r.pieces,
            history_idx: self.history.len() - 1,
            ticket,
            sources: r.grounding.map(|g| g.sources).unwrap_or_default(),
        });
        // Its audio may all have played already (a last piece that failed).
        self.on_played();
        None
    }
}
