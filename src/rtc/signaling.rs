//! The signaling protocol of `GET /ws`, without IO (DESIGN.md §2).
//!
//! JSON text messages tagged by `type`:
//! - client → server: `offer {sdp, session_id?}`, `candidate {candidate}`, `bye`
//!   (`session_id` resumes a conversation's identity after a reconnect)
//! - server → client: `session {id}`, `answer {sdp}`, `candidate {candidate}`,
//!   `error {code, message}`
//!
//! [`parse_client_message`] turns text into a typed message or a typed error
//! with a stable code, and [`Negotiation`] decides what a message means in the
//! current state. Both are pure, so every malformed input is unit-tested here.

use serde::{Deserialize, Serialize};

/// Default cap on one signaling message (a config default, so it lives there).
pub use crate::config::DEFAULT_MAX_MESSAGE;
/// The codes live below `rtc` so the data channel and `/metrics` share them.
pub use crate::error_code::ErrorCode;

/// An ICE candidate as browsers serialize `RTCIceCandidate.toJSON()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(
        default,
        rename = "sdpMLineIndex",
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Offer {
        sdp: String,
        /// The id to resume, if the client asks for one.
        session_id: Option<String>,
    },
    /// `None` is the end-of-candidates marker (`{"type":"candidate","candidate":null}`).
    Candidate(Option<IceCandidate>),
    Bye,
}

/// The wire form of a [`ClientMessage`], as [`parse_client_message`] reads it.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientWire<'a> {
    Offer {
        sdp: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<&'a str>,
    },
    Candidate {
        candidate: Option<&'a IceCandidate>,
    },
    Bye,
}

/// Clients (the Rust client, tests) send the typed message, never a JSON literal.
impl Serialize for ClientMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ClientMessage::Offer { sdp, session_id } => ClientWire::Offer {
                sdp,
                session_id: session_id.as_deref(),
            },
            ClientMessage::Candidate(c) => ClientWire::Candidate {
                candidate: c.as_ref(),
            },
            ClientMessage::Bye => ClientWire::Bye,
        }
        .serialize(s)
    }
}

/// A message to the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Session { id: String },
    Answer { sdp: String },
    Candidate { candidate: Option<IceCandidate> },
    Error { code: ErrorCode, message: String },
}

/// A rejected message: a code for programs and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct SignalError {
    pub code: ErrorCode,
    pub message: String,
}

impl SignalError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The `error` message to send back.
    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::Error {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

/// Parse one text message from the client.
pub fn parse_client_message(text: &str, max_len: usize) -> Result<ClientMessage, SignalError> {
    if text.len() > max_len {
        return Err(SignalError::new(
            ErrorCode::TooLarge,
            format!(
                "message of {} bytes is over the {max_len}-byte limit",
                text.len()
            ),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| SignalError::new(ErrorCode::BadJson, format!("not valid JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| {
        SignalError::new(ErrorCode::BadJson, "expected a JSON object with a \"type\"")
    })?;
    let ty = obj
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| SignalError::new(ErrorCode::BadJson, "missing string field \"type\""))?;
    match ty {
        "offer" => {
            let sdp = obj.get("sdp").and_then(|s| s.as_str()).ok_or_else(|| {
                SignalError::new(ErrorCode::BadMessage, "offer needs a string field \"sdp\"")
            })?;
            if !sdp.trim_start().starts_with("v=0") {
                return Err(SignalError::new(
                    ErrorCode::BadSdp,
                    "offer.sdp is not an SDP description (it must start with \"v=0\")",
                ));
            }
            let session_id = match obj.get("session_id") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(id)) => Some(id.clone()),
                Some(_) => {
                    return Err(SignalError::new(
                        ErrorCode::BadMessage,
                        "offer.session_id must be a string",
                    ));
                }
            };
            Ok(ClientMessage::Offer {
                sdp: sdp.to_string(),
                session_id,
            })
        }
        "candidate" => match obj.get("candidate") {
            None | Some(serde_json::Value::Null) => Ok(ClientMessage::Candidate(None)),
            Some(c) => {
                let cand: IceCandidate = serde_json::from_value(c.clone()).map_err(|e| {
                    SignalError::new(
                        ErrorCode::BadMessage,
                        format!("candidate must be {{candidate, sdpMid?, sdpMLineIndex?}}: {e}"),
                    )
                })?;
                if cand.candidate.is_empty() {
                    // Browsers signal end-of-candidates with an empty string too.
                    Ok(ClientMessage::Candidate(None))
                } else {
                    Ok(ClientMessage::Candidate(Some(cand)))
                }
            }
        },
        "bye" => Ok(ClientMessage::Bye),
        other => Err(SignalError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown message type {:?} (expected offer, candidate or bye)",
                truncate(other, 40)
            ),
        )),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Where one socket's negotiation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Negotiation {
    #[default]
    AwaitingOffer,
    Negotiated,
    Closed,
}

/// What the connection should do with a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Build a peer for this offer and answer it.
    Answer {
        sdp: String,
        session_id: Option<String>,
    },
    AddCandidate(Option<IceCandidate>),
    Close,
}

