//! The typed messages of a conversation: what the server tells a client on
//! the `events` data channel, what a client may send on it, and the
//! conversation events on the bus.
//!
//! One `#[serde(tag = "type")]` enum per direction, so every producer and
//! consumer (the speech loop, the session, `converse`, the Rust client, the
//! load tester, the bus mirror, the intent worker, `say`) builds and matches
//! variants, never JSON literals or event names as strings.
//! `web/signaling.js` mirrors [`Event`].
//!
//! The bus carries the same [`Event`] enum, not a second one: the session
//! mirrors final transcripts and replies to the bus unchanged, and a bus
//! consumer matches the very variants a client matches. The bus-only kinds
//! (`session.started`, `session.ended`, `prompt.spoken`, `prompt.dropped`)
//! are variants of it too, which the data channel never carries. A bus
//! message is a [`BusEvent`]: the event plus an envelope (session, sequence,
//! time); its subject suffix is [`Event::kind`], the `type` tag.
//!
//! This module imports nothing from the rest of the crate but two leaves:
//! the prompt drop reasons and the error codes.

use serde::{Deserialize, Serialize};

pub use crate::error_code::ErrorCode;
use crate::prompt::DropReason;

/// The `type` tag of each event: the subject suffix on the bus
/// (`<prefix>.event.<kind>`), for subscriptions. [`Event::kind`] returns them.
pub mod kind {
    pub const SESSION: &str = "session";
    pub const STATE: &str = "state";
    pub const TRANSCRIPT: &str = "transcript";
    pub const REPLY_DELTA: &str = "reply_delta";
    pub const REPLY: &str = "reply";
    pub const BARGE_IN: &str = "barge_in";
    pub const TIMINGS: &str = "timings";
    pub const BUSY: &str = "busy";
    pub const PROMPT: &str = "prompt";
    pub const ERROR: &str = "error";
    pub const DRAINING: &str = "draining";
    pub const SESSION_STARTED: &str = "session.started";
    pub const SESSION_ENDED: &str = "session.ended";
    pub const PROMPT_SPOKEN: &str = "prompt.spoken";
    pub const PROMPT_DROPPED: &str = "prompt.dropped";
}

/// What the assistant is doing, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Listening,
    UserSpeaking,
    Thinking,
    Speaking,
}

/// Why the busy line was played instead of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusyReason {
    /// An inference queue was full and refused the job.
    QueueFull,
    /// The reply had not started by `inference.start_deadline_ms`.
    Deadline,
}

impl BusyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BusyReason::QueueFull => "queue_full",
            BusyReason::Deadline => "deadline",
        }
    }
}

/// A knowledge-base chunk a reply was grounded on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Document name, as in `GET /kb/docs`.
    pub doc: String,
    /// Chunk number within the document, from 0.
    pub chunk: usize,
}

/// Where one turn's voice-to-voice time went (DESIGN.md §5), in ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub turn: u64,
    /// Silence the end-of-turn decision waited for.
    pub endpoint_ms: u32,
    /// End of turn → transcript ready (0 for typed turns).
    pub asr_ms: u64,
    /// Whisper's own decode time of the transcript used.
    pub asr_decode_ms: u64,
    /// Knowledge-base retrieval for this reply (absent without one). It
    /// overlaps the end-of-turn wait when it started on the speculative
    /// transcript.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kb_ms: Option<u64>,
    pub llm_first_token_ms: Option<u64>,
    pub first_sentence_ms: Option<u64>,
    pub tts_first_audio_ms: Option<u64>,
    /// `endpoint_ms` + end of turn → first audio queued.
    pub total_ms: Option<u64>,
}

