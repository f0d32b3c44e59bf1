//! Conversation pipelines: what a session does with the user's audio.
//!
//! Each stage is a small type with a pure interface (frames in, decisions
//! out), so turn-taking logic is tested without a network. The session
//! (`crate::session`) drives them and owns all IO.

pub mod echo;

pub use echo::{EchoEvent, EchoGate};
