//! WebRTC: peer connections, signaling and the media edge.
//!
//! Every type of the `webrtc`/`rtc` crates stays inside this module: the rest
//! of voxloop sees [`Peer`], [`PeerEvent`], [`RemoteAudio`], [`InboundFrame`]
//! and the signaling types, so the engine can be swapped (str0m is the
//! fallback named in ARCHITECTURE.md) without touching sessions, the server
//! or the client.

pub mod gap;
mod handler;
pub mod liveness;
mod media;
pub mod peer;
pub mod signaling;

pub use gap::GapFill;
pub use media::{InboundFrame, RemoteAudio};
pub use peer::{Peer, PeerError, PeerEvent, PeerStreams, RtcSettings, wait_gathered};
pub use signaling::{
    ClientMessage, ErrorCode, IceCandidate, Negotiation, ServerMessage, SignalError,
    parse_client_message,
};