impl Negotiation {
    /// Decide what `msg` means now. The state advances to `Negotiated` only
    /// when the caller reports success with [`Negotiation::answered`], so a
    /// bad SDP leaves the socket free to try again.
    pub fn on_message(&mut self, msg: ClientMessage) -> Result<Action, SignalError> {
        match (*self, msg) {
            (Negotiation::Closed, _) => Err(SignalError::new(
                ErrorCode::BadMessage,
                "the session has ended",
            )),
            (_, ClientMessage::Bye) => {
                *self = Negotiation::Closed;
                Ok(Action::Close)
            }
            (Negotiation::AwaitingOffer, ClientMessage::Offer { sdp, session_id }) => {
                Ok(Action::Answer { sdp, session_id })
            }
            (Negotiation::Negotiated, ClientMessage::Offer { .. }) => Err(SignalError::new(
                ErrorCode::DuplicateOffer,
                "this socket already has a session; renegotiation is not supported (open a new socket)",
            )),
            (Negotiation::AwaitingOffer, ClientMessage::Candidate(_)) => Err(SignalError::new(
                ErrorCode::NoOffer,
                "candidate received before an offer",
            )),
            (Negotiation::Negotiated, ClientMessage::Candidate(c)) => Ok(Action::AddCandidate(c)),
        }
    }

    /// The offer was answered.
    pub fn answered(&mut self) {
        if *self == Negotiation::AwaitingOffer {
            *self = Negotiation::Negotiated;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ClientMessage, SignalError> {
        parse_client_message(s, DEFAULT_MAX_MESSAGE)
    }

    #[test]
    fn client_messages_round_trip() {
        let cand = IceCandidate {
            candidate: "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        };
        for m in [
            ClientMessage::Offer {
                sdp: "v=0\r\n".into(),
                session_id: None,
            },
            ClientMessage::Offer {
                sdp: "v=0\r\n".into(),
                session_id: Some("user-42-tab-1".into()),
            },
            ClientMessage::Candidate(Some(cand)),
            ClientMessage::Candidate(None),
            ClientMessage::Bye,
        ] {
            let text = serde_json::to_string(&m).unwrap();
            assert_eq!(parse(&text), Ok(m), "{text}");
        }
        assert_eq!(
            serde_json::to_string(&ClientMessage::Candidate(None)).unwrap(),
            r#"{"type":"candidate","candidate":null}"#
        );
    }

    #[test]
    fn parses_the_three_client_messages() {
        assert_eq!(
            parse(r#"{"type":"offer","sdp":"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"}"#).unwrap(),
            ClientMessage::Offer {
                sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n".into(),
                session_id: None,
            }
        );
        assert_eq!(
            parse(r#"{"type":"offer","sdp":"v=0","session_id":"user-42-tab"}"#).unwrap(),
            ClientMessage::Offer {
                sdp: "v=0".into(),
                session_id: Some("user-42-tab".into()),
            }
        );
        assert_eq!(
            parse(r#"{"type":"offer","sdp":"v=0","session_id":7}"#)
                .unwrap_err()
                .code,
            ErrorCode::BadMessage
        );
        let c = parse(
            r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
        )
        .unwrap();
        match c {
            ClientMessage::Candidate(Some(c)) => {
                assert_eq!(c.sdp_mid.as_deref(), Some("0"));
                assert_eq!(c.sdp_mline_index, Some(0));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(r#"{"type":"candidate","candidate":null}"#).unwrap(),
            ClientMessage::Candidate(None)
        );
        assert_eq!(
            parse(r#"{"type":"candidate","candidate":{"candidate":""}}"#).unwrap(),
            ClientMessage::Candidate(None)
        );
        assert_eq!(parse(r#"{"type":"bye"}"#).unwrap(), ClientMessage::Bye);
    }

    #[test]
    fn malformed_input_gets_stable_codes() {
        let code = |s: &str| parse(s).unwrap_err().code;
        assert_eq!(code("{not json"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"sdp":"v=0"}"#), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":7}"#), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"offer"}"#), ErrorCode::BadMessage);
        assert_eq!(code(r#"{"type":"offer","sdp":"hello"}"#), ErrorCode::BadSdp);
        assert_eq!(
            code(r#"{"type":"candidate","candidate":{"sdpMid":"0"}}"#),
            ErrorCode::BadMessage
        );
        let big = format!(r#"{{"type":"offer","sdp":"v=0{}"}}"#, "x".repeat(1 << 20));
        assert_eq!(code(&big), ErrorCode::TooLarge);
    }

    #[test]
    fn unknown_type_is_truncated_in_the_message() {
        let long = "y".repeat(500);
        let err = parse(&format!(r#"{{"type":"{long}"}}"#)).unwrap_err();
        assert!(err.message.len() < 200, "{}", err.message);
    }

    #[test]
    fn negotiation_order() {
        let mut n = Negotiation::default();
        let cand = ClientMessage::Candidate(None);
        assert_eq!(
            n.on_message(cand.clone()).unwrap_err().code,
            ErrorCode::NoOffer
        );
        let offer = ClientMessage::Offer {
            sdp: "v=0".into(),
            session_id: None,
        };
        assert!(matches!(
            n.on_message(offer.clone()),
            Ok(Action::Answer { .. })
        ));
        // Not answered yet (say the SDP failed): another offer is allowed.
        assert!(matches!(
            n.on_message(offer.clone()),
            Ok(Action::Answer { .. })
        ));
        n.answered();
        assert_eq!(
            n.on_message(offer).unwrap_err().code,
            ErrorCode::DuplicateOffer
        );
        assert_eq!(n.on_message(cand).unwrap(), Action::AddCandidate(None));
        assert_eq!(n.on_message(ClientMessage::Bye).unwrap(), Action::Close);
        assert_eq!(n, Negotiation::Closed);
    }

    #[test]
    fn server_messages_serialize_with_type_tags() {
        let s = serde_json::to_string(&ServerMessage::Error {
            code: ErrorCode::TooLarge,
            message: "m".into(),
        })
        .unwrap();
        assert_eq!(s, r#"{"type":"error","code":"too_large","message":"m"}"#);
        let s = serde_json::to_string(&ServerMessage::Session { id: "abc".into() }).unwrap();
        assert_eq!(s, r#"{"type":"session","id":"abc"}"#);
    }
}
