//! Stable error codes for rejected client messages, shared by the signaling
//! protocol (`rtc::signaling`), the `events` data channel (`events::Event`)
//! and `/metrics`. A leaf: it imports nothing from the crate, so `metrics`
//! and `events` can use it without reaching up into `rtc`.

use serde::{Deserialize, Serialize};

/// Stable error codes of rejected client messages, on the signaling socket
/// (`error {code, message}`) and on the `events` data channel (`error`
/// events): clients switch on them, and `/metrics` counts them
/// (`signaling_errors_total{kind}`, `data_channel_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or JSON that is not an object with a string `type`.
    BadJson,
    /// A `type` this server does not know.
    UnknownType,
    /// A known type with missing or ill-typed fields.
    BadMessage,
    /// Over the size limit.
    TooLarge,
    /// The SDP could not be parsed or applied.
    BadSdp,
    /// A candidate the ICE agent rejected.
    BadCandidate,
    /// A candidate arrived before any offer.
    NoOffer,
    /// A second offer on a socket that already negotiated (renegotiation is not supported).
    DuplicateOffer,
    /// The server is at its session limit (signaling), or too many typed
    /// messages wait already (data channel).
    Busy,
    /// The requested `session_id` is live on another connection.
    SessionInUse,
    /// Binary frames are not part of the protocol.
    Binary,
    /// The request's Content-Type is not the one the route takes (HTTP 415).
    BadContentType,
    /// The client was too slow: no request headers, body or offer in time.
    Timeout,
    /// No such resource (HTTP 404).
    NotFound,
    /// The route exists but not for this method (HTTP 405).
    MethodNotAllowed,
    /// Auth is on and the request carries no token (HTTP 401).
    NoToken,
    /// The token is malformed, or not signed by one of the server's keys (401).
    BadToken,
    /// The token has expired, or is not valid yet (401).
    TokenExpired,
    /// The token lacks the grant this needs (403).
    MissingGrant,
    /// The token is bound to another session, or to none when one was asked for (403).
    WrongSession,
    /// The page's `Origin` is not allowed to use the server (403).
    OriginNotAllowed,
    /// The `Host` header is not one this server answers to (403).
    HostNotAllowed,
    /// The server is shutting down and takes no new session (503).
    Draining,
    /// Too many requests from this client or on this session (429).
    RateLimited,
    /// The server failed; the message says why.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::BadSdp => "bad_sdp",
            ErrorCode::BadCandidate => "bad_candidate",
            ErrorCode::NoOffer => "no_offer",
            ErrorCode::DuplicateOffer => "duplicate_offer",
            ErrorCode::Busy => "busy",
            ErrorCode::SessionInUse => "session_in_use",
            ErrorCode::Binary => "binary",
            ErrorCode::BadContentType => "bad_content_type",
            ErrorCode::Timeout => "timeout",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NoToken => "no_token",
            ErrorCode::BadToken => "bad_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::MissingGrant => "missing_grant",
            ErrorCode::WrongSession => "wrong_session",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::HostNotAllowed => "host_not_allowed",
            ErrorCode::Draining => "draining",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
        }
    }
}
