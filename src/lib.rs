//! voxloop: a real-time voice conversation server.
//!
//! The crate is a library with one binary (`src/main.rs`) on top, so that the
//! integration tests and the load-test tool drive exactly the code the server
//! runs. See `ARCHITECTURE.md` for the module map and its invariants.

pub mod audio;
pub mod auth;
pub mod bus;
pub mod client;
pub mod config;
pub mod converse;
pub mod engines;
pub mod error_code;
pub mod events;
pub mod hub;
pub mod intent;
pub mod kb;
pub mod limits;
pub mod loadtest;
pub mod metrics;
pub mod models;
pub mod pipeline;
pub mod prompt;
pub mod remote;
pub mod rtc;
pub mod server;
pub mod session;
pub mod text;

/// Audio sample rate on the wire (Opus/RTP clock) and of decoded frames.
pub const WIRE_RATE: u32 = 48_000;
/// Sample rate the speech pipeline works at (VAD, ASR, echo gate).
pub const PIPELINE_RATE: u32 = 16_000;
/// Duration of one media frame in milliseconds.
pub const FRAME_MS: u32 = 20;
/// Samples in one 20 ms frame at [`WIRE_RATE`].
pub const WIRE_FRAME: usize = (WIRE_RATE / 1000 * FRAME_MS) as usize;
/// Samples in one 20 ms frame at [`PIPELINE_RATE`].
pub const PIPELINE_FRAME: usize = (PIPELINE_RATE / 1000 * FRAME_MS) as usize;
