//! What servers and workers say to each other over NATS: typed messages
//! (serde enums, JSON) with an optional PCM attachment, framed as
//! `[u32 big-endian JSON length][JSON][PCM as i16 little-endian]`.
//!
//! Audio travels as 16-bit samples: it came from Opus or goes to Opus, so
//! nothing is lost that a listener or Whisper would notice, and a turn of
//! 28 s at 16 kHz (896 KB) fits in NATS's default 1 MB message.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::pipeline::llm::{ChatMessage, Completion, Finish};

/// A message could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    #[error("message shorter than its header ({0} bytes)")]
    Short(usize),
    #[error("bad message: {0}")]
    Json(String),
    #[error("odd PCM length {0}")]
    OddPcm(usize),
}

/// The work a request asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Job {
    /// Transcribe the attached 16 kHz audio.
    Asr,
    /// Continue conversation `key` (the worker keeps its KV cells under it).
    Llm {
        key: u64,
        messages: Vec<ChatMessage>,
        max_tokens: Option<usize>,
    },
    /// Speak `text`; audio comes back at 48 kHz.
    Tts { text: String },
    /// Sentence vectors of `texts` (a document's chunks), in order.
    Embed { texts: Vec<String> },
}

impl Job {
    pub fn role(&self) -> Role {
        match self {
            Job::Asr => Role::Asr,
            Job::Llm { .. } => Role::Llm,
            Job::Tts { .. } => Role::Tts,
            Job::Embed { .. } => Role::Embed,
        }
    }
}

/// The engines a worker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Asr,
    Llm,
    Tts,
    /// The knowledge base's document embedder.
    Embed,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Asr, Role::Llm, Role::Tts, Role::Embed];

    /// A turn needs a worker of this role; without one it gets the busy
    /// line. The embedder is not needed: a server embeds documents
    /// itself when no worker does.
    pub fn needed_for_turns(self) -> bool {
        self != Role::Embed
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Asr => "asr",
            Role::Llm => "llm",
            Role::Tts => "tts",
            Role::Embed => "embed",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "asr" => Ok(Role::Asr),
            "llm" => Ok(Role::Llm),
            "tts" => Ok(Role::Tts),
            "embed" => Ok(Role::Embed),
            other => Err(format!(
                "unknown role {other:?}: expected asr, llm, tts or embed"
            )),
        }
    }
}

/// A request to a worker's endpoint. The answer to the request itself
/// only says whether the worker took it ([`Accepted`], or a service error
/// with a [`Refusal`] code); the results stream to `stream_to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub job: Job,
    /// How long from its arrival the work may still start; a worker that
    /// cannot start it sooner refuses it, and never starts it late. A
    /// budget, not a time, so the machines' clocks need not agree.
    pub budget_ms: u64,
    /// Refuse (busy) unless the work is expected to start this soon: a
    /// turn's start deadline. The worker judges by its queue and how long
    /// its recent jobs took. Absent, the budget is the bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_within_ms: Option<u64>,
    /// The subject the worker publishes [`Chunk`]s on.
    pub stream_to: String,
}

/// A worker took the request: send cancels to its control subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    pub worker: String,
    pub job: u64,
}

/// Why a worker did not take a request (the NATS service error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its queue for the role is full: try another worker.
    Busy = 503,
    /// The budget was spent before it arrived.
    Expired = 408,
    /// It does not serve this role, or it is shutting down.
    Unavailable = 409,
    /// The message was not understood.
    Invalid = 400,
}

impl Refusal {
    pub fn code(self) -> usize {
        self as usize
    }

    pub fn from_code(code: usize) -> Refusal {
        match code {
            503 => Refusal::Busy,
            408 => Refusal::Expired,
            409 => Refusal::Unavailable,
            _ => Refusal::Invalid,
        }
    }
}

/// One message of a job's result stream, numbered from 0 so a lost one is
/// noticed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub seq: u32,
    pub part: Part,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    /// Still working (every [`super::HEARTBEAT`]); silence for
    /// [`super::DEAD_AFTER`] means the worker is gone.
    Heartbeat,
    /// The ASR result; ends the stream.
    Transcript { text: String, decode_ms: u64 },
    /// The next piece of an LLM reply.
    Token { text: String },
    /// Some of the speech (48 kHz PCM attached), in order.
    Audio,
    /// The sentence vectors of an embed job, one per text; ends the stream.
    Vectors { vectors: Vec<Vec<f32>> },
    /// The job is complete; ends the stream (LLM: its summary).
    Done { summary: Option<Summary> },
    /// The job failed; ends the stream.
    Failed { message: String },
    /// The request's budget ran out before the work could be done (or, for
    /// a reply, begun); ends the stream. The server hears "busy".
    Expired,
}

impl Part {
    /// The stream has no more after this.
    pub fn is_last(&self) -> bool {
        matches!(
            self,
            Part::Transcript { .. }
                | Part::Vectors { .. }
                | Part::Done { .. }
                | Part::Failed { .. }
                | Part::Expired
        )
    }
}

/// How an LLM generation ended, as [`Completion`] without the text (the
/// server has the tokens) and with times in ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub finish: String,
    pub prompt_tokens: usize,
    pub reused_tokens: usize,
    pub generated: usize,
    pub first_token_ms: Option<u64>,
    pub elapsed_ms: u64,
}

