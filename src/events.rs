//! The typed messages of a conversation: what the server tells a client on
//! the `events` data channel, and what a client may send on it.
//!
//! One `#[serde(tag = "type")]` enum per direction, so every producer and
//! consumer (the speech loop, the session, `converse`, the Rust client, the
//! load tester, the bus mirror) builds and matches variants, never JSON
//! literals or event names as strings. `web/signaling.js` mirrors
//! [`Event`]. This module imports nothing from the rest of the crate.

use serde::{Deserialize, Serialize};

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
    pub llm_first_token_ms: Option<u64>,
    pub first_sentence_ms: Option<u64>,
    pub tts_first_audio_ms: Option<u64>,
    /// `endpoint_ms` + end of turn → first audio queued.
    pub total_ms: Option<u64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A server → client message on the `events` data channel.
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
        #[serde(default, skip_serializing_if = "is_false")]
        typed: bool,
    },
    /// Reply text as the LLM writes it.
    ReplyDelta { turn: u64, text: String },
    /// The whole reply; when `interrupted`, `text` is what the user heard.
    Reply {
        turn: u64,
        text: String,
        interrupted: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_id: Option<String>,
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
    /// Something went wrong; `code` is a stable error code when the error
    /// answers a client message.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        turn: Option<u64>,
        message: String,
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
            | Event::Prompt { turn, .. } => Some(*turn),
            Event::Timings(t) => Some(t.turn),
            Event::Error { turn, .. } => *turn,
            Event::Session { .. } | Event::State { .. } => None,
        }
    }
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
                r#"{"type":"transcript","turn":2,"text":"hi","final":true}"#,
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