/// A server → client message on the `events` data channel, and (the
/// mirrored kinds and the bus-only ones) a conversation event on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The data channel is open; `id` is the session id (to resume with).
    Session { id: String },
    /// The assistant's state changed. `utterance_ms` is set by the echo
    /// pipeline when it starts playing an utterance back.
    State {
        state: State,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        utterance_ms: Option<u64>,
    },
    /// What the user said (or typed, with `typed`).
    Transcript {
        turn: u64,
        text: String,
        #[serde(rename = "final")]
        is_final: bool,
        #[serde(default)]
        typed: bool,
    },
    /// Reply text as the LLM writes it.
    ReplyDelta { turn: u64, text: String },
    /// The whole reply; when `interrupted`, `text` is what the user heard.
    /// `sources` are the knowledge-base chunks the LLM was given.
    Reply {
        turn: u64,
        text: String,
        interrupted: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_id: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sources: Vec<Source>,
    },
    /// The reply of `turn` was cut off (the user spoke or typed over it, or
    /// an `interrupt` prompt took its place): the server has flushed its
    /// audio, and a client drops what it still holds of it. Pipecat's
    /// interruption frame; a `reply` with `interrupted` follows.
    BargeIn { turn: u64 },
    /// Stage timings of a turn that was answered.
    Timings(Timings),
    /// The busy line was played instead of an answer.
    Busy {
        turn: u64,
        text: String,
        reason: BusyReason,
    },
    /// A proactive prompt is being spoken.
    Prompt { id: String, text: String, turn: u64 },
    /// Something went wrong; `code` is set when the error answers a client
    /// message (the signaling codes; counted in `/metrics`).
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<ErrorCode>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        turn: Option<u64>,
        message: String,
    },
    /// The server is shutting down: the reply under way plays to its end,
    /// then the session ends within `deadline_ms`; reconnect (resuming the
    /// session id) to carry on with another server.
    Draining { deadline_ms: u64 },
    /// Bus only: the session's tasks run (`turn` is 0).
    #[serde(rename = "session.started")]
    SessionStarted { turn: u64 },
    /// Bus only: the session ended after `turn` turns.
    #[serde(rename = "session.ended")]
    SessionEnded { turn: u64 },
    /// Bus only: a prompt was spoken as assistant turn `turn`, `waited_ms`
    /// after it reached the session.
    #[serde(rename = "prompt.spoken")]
    PromptSpoken {
        turn: u64,
        prompt_id: String,
        waited_ms: u64,
    },
    /// Bus only: a prompt will not be spoken. `turn` is the session's last
    /// turn (`null` without a live session); `detail` explains a bad payload.
    #[serde(rename = "prompt.dropped")]
    PromptDropped {
        turn: Option<u64>,
        prompt_id: String,
        reason: DropReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
}

impl Event {
    pub fn state(state: State) -> Self {
        Event::State {
            state,
            utterance_ms: None,
        }
    }

    /// Whether this is a `state` event for `state`.
    pub fn is_state(&self, state: State) -> bool {
        matches!(self, Event::State { state: s, .. } if *s == state)
    }

    /// The turn this event belongs to, if it names one.
    pub fn turn(&self) -> Option<u64> {
        match self {
            Event::Transcript { turn, .. }
            | Event::ReplyDelta { turn, .. }
            | Event::Reply { turn, .. }
            | Event::BargeIn { turn }
            | Event::Busy { turn, .. }
            | Event::Prompt { turn, .. }
            | Event::SessionStarted { turn }
            | Event::SessionEnded { turn }
            | Event::PromptSpoken { turn, .. } => Some(*turn),
            Event::Timings(t) => Some(t.turn),
            Event::Error { turn, .. } | Event::PromptDropped { turn, .. } => *turn,
            Event::Session { .. } | Event::State { .. } | Event::Draining { .. } => None,
        }
    }

