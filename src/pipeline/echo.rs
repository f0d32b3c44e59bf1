//! The echo pipeline's energy gate: collects one utterance and hands it back
//! when the user stops talking. A diagnostics mode for the media path; the
//! speech pipeline replaces the energy gate with Silero VAD.

use std::collections::VecDeque;

use crate::audio::level::{dbfs, rms};
use crate::config::EchoConfig;
use crate::{FRAME_MS, PIPELINE_FRAME};

/// Frames of audio kept from before speech started, so word onsets are not clipped.
const PREROLL_FRAMES: usize = 10;
/// Voiced frames in a row needed to start an utterance (rejects clicks).
const ONSET_FRAMES: u32 = 2;
/// Trailing silence kept at the end of an utterance.
const TAIL_FRAMES: usize = 5;

/// What the gate decided about one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum EchoEvent {
    SpeechStarted,
    /// A finished utterance at the pipeline rate, ready to play back.
    Utterance(Vec<f32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle { voiced_run: u32 },
    Speaking { silent_run: u32 },
}

/// Energy gate over 20 ms frames at the pipeline rate.
#[derive(Debug, Clone)]
pub struct EchoGate {
    threshold_dbfs: f32,
    hangover_frames: u32,
    max_frames: usize,
    state: State,
    preroll: VecDeque<Vec<f32>>,
    utterance: Vec<f32>,
    frames_in_utterance: usize,
}

impl EchoGate {
    pub fn new(cfg: &EchoConfig) -> Self {
        Self {
            threshold_dbfs: cfg.threshold_dbfs,
            hangover_frames: (cfg.hangover_ms / FRAME_MS).max(1),
            max_frames: (cfg.max_utterance_ms / FRAME_MS).max(1) as usize,
            state: State::Idle { voiced_run: 0 },
            preroll: VecDeque::with_capacity(PREROLL_FRAMES + 1),
            utterance: Vec::new(),
            frames_in_utterance: 0,
        }
    }

    /// True while an utterance is being collected.
    pub fn speaking(&self) -> bool {
        matches!(self.state, State::Speaking { .. })
    }

    /// Feed one frame ([`PIPELINE_FRAME`] samples; other sizes are accepted too).
    pub fn push(&mut self, frame: &[f32]) -> Option<EchoEvent> {
        let voiced = dbfs(rms(frame)) > self.threshold_dbfs;
        match self.state {
            State::Idle { voiced_run } => {
                self.preroll.push_back(frame.to_vec());
                if self.preroll.len() > PREROLL_FRAMES {
                    self.preroll.pop_front();
                }
                let run = if voiced { voiced_run + 1 } else { 0 };
                if run >= ONSET_FRAMES {
                    self.utterance.clear();
                    for f in self.preroll.drain(..) {
                        self.utterance.extend_from_slice(&f);
                    }
                    self.frames_in_utterance = self.utterance.len() / PIPELINE_FRAME;
                    self.state = State::Speaking { silent_run: 0 };
                    Some(EchoEvent::SpeechStarted)
                } else {
                    self.state = State::Idle { voiced_run: run };
                    None
                }
            }
            State::Speaking { silent_run } => {
                self.utterance.extend_from_slice(frame);
                self.frames_in_utterance += 1;
                let silent_run = if voiced { 0 } else { silent_run + 1 };
                if silent_run >= self.hangover_frames || self.frames_in_utterance >= self.max_frames
                {
                    // Drop most of the trailing silence the hangover collected.
                    let trailing = silent_run.saturating_sub(TAIL_FRAMES as u32) as usize;
                    let keep = self.utterance.len().saturating_sub(trailing * frame.len());
                    self.utterance.truncate(keep);
                    self.state = State::Idle { voiced_run: 0 };
                    self.frames_in_utterance = 0;
                    Some(EchoEvent::Utterance(std::mem::take(&mut self.utterance)))
                } else {
                    self.state = State::Speaking { silent_run };
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(level: f32) -> Vec<f32> {
        (0..PIPELINE_FRAME)
            .map(|i| level * (i as f32 * 0.3).sin())
            .collect()
    }

    fn cfg() -> EchoConfig {
        EchoConfig {
            threshold_dbfs: -40.0,
            hangover_ms: 200,
            max_utterance_ms: 2000,
        }
    }

    #[test]
    fn utterance_is_returned_after_hangover() {
        let mut g = EchoGate::new(&cfg());
        for _ in 0..20 {
            assert_eq!(g.push(&frame(0.0)), None);
        }
        let mut started = false;
        for _ in 0..50 {
            if g.push(&frame(0.3)) == Some(EchoEvent::SpeechStarted) {
                started = true;
            }
        }
        assert!(started && g.speaking());
        let mut out = None;
        for _ in 0..20 {
            if let Some(EchoEvent::Utterance(u)) = g.push(&frame(0.0)) {
                out = Some(u);
                break;
            }
        }
        let u = out.expect("utterance after 200 ms of silence");
        // 50 voiced frames + up to 10 preroll + 5 tail frames.
        let frames = u.len() / PIPELINE_FRAME;
        assert!((50..=66).contains(&frames), "{frames} frames");
        assert!(!g.speaking());
    }

    #[test]
    fn clicks_and_noise_floor_do_not_start_speech() {
        let mut g = EchoGate::new(&cfg());
        for i in 0..200 {
            let f = if i % 10 == 0 {
                frame(0.5)
            } else {
                frame(0.001)
            };
            assert_eq!(g.push(&f), None, "frame {i}");
        }
    }

    #[test]
    fn endless_speech_is_cut_at_the_cap() {
        let mut g = EchoGate::new(&cfg());
        let mut cuts = 0;
        for _ in 0..500 {
            if let Some(EchoEvent::Utterance(u)) = g.push(&frame(0.3)) {
                assert!(u.len() <= 2000 / 20 * PIPELINE_FRAME + PIPELINE_FRAME);
                cuts += 1;
            }
        }
        assert!(cuts >= 4, "{cuts}");
    }
}
