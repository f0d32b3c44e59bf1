//! Turn-taking: when the user starts, pauses and finishes a turn, decided
//! from VAD windows alone (no IO, no clocks: time is counted in audio).
//!
//! ```text
//!   Idle ──speech ≥ min_speech──▶ InTurn ──silence ≥ lull──▶ Lull ──silence ≥ short_pause──▶ Pausing
//!     ▲                              ▲                       │ ASR          │ ask Smart Turn
//!     │                              └──────speech again─────┴──────────────┤
//!     └──── EndOfTurn ◀── Smart Turn says complete, or silence ≥ max_silence, or turn too long,
//!                         or silence ≥ transcript_pause after a transcript that reads finished
//! ```
//! The session feeds [`TurnTaking::on_window`] with each 32 ms VAD result,
//! [`TurnTaking::on_prediction`] with Smart Turn's answer and
//! [`TurnTaking::on_transcript`] with whether the pause's speculative
//! transcript reads as a finished sentence; it acts on the returned
//! [`TurnEvent`]s.

use crate::config::TurnConfig;

/// VAD window length in milliseconds (512 samples at 16 kHz).
pub const WINDOW_MS: u32 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEvent {
    /// The user started speaking (after `min_speech` of speech).
    SpeechStarted,
    /// Speech has lasted `barge_in_ms`: long enough to interrupt the assistant.
    SustainedSpeech,
    /// The speech stopped `lull_ms` ago, short of a pause: the turn so far
    /// may be transcribed already, to be ready if this becomes the end.
    Lull,
    /// First short pause in this stretch of silence: run Smart Turn and
    /// speculative ASR on the turn so far.
    Paused,
    /// The user resumed speaking after a lull or a pause.
    Resumed,
    /// The turn is over; `silence_ms` of it was trailing silence.
    EndOfTurn { silence_ms: u32, reason: EndReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Smart Turn judged the turn complete after the short pause.
    Predicted,
    /// The long silence fallback.
    Silence,
    /// Smart Turn said "not yet", but the transcript so far reads as a
    /// finished sentence and the silence reached `transcript_pause_ms`.
    Transcript,
    /// The turn hit the length cap.
    TooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle {
        speech_run: u32,
    },
    InTurn {
        speech_run: u32,
        silence_run: u32,
        paused: bool,
        /// This stretch of silence reached `lull_ms`.
        lulled: bool,
    },
}

/// The turn-taking state machine (see module docs).
#[derive(Debug, Clone)]
pub struct TurnTaking {
    cfg: TurnConfig,
    state: State,
    /// Windows in the current turn (speech and pauses).
    turn_windows: u32,
    /// Generation of the pending Smart Turn request; stale answers are ignored.
    pause_id: u64,
    awaiting: Option<u64>,
    /// The current pause's transcript reads as a finished sentence.
    finished_text: bool,
}

fn windows(ms: u32) -> u32 {
    ms.div_ceil(WINDOW_MS).max(1)
}

impl TurnTaking {
    pub fn new(cfg: TurnConfig) -> Self {
        Self {
            cfg,
            state: State::Idle { speech_run: 0 },
            turn_windows: 0,
            pause_id: 0,
            awaiting: None,
            finished_text: false,
        }
    }

    /// Is the user in a turn (speaking or pausing)?
    pub fn in_turn(&self) -> bool {
        matches!(self.state, State::InTurn { .. })
    }

    /// Is the user in a turn and was the last window speech?
    pub fn speaking(&self) -> bool {
        matches!(self.state, State::InTurn { silence_run: 0, .. })
    }

    /// From the start of the turn to the end of its last speech, ms.
    pub fn spoken_ms(&self) -> u32 {
        match self.state {
            State::InTurn { silence_run, .. } => {
                self.turn_windows.saturating_sub(silence_run) * WINDOW_MS
            }
            State::Idle { .. } => 0,
        }
    }

    /// Id of the pause the last [`TurnEvent::Paused`] was about.
    pub fn pause_id(&self) -> u64 {
        self.pause_id
    }

    /// Feed one VAD window's speech probability.
    pub fn on_window(&mut self, prob: f32) -> Vec<TurnEvent> {
        let speech = prob >= self.cfg.vad_threshold;
        let mut out = Vec::new();
        match self.state {
            State::Idle { speech_run } => {
                let run = if speech { speech_run + 1 } else { 0 };
                if run >= windows(self.cfg.min_speech_ms) {
                    self.turn_windows = run;
                    self.state = State::InTurn {
                        speech_run: run,
                        silence_run: 0,
                        paused: false,
                        lulled: false,
                    };
                    out.push(TurnEvent::SpeechStarted);
                    if run >= windows(self.cfg.barge_in_ms) {
                        out.push(TurnEvent::SustainedSpeech);
                    }
                } else {
                    self.state = State::Idle { speech_run: run };
                }
            }
            State::InTurn {
                speech_run,
                silence_run,
                paused,
                lulled,
            } => {
                self.turn_windows += 1;
                if speech {
                    let run = speech_run + 1;
                    if paused || lulled {
                        out.push(TurnEvent::Resumed);
                        self.awaiting = None;
                        self.finished_text = false;
                    }
                    if run == windows(self.cfg.barge_in_ms) {
                        out.push(TurnEvent::SustainedSpeech);
                    }
                    self.state = State::InTurn {
                        speech_run: run,
                        silence_run: 0,
                        paused: false,
                        lulled: false,
                    };
                } else {
                    let silence = silence_run + 1;
                    let silence_ms = silence * WINDOW_MS;
                    let pause = windows(self.cfg.short_pause_ms);
                    let lulled_now = self.cfg.lull_ms > 0
                        && windows(self.cfg.lull_ms) < pause
                        && silence >= windows(self.cfg.lull_ms);
                    if lulled_now && !lulled {
                        out.push(TurnEvent::Lull);
                    }
                    let mut paused_now = paused;
                    if !paused && silence >= pause {
                        paused_now = true;
                        self.pause_id += 1;
                        self.awaiting = Some(self.pause_id);
                        out.push(TurnEvent::Paused);
                    }
                    self.state = State::InTurn {
                        speech_run: 0,
                        silence_run: silence,
                        paused: paused_now,
                        lulled: lulled_now,
                    };
                    if silence >= windows(self.cfg.max_silence_ms) {
                        out.push(self.end(silence_ms, EndReason::Silence));
                        return out;
                    }
                    if self.finished_text && silence >= windows(self.cfg.transcript_pause_ms) {
                        out.push(self.end(silence_ms, EndReason::Transcript));
                        return out;
                    }
                }
                if self.turn_windows >= windows(self.cfg.max_turn_ms) {
                    let silence_ms = match self.state {
                        State::InTurn { silence_run, .. } => silence_run * WINDOW_MS,
                        State::Idle { .. } => 0,
                    };
                    out.push(self.end(silence_ms, EndReason::TooLong));
                }
            }
        }
        out
    }

    /// Smart Turn's answer for pause `id`. Ends the turn if it is complete
    /// and the user is still silent.
    pub fn on_prediction(&mut self, id: u64, complete: bool) -> Option<TurnEvent> {
        if self.awaiting != Some(id) {
            return None; // stale: the user spoke again since
        }
        self.awaiting = None;
        match self.state {
            State::InTurn {
                silence_run,
                paused: true,
                ..
            } if complete => Some(self.end(silence_run * WINDOW_MS, EndReason::Predicted)),
            _ => None,
        }
    }

    /// Is the user in a pause (silence since the first short pause)?
    pub fn paused(&self) -> bool {
        matches!(self.state, State::InTurn { paused: true, .. })
    }

    /// Whether the speculative transcript of the current lull or pause reads as a
    /// finished sentence ([`crate::text::reads_finished`]). If it does, the
    /// turn ends once the silence reaches `transcript_pause_ms` (now, if it
    /// already has) instead of `max_silence_ms`. Off when that is 0. No
    /// pause id, unlike [`Self::on_prediction`]: the caller drops a
    /// speculative decode at every new pause and at speech, so a transcript
    /// it passes on is always the current pause's, and speech since (the
    /// user resumed) is seen here as no pause.
    pub fn on_transcript(&mut self, finished: bool) -> Option<TurnEvent> {
        if !finished || self.cfg.transcript_pause_ms == 0 {
            return None;
        }
        match self.state {
            State::InTurn {
                silence_run,
                paused,
                lulled,
                ..
            } if paused || lulled => {
                self.finished_text = true;
                (silence_run >= windows(self.cfg.transcript_pause_ms))
                    .then(|| self.end(silence_run * WINDOW_MS, EndReason::Transcript))
            }
            _ => None, // stale: the user spoke again since
        }
    }

    /// Forget the stretch of speech in progress without ending a turn: it
    /// was no turn (a cough over the assistant, see `conversation::turn`).
    pub fn abandon(&mut self) {
        self.end(0, EndReason::Silence);
    }

    fn end(&mut self, silence_ms: u32, reason: EndReason) -> TurnEvent {
        self.state = State::Idle { speech_run: 0 };
        self.turn_windows = 0;
        self.awaiting = None;
        self.finished_text = false;
        TurnEvent::EndOfTurn { silence_ms, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TurnConfig {
        TurnConfig::default()
    }

    fn feed(t: &mut TurnTaking, prob: f32, n: usize) -> Vec<TurnEvent> {
        (0..n).flat_map(|_| t.on_window(prob)).collect()
    }

    #[test]
    fn a_short_burst_pauses_unsustained_and_can_be_abandoned() {
        let mut t = TurnTaking::new(cfg());
        let ev = feed(&mut t, 0.9, 5);
        assert_eq!(ev, vec![TurnEvent::SpeechStarted]);
        assert_eq!(
            feed(&mut t, 0.1, 7),
            vec![TurnEvent::Lull, TurnEvent::Paused]
        );
        assert_eq!(t.spoken_ms(), 5 * WINDOW_MS);
        t.abandon();
        assert!(!t.in_turn());
        assert_eq!(t.spoken_ms(), 0);
        // A stale answer about the abandoned pause ends nothing.
        assert_eq!(t.on_prediction(t.pause_id(), true), None);
        assert_eq!(feed(&mut t, 0.9, 3), vec![TurnEvent::SpeechStarted]);
    }

    #[test]
    fn complete_prediction_ends_the_turn_after_the_short_pause() {
        let mut t = TurnTaking::new(cfg());
        assert!(feed(&mut t, 0.0, 10).is_empty());
        let ev = feed(&mut t, 0.9, 20);
        assert_eq!(
            ev,
            vec![TurnEvent::SpeechStarted, TurnEvent::SustainedSpeech]
        );
        let ev = feed(&mut t, 0.1, 7);
        assert_eq!(ev, vec![TurnEvent::Lull, TurnEvent::Paused]);
        let id = t.pause_id();
        match t.on_prediction(id, true) {
            Some(TurnEvent::EndOfTurn {
                reason: EndReason::Predicted,
                silence_ms,
            }) => assert!((192..=256).contains(&silence_ms)),
            other => panic!("{other:?}"),
        }
        assert!(!t.in_turn());
    }

    #[test]
    fn incomplete_prediction_waits_for_the_long_silence() {
        let mut t = TurnTaking::new(cfg());
        feed(&mut t, 0.9, 20);
        feed(&mut t, 0.0, 7);
        assert_eq!(t.on_prediction(t.pause_id(), false), None);
        assert!(t.in_turn(), "a mid-sentence pause must not end the turn");
        let ev = feed(&mut t, 0.0, 30);
        assert!(ev.iter().any(|e| matches!(
            e,
            TurnEvent::EndOfTurn {
                reason: EndReason::Silence,
                ..
            }
        )));
    }

    #[test]
    fn a_finished_transcript_ends_the_turn_on_the_shorter_silence() {
        let text_ms = cfg().transcript_pause_ms;
        assert!(text_ms > 0 && text_ms < cfg().max_silence_ms);
        let ends = |ev: &[TurnEvent]| {
            ev.iter().find_map(|e| match e {
                TurnEvent::EndOfTurn { silence_ms, reason } => Some((*silence_ms, *reason)),
                _ => None,
            })
        };
        // (windows of silence before the transcript comes, it reads finished,
        //  expected end: silence in windows and reason)
        let w = windows(text_ms);
        let cases = [
            (5, true, Some((w, EndReason::Transcript))),
            (w + 3, true, Some((w + 3, EndReason::Transcript))),
            (
                5,
                false,
                Some((windows(cfg().max_silence_ms), EndReason::Silence)),
            ),
        ];
        for (before, finished, want) in cases {
            let mut t = TurnTaking::new(cfg());
            feed(&mut t, 0.9, 20);
            let ev = feed(&mut t, 0.0, before as usize);
            assert_eq!(ends(&ev), None);
            assert_eq!(t.on_prediction(t.pause_id(), false), None);
            let now = t.on_transcript(finished);
            let got = match now {
                Some(TurnEvent::EndOfTurn { silence_ms, reason }) => Some((silence_ms, reason)),
                _ => ends(&feed(&mut t, 0.0, 40)),
            };
            let want = want.map(|(n, r)| (n * WINDOW_MS, r));
            assert_eq!(got, want, "{before} windows, finished {finished}");
        }
        // A transcript that comes while the user speaks again is stale,
        // and so is "finished" once the user resumes.
        let mut t = TurnTaking::new(cfg());
        feed(&mut t, 0.9, 20);
        feed(&mut t, 0.0, 5);
        assert_eq!(t.on_transcript(true), None);
        feed(&mut t, 0.9, 3);
        assert_eq!(t.on_transcript(true), None);
        let ev = feed(&mut t, 0.0, w as usize + 2);
        assert_eq!(
            ends(&ev),
            None,
            "a finished transcript outlived the speech after it"
        );
        // Off at 0.
        let mut off = cfg();
        off.transcript_pause_ms = 0;
        let mut t = TurnTaking::new(off);
        feed(&mut t, 0.9, 20);
        feed(&mut t, 0.0, w as usize + 2);
        assert_eq!(t.on_transcript(true), None);
    }

    #[test]
    fn a_lull_comes_before_the_pause_and_speech_after_it_resumes() {
        // (lull_ms, windows of silence, then speech?, events expected)
        use TurnEvent::*;
        let cases: [(u32, usize, bool, &[TurnEvent]); 6] = [
            (64, 1, false, &[]),
            (64, 2, false, &[Lull]),
            (64, 4, false, &[Lull, Paused]),
            (64, 2, true, &[Lull, Resumed]),
            (0, 4, true, &[Paused, Resumed]),
            // Not under the pause: no lull of its own.
            (128, 4, false, &[Paused]),
        ];
        for (lull_ms, quiet, speak, want) in cases {
            let mut t = TurnTaking::new(TurnConfig { lull_ms, ..cfg() });
            feed(&mut t, 0.9, 20);
            let mut got = feed(&mut t, 0.0, quiet);
            if speak {
                got.extend(feed(&mut t, 0.9, 1));
            }
            assert_eq!(
                got, want,
                "lull_ms {lull_ms}, {quiet} quiet, speech after: {speak}"
            );
        }
        // A finished transcript of the lull counts once the silence is long enough.
        let mut t = TurnTaking::new(cfg());
        feed(&mut t, 0.9, 20);
        feed(&mut t, 0.0, 2);
        assert_eq!(t.on_transcript(true), None);
        let ev = feed(&mut t, 0.0, windows(cfg().transcript_pause_ms) as usize);
        assert!(
            ev.iter().any(|e| matches!(
                e,
                EndOfTurn {
                    reason: EndReason::Transcript,
                    ..
                }
            )),
            "{ev:?}"
        );
    }

    #[test]
    fn speech_after_a_pause_makes_the_prediction_stale() {
        let mut t = TurnTaking::new(cfg());
        feed(&mut t, 0.9, 20);
        feed(&mut t, 0.0, 7);
        let id = t.pause_id();
        assert_eq!(feed(&mut t, 0.9, 1), vec![TurnEvent::Resumed]);
        assert_eq!(t.on_prediction(id, true), None);
        assert!(t.in_turn());
    }

    #[test]
    fn short_blips_are_not_speech_and_long_turns_are_capped() {
        let mut t = TurnTaking::new(cfg());
        for _ in 0..50 {
            assert!(t.on_window(0.9).is_empty() || t.in_turn());
            t.on_window(0.0);
            t.on_window(0.0);
            if t.in_turn() {
                break;
            }
        }
        assert!(!t.in_turn(), "single-window blips started a turn");
        let ev = feed(&mut t, 0.9, 2000);
        assert!(ev.iter().any(|e| matches!(
            e,
            TurnEvent::EndOfTurn {
                reason: EndReason::TooLong,
                ..
            }
        )));
    }
}