impl Summary {
    pub fn of(c: &Completion) -> Self {
        Self {
            finish: match &c.finish {
                Finish::Stop => "stop".into(),
                Finish::Length => "length".into(),
                Finish::Cancelled => "cancelled".into(),
                Finish::Error(e) => format!("error: {e}"),
            },
            prompt_tokens: c.prompt_tokens,
            reused_tokens: c.reused_tokens,
            generated: c.generated,
            first_token_ms: c.first_token.map(|d| d.as_millis() as u64),
            elapsed_ms: c.elapsed.as_millis() as u64,
        }
    }

    pub fn finish(&self) -> Finish {
        match self.finish.as_str() {
            "stop" => Finish::Stop,
            "length" => Finish::Length,
            "cancelled" => Finish::Cancelled,
            other => Finish::Error(other.trim_start_matches("error: ").to_string()),
        }
    }
}

/// Sent to a worker's control subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Stop job `job` (barge-in, hang-up): an LLM stops before its next
    /// token, queued work is skipped.
    Cancel { job: u64 },
    /// The conversation is over: release its KV cells.
    Forget { key: u64 },
    /// Prefill conversation `key`'s next prompt from its history while its
    /// user listens (see `pipeline::llm::Llm::warm`).
    Warm {
        key: u64,
        messages: Vec<ChatMessage>,
        /// The question heard so far (empty between questions); absent
        /// from older servers' messages.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        so_far: String,
    },
}

/// Frame `head` and `pcm` as one message.
pub fn encode<T: Serialize>(head: &T, pcm: &[f32]) -> Bytes {
    let json = serde_json::to_vec(head).unwrap_or_default();
    let mut out = BytesMut::with_capacity(4 + json.len() + 2 * pcm.len());
    out.put_u32(json.len() as u32);
    out.put_slice(&json);
    for s in pcm {
        out.put_i16_le((s.clamp(-1.0, 1.0) * 32767.0).round() as i16);
    }
    out.freeze()
}

/// Read a message framed by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, Vec<f32>), WireError> {
    let Some(len) = bytes.get(..4) else {
        return Err(WireError::Short(bytes.len()));
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let json = bytes.get(4..4 + len).ok_or(WireError::Short(bytes.len()))?;
    let head = serde_json::from_slice(json).map_err(|e| WireError::Json(e.to_string()))?;
    let pcm = &bytes[4 + len..];
    if !pcm.len().is_multiple_of(2) {
        return Err(WireError::OddPcm(pcm.len()));
    }
    let pcm = pcm
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    Ok((head, pcm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::llm::Role as ChatRole;

    #[test]
    fn messages_round_trip_with_their_audio() {
        let req = Request {
            job: Job::Llm {
                key: 7,
                messages: vec![ChatMessage::new(ChatRole::User, "hi")],
                max_tokens: Some(9),
            },
            budget_ms: 3000,
            start_within_ms: Some(2000),
            stream_to: "_INBOX.x".into(),
        };
        let bytes = encode(&req, &[]);
        assert_eq!(decode::<Request>(&bytes).unwrap(), (req, vec![]));
        let pcm = vec![0.0, 0.5, -0.5, 1.0, -1.0];
        let chunk = Chunk {
            seq: 3,
            part: Part::Audio,
        };
        let (back, audio) = decode::<Chunk>(&encode(&chunk, &pcm)).unwrap();
        assert_eq!(back, chunk);
        for (a, b) in pcm.iter().zip(&audio) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    /// The question heard so far rides along when there is one; a message
    /// without it (between questions, or from an older server) reads as
    /// having none.
    #[test]
    fn a_warm_up_carries_the_question_heard_so_far() {
        for so_far in ["", "What is the capital"] {
            let msg = Control::Warm {
                key: 3,
                messages: vec![ChatMessage::new(ChatRole::System, "Be brief.")],
                so_far: so_far.into(),
            };
            let bytes = encode(&msg, &[]);
            let text = String::from_utf8_lossy(&bytes);
            assert_eq!(text.contains("so_far"), !so_far.is_empty(), "{text}");
            assert_eq!(decode::<Control>(&bytes).unwrap(), (msg, vec![]));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x00\x00",
            b"\x00\x00\x00\x09{}",
            b"\x00\x00\x00\x02{}\x01",
            b"\x00\x00\x00\x02[]",
            b"\xff\xff\xff\xff",
        ];
        for bytes in cases {
            assert!(decode::<Request>(bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn summaries_keep_the_finish() {
        for f in [
            Finish::Stop,
            Finish::Length,
            Finish::Cancelled,
            Finish::Error("boom".into()),
        ] {
            let c = Completion {
                text: String::new(),
                finish: f.clone(),
                prompt_tokens: 1,
                reused_tokens: 0,
                generated: 2,
                first_token: None,
                elapsed: std::time::Duration::ZERO,
            };
            assert_eq!(Summary::of(&c).finish(), f);
        }
    }

    #[test]
    fn refusal_codes_round_trip() {
        for r in [
            Refusal::Busy,
            Refusal::Expired,
            Refusal::Unavailable,
            Refusal::Invalid,
        ] {
            assert_eq!(Refusal::from_code(r.code()), r);
        }
    }
}
