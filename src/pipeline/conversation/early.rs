//! Work started before the turn ends, so the reply waits less after it:
//! the transcript of the turn so far while the user speaks (its words
//! prefill the LLM), the speculative transcript at a lull or the first
//! pause, and the reply started on it while Smart Turn and the silence
//! decide.

use super::{Action, Conversation, Failure, Heard, SpecReply, Speculative};
use crate::PIPELINE_RATE;
use crate::pipeline::llm::{ChatMessage, Role};

impl Conversation {
    /// While the user speaks, transcribe the turn so far each time
    /// `turn.prefill_every_ms` more of it came, so its words can be
    /// prefilled into the LLM before the turn ends. One job at a time, and
    /// only while the engines hold no other session's work and this one's
    /// LLM is free: it spends idle cores, never a busy machine's.
    pub(super) fn transcribe_so_far(&mut self) {
        let every = self.cfg.turn.prefill_every_ms as usize * PIPELINE_RATE as usize / 1000;
        let idle = !self.others_waiting
            && self.so_far.is_none()
            && self.spec.is_none()
            && self.predicting.is_none()
            && self.reply.is_none()
            && !self.held;
        if every == 0
            || !idle
            || !self.turns.speaking()
            || self.utterance.len() < self.so_far_upto + every
        {
            return;
        }
        self.so_far_upto = self.utterance.len();
        let job = self.next_id();
        self.so_far = Some(job);
        self.out.push(Action::StartAsr {
            job,
            audio: self.utterance.clone(),
        });
    }

    /// Nobody waits for the transcript of the turn so far any more.
    pub(super) fn drop_so_far(&mut self) {
        if let Some(job) = self.so_far.take() {
            self.out.push(Action::CancelAsr { job });
        }
    }

    /// The turn so far was transcribed while the user spoke: let the LLM
    /// prefill its words, but for the last one, which the audio may have
    /// cut (and which a later word may change: "capital" in "capital of").
    pub(super) fn on_heard_so_far(&mut self, result: Result<Heard, Failure>) {
        let Ok(heard) = result else {
            return;
        };
        if !self.turns.in_turn() || self.reply.is_some() {
            return;
        }
        let text = heard.text.trim();
        let Some(cut) = text.rfind(char::is_whitespace) else {
            return;
        };
        let so_far = text[..cut].trim_end();
        if !so_far.is_empty() {
            self.out.push(Action::WarmLlm {
                messages: self.history.clone(),
                so_far: so_far.to_string(),
            });
        }
    }

    /// The speech stopped short of a pause: on an idle machine, transcribe
    /// the turn so far now, so that when the pause comes and Smart Turn
    /// ends the turn its transcript is ready or nearly (`turn.lull_ms`). A
    /// lull the user talks on through costs one dropped decode, so a busy
    /// machine leaves it to the pause.
    pub(super) fn on_lull(&mut self) {
        if self.held || self.others_waiting || self.reply.is_some() || self.spec.is_some() {
            return;
        }
        tracing::debug!(
            audio_ms = self.utterance.len() / 16,
            "lull: the turn so far is transcribed"
        );
        let queued = self.so_far.is_some();
        self.drop_so_far();
        self.start_speculation();
        if let Some(s) = self.spec.as_mut() {
            s.queued = queued;
        }
    }

    /// The first pause after a lull whose transcript was started. Smart
    /// Turn is asked once the transcript is in (now, if it is): on two
    /// cores the two at once slow each other down, and the transcript,
    /// started sooner, is what the reply waits for. One that waits behind
    /// a dropped job gains nothing from going first: Smart Turn is asked
    /// now, beside that job's end, as at a pause without a lull.
    pub(super) fn after_lull(&mut self) {
        if !self.cfg.turn.smart_turn {
            self.start_spec_reply();
            return;
        }
        let Some(s) = self.spec.as_mut() else {
            return;
        };
        if s.result.is_some() || s.queued {
            self.predict(self.turns.pause_id());
        } else {
            s.smart_turn_waits = true;
        }
    }

    pub(super) fn predict(&mut self, pause: u64) {
        self.predicting = Some(pause);
        self.out.push(Action::PredictTurn {
            pause,
            audio: self.utterance.clone(),
        });
    }

    pub(super) fn drop_speculation(&mut self) {
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
    pub(super) fn spec_reply(&mut self, id: u64) -> Option<&mut SpecReply> {
        self.spec
            .as_mut()
            .and_then(|s| s.reply.as_mut())
            .filter(|sr| sr.id == id)
    }

    /// Start answering the speculative transcript while the silence
    /// decides, once it is in and Smart Turn has said "not yet" (or is not
    /// used); before that, the LLM would share the cores with Smart Turn.
    pub(super) fn start_spec_reply(&mut self) {
        let asked = self.turns.paused() && self.predicting.is_none();
        if !self.cfg.speculative_reply || self.reply.is_some() || !asked {
            return;
        }
        let user = match &self.spec {
            Some(Speculative {
                result: Some(Ok(heard)),
                reply: None,
                smart_turn_waits: false,
                ..
            }) => heard.text.trim().to_string(),
            _ => return,
        };
        if user.is_empty() {
            return;
        }
        let mut messages = self.history.clone();
        messages.push(ChatMessage::new(Role::User, user));
        let id = self.next_id();
        let Some(s) = self.spec.as_mut() else {
            return;
        };
        s.reply = Some(SpecReply {
            id,
            started: self.now,
            first_token: None,
            tokens: Vec::new(),
            done: false,
            grounding: None,
        });
        self.out.push(Action::StartLlm {
            reply: id,
            messages,
        });
    }

    /// Decode the turn so far, so the transcript is ready when it ends.
    pub(super) fn start_speculation(&mut self) {
        self.drop_speculation();
        let job = self.next_id();
        self.spec = Some(Speculative {
            job,
            result: None,
            reply: None,
            queued: false,
            smart_turn_waits: false,
        });
        self.out.push(Action::StartAsr {
            job,
            audio: self.utterance.clone(),
        });
    }
}
