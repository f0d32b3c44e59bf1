//! Turns: VAD windows into [`TurnTaking`], its events (the work they start
//! before the end of turn is in `early.rs`), Smart Turn's answers, the end
//! of turn, a turn that goes on after an early end, and transcripts coming
//! back.

use super::reply::{Cause, ReplyKind, Stage};
use super::{Action, Conversation, Count, EndedEarly, Failure, Heard, PREROLL_MS, Speculative};
use crate::PIPELINE_RATE;
use crate::events::{Event, State};
use crate::pipeline::turn_taking::{EndReason, TurnEvent};

impl Conversation {
    pub(super) fn on_window(&mut self, pcm: Vec<f32>, prob: f32) {
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
        self.transcribe_so_far();
    }

    pub(super) fn on_turn_event(&mut self, ev: TurnEvent) {
        match ev {
            TurnEvent::SpeechStarted => {
                self.utterance = self.preroll.iter().copied().collect();
                self.drop_so_far();
                self.so_far_upto = 0;
                self.drop_speculation();
                self.continue_turn();
                if self.replying() {
                    // Stop talking at once, as a person does, but keep the
                    // rest: it is a barge-in only if the speech lasts.
                    self.hold(true);
                }
                self.emit(Event::state(State::UserSpeaking));
            }
            TurnEvent::SustainedSpeech => {
                if self.cut_reply(Cause::User) {
                    self.out.push(Action::Count(Count::BargeIn));
                }
                self.hold(false);
            }
            TurnEvent::Lull => self.on_lull(),
            TurnEvent::Paused if self.held => self.resume_after_burst(),
            TurnEvent::Paused => {
                // The cores go to Smart Turn and the turn's transcript now.
                self.drop_so_far();
                if self.spec.is_some() {
                    // The lull's transcript: only silence came after it.
                    self.after_lull();
                    return;
                }
                if self.cfg.turn.smart_turn {
                    // Smart Turn first, the transcript after it: on two
                    // cores the two at once slow each other down, and the
                    // prediction, which is short, decides whether the turn
                    // ends now.
                    self.predict(self.turns.pause_id());
                } else {
                    self.start_speculation();
                }
            }
            TurnEvent::Resumed => {
                self.drop_speculation();
                self.cancel_prediction();
            }
            TurnEvent::EndOfTurn { silence_ms, reason } => self.end_turn(silence_ms, reason),
        }
    }

    /// Pause the playout (`true`) or let it go on; see [`Action::Hold`].
    pub(super) fn hold(&mut self, on: bool) {
        if self.held != on {
            self.held = on;
            self.out.push(Action::Hold(on));
        }
    }

    /// The speech that held the reply paused before it lasted
    /// `turn.barge_in_ms`: a cough, a noise, a "mm". It is no turn; the
    /// reply goes on from where it stopped.
    fn resume_after_burst(&mut self) {
        tracing::info!(
            speech_ms = self.turns.spoken_ms(),
            "speech over the reply was too short to interrupt it: the reply goes on"
        );
        self.turns.abandon();
        self.utterance.clear();
        self.hold(false);
        self.out.push(Action::Count(Count::HoldResumed));
        let state = if self.playout.idle {
            State::Thinking
        } else {
            State::Speaking
        };
        self.emit(Event::state(state));
    }

