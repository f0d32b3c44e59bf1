//! Conversation pipelines and their stages: what a session does with the
//! user's audio.
//!
//! Each stage is a small type with a clear interface. Decision logic (echo
//! gate, turn taking, prompt timing, phonemes, mel features) is pure and
//! unit-tested; model inference (asr, llm, tts, vad, turn) runs on dedicated
//! threads behind bounded queues (`pool`, the LLM engine thread), never on
//! the async runtime. The speech loop (`speech`) is the pipeline's own IO:
//! tokio tasks that feed those threads and read their answers. The network
//! is not: the session (`crate::session`) owns the peer, the data channel
//! and the 20 ms pacer, and hands the pipeline 16 kHz audio, [`Control`]
//! commands and an `OutQueue` to fill.
//!
//! The pipeline sits below the network side: it never imports `rtc`,
//! `server`, `bus`, `hub` or `session` (see `tests/layering.rs`). Prompts
//! reach it as [`crate::prompt`] types; engines are loaded above it, by
//! `crate::engines`, into an [`Engines`].
//!
//! [`Control`]: crate::prompt::Control

pub mod asr;
pub mod conversation;
pub mod cpu_share;
pub mod deps;
pub mod echo;
pub mod gate;
mod jobs;
pub mod llm;
pub mod mel;
pub mod onnx;
pub mod phonemes;
pub mod playout;
pub mod pool;
pub mod priority;
pub mod prompts;
pub mod retrieve;
pub mod speech;
pub mod tts;
pub mod turn;
pub mod turn_taking;
pub mod vad;

pub use echo::{EchoEvent, EchoGate};

use std::sync::Arc;
use std::time::Duration;

/// Every engine the speech pipeline needs, each loaded once per process and
/// shared by every session (`crate::engines` loads them).
pub struct Engines {
    pub asr: Arc<asr::Asr>,
    pub llm: Arc<llm::LlmBackend>,
    pub tts: Arc<tts::Tts>,
    pub vad: Arc<vad::Vad>,
    pub turn: Arc<turn::TurnDetector>,
    /// The knowledge base the replies are grounded on (None: not loaded).
    pub kb: Option<Arc<retrieve::Retriever>>,
}

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