    /// The `type` tag: the subject suffix of this event on the bus.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Session { .. } => kind::SESSION,
            Event::State { .. } => kind::STATE,
            Event::Transcript { .. } => kind::TRANSCRIPT,
            Event::ReplyDelta { .. } => kind::REPLY_DELTA,
            Event::Reply { .. } => kind::REPLY,
            Event::BargeIn { .. } => kind::BARGE_IN,
            Event::Timings(_) => kind::TIMINGS,
            Event::Busy { .. } => kind::BUSY,
            Event::Prompt { .. } => kind::PROMPT,
            Event::Error { .. } => kind::ERROR,
            Event::Draining { .. } => kind::DRAINING,
            Event::SessionStarted { .. } => kind::SESSION_STARTED,
            Event::SessionEnded { .. } => kind::SESSION_ENDED,
            Event::PromptSpoken { .. } => kind::PROMPT_SPOKEN,
            Event::PromptDropped { .. } => kind::PROMPT_DROPPED,
        }
    }
}

/// A conversation event on the bus (`<prefix>.event.<kind>`): the event,
/// flattened, with who numbered it and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusEvent {
    /// `null` for a prompt outcome without a session (an empty broadcast).
    pub session_id: Option<String>,
    /// The session's event number, from 1 and without gaps; absent when no
    /// live session numbered the event (a prompt dropped before reaching one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// When it was published, RFC 3339.
    pub at: String,
    #[serde(flatten)]
    pub event: Event,
}

