//! Conversation pipelines and their stages: what a session does with the
//! user's audio.
//!
//! Each stage is a small type with a clear interface. Decision logic (echo
//! gate, phonemes, mel features) is pure and unit-tested; model inference
//! (asr, llm, tts, vad, turn) runs on dedicated threads behind bounded
//! queues (`pool`), never on the async runtime. The session
//! (`crate::session`) drives the stages and owns all IO.

pub mod asr;
pub mod echo;
pub mod llm;
pub mod llm_http;
pub mod mel;
pub mod onnx;
pub mod phonemes;
pub mod playout;
pub mod pool;
pub mod speech;
pub mod tts;
pub mod turn;
pub mod turn_taking;
pub mod vad;

pub use echo::{EchoEvent, EchoGate};
