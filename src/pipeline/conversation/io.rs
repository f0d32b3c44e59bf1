//! The conversation's interface: its settings, what goes in ([`Input`]) and
//! what comes out ([`Action`]).

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, TurnConfig};
use crate::events::{Event, Source};
use crate::kb::support::Vocabulary;
use crate::pipeline::llm::ChatMessage;
use crate::prompt::{Prompt, PromptOutcome};

/// The settings a conversation needs, taken from [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub turn: TurnConfig,
    pub system_prompt: String,
    pub busy_line: String,
    /// Said when a reply has nothing speakable (empty = say nothing).
    pub fallback_line: String,
    /// Where a reply's first piece may end early.
    pub chunking: crate::text::ChunkRules,
    /// Longest spoken reply in words (0 = no cap).
    pub max_spoken_words: usize,
    /// A turn whose reply has not started by then gets the busy line.
    pub start_deadline: Option<Duration>,
    /// Start the LLM on the speculative transcript at the first pause.
    pub speculative_reply: bool,
    pub prompt_grace: Duration,
    pub max_queued_prompts: usize,
    /// Check a grounded reply's numbers and names against its notes
    /// (`kb.check_replies`).
    pub check_replies: bool,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Self {
        let deadline = cfg.inference.start_deadline_ms;
        Self {
            turn: cfg.turn.clone(),
            system_prompt: cfg.conversation.system_prompt.clone(),
            busy_line: cfg.conversation.busy_line.clone(),
            fallback_line: cfg.conversation.fallback_line.clone(),
            chunking: crate::text::ChunkRules {
                min_clause_words: cfg.conversation.min_clause_words,
                first_piece_words: cfg.conversation.first_piece_words,
            },
            max_spoken_words: cfg.conversation.max_spoken_words,
            start_deadline: (deadline > 0).then(|| Duration::from_millis(deadline)),
            speculative_reply: cfg.turn.speculative_reply,
            prompt_grace: Duration::from_millis(cfg.prompts.grace_ms),
            max_queued_prompts: cfg.prompts.max_queued,
            check_replies: cfg.kb.check_replies,
        }
    }
}

/// A transcript as the conversation needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    pub text: String,
    /// Whisper's own decode time.
    pub decode: Duration,
}

/// Why a job failed: `Busy` means its queue refused it (the busy line).
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Busy,
    Failed(String),
}

/// What the playout queue reports: how much of `reply` the user has heard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Playout {
    /// The reply whose audio played last.
    pub reply: u64,
    /// Its samples played so far (48 kHz).
    pub played: usize,
    /// Nothing is waiting to play.
    pub idle: bool,
}

/// Something that happened, fed to [`Conversation::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// One VAD window of 16 kHz audio and Silero's speech probability for it.
    Window {
        pcm: Vec<f32>,
        prob: f32,
    },
    /// Smart Turn's answer for pause `pause`.
    TurnPredicted {
        pause: u64,
        complete: bool,
    },
    /// The result of ASR job `job`.
    Transcript {
        job: u64,
        result: Result<Heard, Failure>,
    },
    LlmToken {
        reply: u64,
        text: String,
    },
    /// The knowledge base was searched for `reply` before its LLM started:
    /// the chunks given to it and the time the search took.
    Retrieved {
        reply: u64,
        sources: Vec<Source>,
        kb: Duration,
        /// Every word the LLM was given, when it was given notes: what the
        /// reply's numbers and names must come from
        /// ([`crate::kb::support`]).
        vocabulary: Option<Arc<Vocabulary>>,
    },
    /// The LLM finished `reply` (or its stream ended).
    LlmDone {
        reply: u64,
    },
    /// The LLM refused or failed to start `reply`.
    LlmFailed {
        reply: u64,
        failure: Failure,
    },
    /// Piece `piece` of `reply`, synthesized and resampled to 48 kHz;
    /// `None` when synthesis failed (the piece is skipped).
    Synthesized {
        reply: u64,
        piece: usize,
        pcm: Option<Vec<f32>>,
    },
    Playout(Playout),
    /// Whether other sessions' inference work is queued (the shell's view of
    /// the engines' queues): only then does the start deadline shed a turn.
    Load {
        others_waiting: bool,
    },
    /// A proactive prompt; `ticket` comes back in [`Action::AnswerPrompt`].
    Prompt {
        prompt: Prompt,
        ticket: u64,
    },
    /// A typed user message.
    Text(String),
    /// Time passed (see [`Conversation::poll_timeout`]).
    Tick,
}

/// Counters the caller keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Utterance,
    BargeIn,
    /// Speech over the assistant too short to interrupt it: the held reply
    /// went on.
    HoldResumed,
    /// A turn ended early (Smart Turn, or a transcript that read finished)
    /// went on before its reply was heard.
    TurnContinued,
    BusyLine,
    /// A grounded reply stated a number or name its notes lack.
    Unsupported,
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send an event to the client (and the bus mirror).
    Emit(Event),
    /// Transcribe 16 kHz `audio` as job `job`, then feed [`Input::Transcript`].
    StartAsr {
        job: u64,
        audio: Vec<f32>,
    },
    /// Nobody waits for `job` any more: drop it.
    CancelAsr {
        job: u64,
    },
    /// Ask Smart Turn whether the turn so far is complete.
    PredictTurn {
        pause: u64,
        audio: Vec<f32>,
    },
    CancelTurnPrediction,
    /// Generate a reply to `messages`; feed its tokens back.
    StartLlm {
        reply: u64,
        messages: Vec<ChatMessage>,
    },
    /// Stop generating before the next token.
    CancelLlm {
        reply: u64,
    },
    /// Nothing is generating for this conversation and the history has
    /// changed, or the user is speaking: the LLM may prefill `messages`
    /// (the history) ahead of the next question, followed by `so_far`, the
    /// start of that question heard so far (empty between turns). Only a
    /// hint; nothing comes back.
    WarmLlm {
        messages: Vec<ChatMessage>,
        so_far: String,
    },
    /// Synthesize one piece; results must come back in piece order.
    Synthesize {
        reply: u64,
        piece: usize,
        text: String,
    },
    /// Drop `reply`'s pieces waiting for or in synthesis.
    CancelSynthesis {
        reply: u64,
    },
    /// Queue 48 kHz audio for playout, tagged with its reply.
    Play {
        reply: u64,
        pcm: Vec<f32>,
    },
    /// Queue the pre-synthesized busy line.
    PlayBusyLine {
        reply: u64,
    },
    /// Drop all audio waiting to play, at once (and end a hold).
    Flush,
    /// Pause the playout where it is (`true`: the user started speaking
    /// over the assistant) or let it go on (`false`: it was a cough).
    Hold(bool),
    /// Report a prompt's fate to whoever delivered it.
    AnswerPrompt {
        ticket: u64,
        outcome: PromptOutcome,
    },
    Count(Count),
}