    /// The user speaks again soon after Smart Turn ended the turn ("Thank
    /// you, | that is all for today"): if the pause so far is shorter than
    /// the silence that ends a turn without Smart Turn, and nothing of the
    /// reply has been heard, the turn was not over. Its reply is dropped
    /// (not a barge-in: nobody heard it), the new speech joins its audio,
    /// and the turn keeps its number, so its transcript replaces the early
    /// one and the history holds one user message.
    fn continue_turn(&mut self) {
        let Some(e) = self.ended_early.take() else {
            return;
        };
        let pause = self.now.saturating_duration_since(e.paused_at);
        if pause.as_millis() > u128::from(self.cfg.turn.max_silence_ms) {
            return;
        }
        // Only the early turn's own reply, and only while none of it is heard.
        let Some(r) = self
            .reply
            .take_if(|r| r.turn == e.turn && r.queued == 0 && matches!(r.kind, ReplyKind::Speech))
        else {
            return;
        };
        tracing::info!(
            turn = e.turn,
            pause_ms = pause.as_millis() as u64,
            "the user went on: the turn continues"
        );
        self.cancel_work(&r);
        self.out.push(Action::Count(Count::TurnContinued));
        // The new speech's preroll reaches back before it began; keep only
        // what came after the early turn's own audio.
        let gap = (self.now.saturating_duration_since(e.ended_at).as_millis() as usize)
            .saturating_mul(PIPELINE_RATE as usize / 1000);
        let gap_audio = self.utterance.len().min(gap);
        let since = self.utterance.len() - gap_audio;
        let mut audio = e.audio;
        audio.extend_from_slice(&self.utterance[since..]);
        self.utterance = audio;
        self.continued_turn = Some(e.turn);
    }

    pub(super) fn cancel_prediction(&mut self) {
        if self.predicting.take().is_some() {
            self.out.push(Action::CancelTurnPrediction);
        }
    }

    /// Smart Turn answered for `pause`.
    pub(super) fn on_prediction(&mut self, pause: u64, complete: bool) {
        if self.predicting != Some(pause) {
            return; // stale: the user spoke again since
        }
        self.predicting = None;
        if let Some(ev) = self.turns.on_prediction(pause, complete) {
            // The turn ends; its whole audio is decoded now.
            self.on_turn_event(ev);
        } else if self.spec.is_some() {
            // The lull's transcript, in or on its way: answer on it.
            self.start_spec_reply();
        } else {
            // Not over yet, or not sure: decode the turn so far, so the
            // transcript is ready if the silence goes on.
            self.start_speculation();
        }
    }

    pub(super) fn end_turn(&mut self, silence_ms: u32, reason: EndReason) {
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
        // Its words would only delay the whole turn's transcript.
        self.drop_so_far();
        if self.reply.is_some() || self.playing.is_some() {
            // The user spoke again while the assistant was replying, without
            // reaching the barge-in threshold: treat the new turn as one.
            if self.cut_reply(Cause::User) {
                self.out.push(Action::Count(Count::BargeIn));
            }
        }
        self.end_playing();
        // A speculative transcript is valid if only silence came after it.
        let spec = self.spec.take();
        let mut r = self.new_reply(ReplyKind::Speech, silence_ms);
        let early = matches!(reason, EndReason::Predicted | EndReason::Transcript);
        self.ended_early = early.then(|| EndedEarly {
            turn: r.turn,
            audio: audio.clone(),
            paused_at: self
                .now
                .checked_sub(std::time::Duration::from_millis(u64::from(silence_ms)))
                .unwrap_or(self.now),
            ended_at: self.now,
        });
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

    pub(super) fn on_transcript(&mut self, job: u64, result: Result<Heard, Failure>) {
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
        if self.so_far == Some(job) {
            self.so_far = None;
            self.on_heard_so_far(result);
            return;
        }
        if let Some(s) = self.spec.as_mut()
            && s.job == job
        {
            let finished = result
                .as_ref()
                .is_ok_and(|h| crate::text::reads_finished(h.text.trim()));
            s.result = Some(result);
            if std::mem::take(&mut s.smart_turn_waits) {
                // The pause came while it was decoded: Smart Turn's turn now.
                self.predict(self.turns.pause_id());
            }
            self.start_spec_reply();
            // A transcript that reads as a whole sentence ends the turn on
            // a shorter silence than one Smart Turn alone left open.
            if let Some(ev) = self.turns.on_transcript(finished) {
                self.on_turn_event(ev);
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
}