/// A client → server message on the `events` data channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// A typed message; the assistant answers it by voice.
    Text { text: String },
    /// Any `type` this server does not know (a newer client's message):
    /// parsed so the server can answer it with `unknown_type`.
    #[serde(other)]
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_stable() {
        let cases = [
            (
                Event::state(State::UserSpeaking),
                r#"{"type":"state","state":"user_speaking"}"#,
            ),
            (
                Event::Transcript {
                    turn: 2,
                    text: "hi".into(),
                    is_final: true,
                    typed: false,
                },
                r#"{"type":"transcript","turn":2,"text":"hi","final":true,"typed":false}"#,
            ),
            (
                Event::Busy {
                    turn: 1,
                    text: "One moment.".into(),
                    reason: BusyReason::QueueFull,
                },
                r#"{"type":"busy","turn":1,"text":"One moment.","reason":"queue_full"}"#,
            ),
            (
                Event::Error {
                    code: Some(ErrorCode::UnknownType),
                    turn: None,
                    message: "nope".into(),
                },
                r#"{"type":"error","code":"unknown_type","message":"nope"}"#,
            ),
            (
                Event::BargeIn { turn: 3 },
                r#"{"type":"barge_in","turn":3}"#,
            ),
            (
                Event::Timings(Timings {
                    turn: 1,
                    endpoint_ms: 200,
                    total_ms: Some(900),
                    ..Timings::default()
                }),
                r#"{"type":"timings","turn":1,"endpoint_ms":200,"asr_ms":0,"asr_decode_ms":0,"llm_first_token_ms":null,"first_sentence_ms":null,"tts_first_audio_ms":null,"total_ms":900}"#,
            ),
        ];
        for (ev, json) in cases {
            assert_eq!(serde_json::to_string(&ev).unwrap(), json);
            assert_eq!(serde_json::from_str::<Event>(json).unwrap(), ev);
        }
        // Readers take a transcript without `typed` (older servers) as spoken.
        let old: Event =
            serde_json::from_str(r#"{"type":"transcript","turn":2,"text":"hi","final":true}"#)
                .unwrap();
        assert!(matches!(old, Event::Transcript { typed: false, .. }));
    }

    /// One of every variant.
    fn every_kind() -> Vec<Event> {
        vec![
            Event::Session { id: "s".into() },
            Event::state(State::Listening),
            Event::Transcript {
                turn: 1,
                text: "hi".into(),
                is_final: true,
                typed: true,
            },
            Event::ReplyDelta {
                turn: 1,
                text: "He".into(),
            },
            Event::Reply {
                turn: 1,
                text: "Hello.".into(),
                interrupted: false,
                prompt_id: Some("p".into()),
                sources: vec![Source {
                    doc: "hours.md".into(),
                    chunk: 0,
                }],
            },
            Event::BargeIn { turn: 1 },
            Event::Timings(Timings::default()),
            Event::Busy {
                turn: 2,
                text: "One moment.".into(),
                reason: BusyReason::Deadline,
            },
            Event::Prompt {
                id: "p".into(),
                text: "Hi!".into(),
                turn: 3,
            },
            Event::Error {
                code: None,
                turn: Some(4),
                message: "failed".into(),
            },
            Event::Draining {
                deadline_ms: 10_000,
            },
            Event::SessionStarted { turn: 0 },
            Event::SessionEnded { turn: 4 },
            Event::PromptSpoken {
                turn: 3,
                prompt_id: "p".into(),
                waited_ms: 120,
            },
            Event::PromptDropped {
                turn: None,
                prompt_id: "q".into(),
                reason: DropReason::NoSession,
                detail: None,
            },
        ]
    }

    #[test]
    fn kind_is_the_type_tag() {
        for ev in every_kind() {
            let v = serde_json::to_value(&ev).unwrap();
            assert_eq!(v["type"], ev.kind(), "{v}");
            assert_eq!(serde_json::from_value::<Event>(v).unwrap(), ev);
        }
    }

    #[test]
    fn bus_payloads_keep_their_documented_fields() {
        let cases = [
            (
                BusEvent {
                    session_id: Some("s1".into()),
                    seq: Some(1),
                    at: "2026-01-01T00:00:00Z".into(),
                    event: Event::SessionStarted { turn: 0 },
                },
                r#"{"session_id":"s1","seq":1,"at":"2026-01-01T00:00:00Z","type":"session.started","turn":0}"#,
            ),
            (
                BusEvent {
                    session_id: Some("s1".into()),
                    seq: Some(2),
                    at: "2026-01-01T00:00:01Z".into(),
                    event: Event::Transcript {
                        turn: 1,
                        text: "hi".into(),
                        is_final: true,
                        typed: false,
                    },
                },
                r#"{"session_id":"s1","seq":2,"at":"2026-01-01T00:00:01Z","type":"transcript","turn":1,"text":"hi","final":true,"typed":false}"#,
            ),
            (
                BusEvent {
                    session_id: None,
                    seq: None,
                    at: "2026-01-01T00:00:02Z".into(),
                    event: Event::PromptDropped {
                        turn: None,
                        prompt_id: "p".into(),
                        reason: DropReason::NoSession,
                        detail: Some("nobody".into()),
                    },
                },
                r#"{"session_id":null,"at":"2026-01-01T00:00:02Z","type":"prompt.dropped","turn":null,"prompt_id":"p","reason":"no_session","detail":"nobody"}"#,
            ),
        ];
        for (ev, json) in cases {
            assert_eq!(serde_json::to_string(&ev).unwrap(), json);
            assert_eq!(serde_json::from_str::<BusEvent>(json).unwrap(), ev);
        }
        for event in every_kind() {
            let ev = BusEvent {
                session_id: Some("s".into()),
                seq: Some(9),
                at: "2026-01-01T00:00:00Z".into(),
                event,
            };
            let text = serde_json::to_string(&ev).unwrap();
            assert_eq!(
                serde_json::from_str::<BusEvent>(&text).unwrap(),
                ev,
                "{text}"
            );
        }
    }

    #[test]
    fn client_text_parses() {
        let m: ClientMessage = serde_json::from_str(r#"{"type":"text","text":"hello"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Text {
                text: "hello".into()
            }
        );
        assert_eq!(
            serde_json::from_str::<ClientMessage>(r#"{"type":"nope","x":1}"#).unwrap(),
            ClientMessage::Unknown
        );
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"text"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&ClientMessage::Text { text: "hi".into() }).unwrap(),
            r#"{"type":"text","text":"hi"}"#
        );
    }
}
