//! Conversation pipelines and their stages: what a session does with the
//! user's audio.
//!
//! Each stage is a small type with a clear interface. Decision logic (echo
//! gate, phonemes, mel features) is pure and unit-tested; model inference
//! (asr, llm, tts, vad, turn) runs on dedicated threads behind bounded
//! queues (`pool`), never on the async runtime. The session
//! (`crate::session`) drives the stages and owns all IO.

pub mod asr;
pub mod conversation;
pub mod deps;
pub mod echo;
pub mod gate;
pub mod llm;
pub mod llm_http;
pub mod mel;
pub mod onnx;
pub mod phonemes;
pub mod playout;
pub mod pool;
pub mod prompts;
pub mod speech;
pub mod tts;
pub mod turn;
pub mod turn_taking;
pub mod vad;

pub use echo::{EchoEvent, EchoGate};

use std::time::Duration;

/// No input for this long counts as silence.
pub const INPUT_STALL: Duration = Duration::from_millis(100);

/// The next chunk of 16 kHz input for a pipeline; `None` when the input ended.
///
/// A client that stops sending (DTX, a muted mic, a script that ran out of
/// audio) is silent, and an utterance in progress must still end: while
/// `in_utterance`, [`INPUT_STALL`] without input yields that much silence.
pub async fn next_input(
    input: &mut tokio::sync::mpsc::Receiver<Vec<f32>>,
    in_utterance: bool,
) -> Option<Vec<f32>> {
    loop {
        match tokio::time::timeout(INPUT_STALL, input.recv()).await {
            Ok(chunk) => return chunk,
            Err(_) if in_utterance => {
                let n = INPUT_STALL.as_millis() as usize * crate::PIPELINE_RATE as usize / 1000;
                return Some(vec![0.0; n]);
            }
            Err(_) => {}
        }
    }
}
