//! The sections of [`super::Config`] (`[bus]`, `[prompts]`, `[turn]`, …)
//! with the defaults that run out of the box on a 2-core machine.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::DEFAULT_SYSTEM_PROMPT;

/// NATS names: subjects, streams and the durable consumer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// First token of every subject (`VOXLOOP_NATS_PREFIX`): `<prefix>.prompt.>`, `<prefix>.event.>`.
    pub prefix: String,
    /// Durable consumer of the prompt stream; servers sharing it share the work,
    /// so give each server its own (`VOXLOOP_NATS_CONSUMER`).
    pub consumer: String,
    /// Events waiting for NATS; more are dropped and counted (`bus_events_dropped_total`).
    pub event_buffer: usize,
    /// How long events stay in the event stream, in hours.
    pub event_retention_hours: u64,
    /// NATS credentials, at most one kind (`bus::creds`): a `.creds` file
    /// (`VOXLOOP_NATS_CREDS`), an nkey seed (`VOXLOOP_NATS_NKEY`), a token
    /// (`VOXLOOP_NATS_TOKEN`), or a user and password (`VOXLOOP_NATS_USER`,
    /// `VOXLOOP_NATS_PASSWORD`). Secrets are masked in the printed config.
    pub creds_file: Option<PathBuf>,
    pub nkey_seed: String,
    pub token: String,
    pub user: String,
    pub password: String,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            prefix: "voxloop".into(),
            consumer: "voxloop-server".into(),
            event_buffer: 1024,
            event_retention_hours: 24,
            creds_file: None,
            nkey_seed: String::new(),
            token: String::new(),
            user: String::new(),
            password: String::new(),
        }
    }
}

/// When and how proactive prompts are spoken.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptsConfig {
    /// Quiet time (user and assistant) before a prompt may start (`VOXLOOP_PROMPT_GRACE_MS`).
    pub grace_ms: u64,
    /// How long a prompt for an unknown session waits for that session id to
    /// (re)connect before it is dropped as `no_session` (`VOXLOOP_PROMPT_RECONNECT_MS`).
    pub reconnect_wait_ms: u64,
    /// Longest prompt text, in characters; longer ones are dropped as `too_large`.
    pub max_chars: usize,
    /// Prompts queued per session; a full queue drops the lowest priority.
    pub max_queued: usize,
    /// Deliveries of a NATS prompt whose synthesis keeps failing before it is
    /// given up (`dropped`, `tts_failed`) and terminated in JetStream.
    pub max_deliveries: u64,
    /// Wait before such a prompt is delivered again.
    pub retry_delay_ms: u64,
}

impl Default for PromptsConfig {
    fn default() -> Self {
        Self {
            grace_ms: 1500,
            reconnect_wait_ms: 15_000,
            max_chars: 1000,
            max_queued: 16,
            max_deliveries: 3,
            retry_delay_ms: 5000,
        }
    }
}

/// The intent worker: when it asks a follow-up question.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntentConfig {
    /// Silence after the last exchange before a follow-up (`VOXLOOP_INTENT_QUIET_MS`).
    pub quiet_ms: u64,
    /// Most follow-ups per session.
    pub max_followups: u32,
    /// How long a follow-up prompt stays valid, in seconds.
    pub expires_s: u64,
    /// How often the worker looks at its sessions, in ms.
    pub tick_ms: u64,
    /// Durable consumer of the event stream for the worker.
    pub consumer: String,
}

impl Default for IntentConfig {
    fn default() -> Self {
        Self {
            quiet_ms: 20_000,
            max_followups: 2,
            expires_s: 60,
            tick_ms: 500,
            consumer: "voxloop-intent".into(),
        }
    }
}

/// Where ASR, LLM and TTS run for `serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InferenceMode {
    /// In this process (one machine; the default).
    Local,
    /// On `voxloop worker` processes over NATS; VAD, Smart Turn and the
    /// knowledge base stay in the server (they run per 32 ms window).
    Nats,
}

impl std::str::FromStr for InferenceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Self::Local),
            "nats" => Ok(Self::Nats),
            _ => Err("expected local or nats".into()),
        }
    }
}

/// Which LLM answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmBackendKind {
    /// llama.cpp in this process, with the profile's GGUF model.
    Embedded,
    /// An OpenAI-compatible chat-completions server (Ollama and similar).
    Openai,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// `embedded` or `openai` (`VOXLOOP_LLM_BACKEND`).
    pub backend: LlmBackendKind,
    /// Base URL up to `/v1` (`VOXLOOP_LLM_URL`).
    pub url: String,
    /// Model name the server knows (`VOXLOOP_LLM_MODEL`).
    pub model: String,
    /// Name of the environment variable holding the API key, if any (never printed).
    pub api_key_env: Option<String>,
    /// Requests in flight to the server.
    pub concurrency: usize,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            backend: LlmBackendKind::Embedded,
            url: "http://127.0.0.1:11434/v1".into(),
            model: "qwen2.5:0.5b".into(),
            api_key_env: None,
            concurrency: 4,
        }
    }
}

/// Turn-taking thresholds (see `pipeline::turn_taking`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// Silero probability counted as speech.
    pub vad_threshold: f32,
    /// A VAD window quieter than this (RMS, dBFS) is silence without asking
    /// Silero, which costs a listening session most of its CPU. Silero
    /// still hears speech scaled down to -70 dBFS, none at -80 (tests/models.rs).
    /// -120 asks Silero for every window.
    pub vad_floor_dbfs: f32,
    /// Speech needed to start a turn, ms.
    pub min_speech_ms: u32,
    /// Speech over the assistant needed to interrupt it, ms
    /// (`VOXLOOP_BARGE_IN_MS`). The assistant's audio pauses as soon as the
    /// user starts (`min_speech_ms`); shorter speech (a cough, a "mm") lets
    /// it go on. A 250 ms burst of speech scores 288 ms with Silero's
    /// hangover (tests/conversation.rs), so 400 keeps four windows' margin.
    pub barge_in_ms: u32,
    /// Silence after which Smart Turn is asked whether the turn is over and
    /// the turn so far is transcribed, ms. 128 rather than Pipecat's 200:
    /// on the shared questions Smart Turn asked sooner ended them 77 ms
    /// sooner on average, with fewer turns ended in 600 ms pauses between
    /// words (23 of 50 against 29; tests/end_of_turn.rs).
    pub short_pause_ms: u32,
    /// Silence after which the turn so far is transcribed, before the
    /// first pause asks Smart Turn, ms (`VOXLOOP_LULL_MS`; 0, or not under
    /// `short_pause_ms`, = at the first pause, after Smart Turn). The
    /// transcript is then ready, or nearly, when Smart Turn ends the turn,
    /// which waits for it: the two at once on two cores slow each other.
    /// Only while no other session's work is queued; speech again cancels it.
    pub lull_ms: u32,
    /// Silence that ends a turn whatever Smart Turn says, ms (`VOXLOOP_MAX_SILENCE_MS`).
    pub max_silence_ms: u32,
    /// Silence that ends a turn Smart Turn called unfinished when the
    /// speculative transcript of it reads as a finished sentence, ms
    /// (`VOXLOOP_TRANSCRIPT_PAUSE_MS`; 0 = off). Such a turn is taken back,
    /// as one Smart Turn ended, if the user goes on before its reply is
    /// heard.
    pub transcript_pause_ms: u32,
    /// Longest turn; a longer monologue is answered at this point, ms.
    pub max_turn_ms: u32,
    /// Use Smart Turn; off = silence alone ends the turn (`max_silence_ms`,
    /// or `transcript_pause_ms` after a transcript that reads finished).
    pub smart_turn: bool,
    /// Start the LLM on the speculative transcript at the first pause, so a
    /// turn that ends on silence has its reply under way.
    pub speculative_reply: bool,
    /// While the user speaks, transcribe the turn so far each time this
    /// much more audio came, and let the LLM prefill its words, so the
    /// reply decodes only the question's rest after the end of turn, ms
    /// (`VOXLOOP_PREFILL_EVERY_MS`; 0 = off). Only while no other session's
    /// work is queued: it spends idle cores, never a busy machine's.
    pub prefill_every_ms: u32,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            vad_threshold: 0.5,
            vad_floor_dbfs: -80.0,
            min_speech_ms: 96,
            barge_in_ms: 400,
            short_pause_ms: 128,
            lull_ms: 32,
            max_silence_ms: 1000,
            transcript_pause_ms: 512,
            // Under Whisper's 30 s window, pre-roll included.
            max_turn_ms: 28_000,
            smart_turn: true,
            speculative_reply: true,
            prefill_every_ms: 1000,
        }
    }
}

/// What the assistant says and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConversationConfig {
    /// System prompt, written for speech (`VOXLOOP_SYSTEM_PROMPT`).
    pub system_prompt: String,
    /// Spoken when inference is overloaded.
    pub busy_line: String,
    /// Spoken when a reply has nothing speakable in it (empty = silence).
    pub fallback_line: String,
    /// A piece of a reply's first sentence may end at a comma once it has
    /// this many words.
    pub min_clause_words: usize,
    /// A reply's first piece may end once it has this many words, between
    /// two phrases, so the first audio starts before the first sentence is
    /// finished (0 = only at punctuation; `VOXLOOP_FIRST_PIECE_WORDS`).
    pub first_piece_words: usize,
    /// Longest spoken reply, in words (0 = no cap): past it the LLM is
    /// stopped and the reply ends with the last whole clause.
    pub max_spoken_words: usize,
}

impl Default for ConversationConfig {
    fn default() -> Self {
        Self {
            system_prompt: DEFAULT_SYSTEM_PROMPT.into(),
            busy_line: "One moment, please. I'm a little busy right now.".into(),
            fallback_line: "Sorry, I don't have a good answer to that.".into(),
            min_clause_words: 6,
            first_piece_words: 3,
            max_spoken_words: 50,
        }
    }
}

/// Threads and queues of the inference engines (2-core defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceConfig {
    /// `local` or `nats` (`VOXLOOP_INFERENCE`, `serve --inference`).
    pub mode: InferenceMode,
    pub asr_threads: i32,
    pub asr_workers: usize,
    /// Transcriptions that may wait; beyond it a turn gets the busy line.
    pub asr_queue: usize,
    /// Shrink Whisper's encoder window to the clip (much faster on short turns).
    pub asr_fit_audio_ctx: bool,
    pub llm_threads: i32,
    /// Conversations decoded together in one batch (`VOXLOOP_LLM_SLOTS`).
    pub llm_slots: u32,
    pub llm_queue: usize,
    pub llm_max_tokens: usize,
    pub llm_max_prompt_tokens: usize,
    /// 0 = greedy.
    pub llm_temperature: f32,
    /// llama.cpp's repetition penalty on the last `llm_repeat_last_n`
    /// generated tokens; 1 = off. Greedy decoding of a small model loops
    /// ("1/2 cup maple syrup" twelve times) without it.
    pub llm_repeat_penalty: f32,
    pub llm_repeat_last_n: i32,
    /// How much nicer than the rest of the process the ASR, LLM and TTS
    /// threads run (0..=19; 0 = same priority, the default), so the media
    /// runtime, VAD and Smart Turn come first when the cores are short
    /// (`VOXLOOP_BULK_NICE`). Off by default: VAD keeps real time on its own
    /// thread at 4 sessions without it, and niced ggml threads that meet at
    /// spinning barriers stall badly beside busy threads of the same
    /// process group (docs/BENCHMARKS.md).
    pub bulk_nice: i32,
    /// Give a transcription or the LLM fewer threads than `asr_threads` /
    /// `llm_threads` while other programs use the cores
    /// (`VOXLOOP_THREADS_FOLLOW_LOAD`): ggml's threads wait for each other
    /// by spinning, and beside a busy program two threads on two cores run
    /// many times slower than one (`pipeline::cpu_share`).
    pub threads_follow_load: bool,
    /// Smart Turn's threads. It runs once per pause, at the end of a turn
    /// when the other engines wait for it: on two cores two threads answer
    /// in about 51 ms against 81 with one (docs/BENCHMARKS.md).
    pub turn_threads: usize,
    pub tts_workers: usize,
    /// Piper's threads. A piece is synthesized alone (`pipeline::gate`),
    /// so it may use every core.
    pub tts_threads: usize,
    pub tts_queue: usize,
    /// Speaking rate of the voice: > 1 slower, < 1 faster (default: the voice's own).
    pub tts_length_scale: Option<f32>,
    /// A turn whose reply has not started (transcript and first LLM token)
    /// this long after the end of the turn gets the busy line instead of
    /// more silence; 0 = wait as long as the queues allow
    /// (`VOXLOOP_START_DEADLINE_MS`). Queues bound how much work waits, not
    /// how long: a full set of LLM slots can hold a turn for seconds.
    pub start_deadline_ms: u64,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            mode: InferenceMode::Local,
            asr_threads: 2,
            asr_workers: 1,
            asr_queue: 8,
            asr_fit_audio_ctx: true,
            llm_threads: 2,
            llm_slots: 4,
            llm_queue: 8,
            llm_max_tokens: 160,
            llm_max_prompt_tokens: 1536,
            llm_temperature: 0.0,
            llm_repeat_penalty: 1.15,
            llm_repeat_last_n: 64,
            bulk_nice: 0,
            threads_follow_load: true,
            turn_threads: 2,
            tts_workers: 1,
            tts_threads: 2,
            tts_queue: 16,
            tts_length_scale: None,
            start_deadline_ms: 3000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Directory holding `manifest.toml` and the fetched files (`VOXLOOP_MODELS_DIR`).
    pub dir: PathBuf,
    /// Model profile: `default`, `fast` (small LLM, for CI) or `large` (`VOXLOOP_MODELS_PROFILE`).
    pub profile: String,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("models"),
            profile: "default".into(),
        }
    }
}

/// Limits of the HTTP server (the `[http]` table). Without them a slowloris
/// client or a pile of idle sockets held connections forever, and shutdown
/// waited on them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A request's headers must arrive within this; an idle connection is
    /// closed after it too, ms (`VOXLOOP_HTTP_HEADER_TIMEOUT_MS`).
    pub header_timeout_ms: u64,
    /// A request's body must arrive within this, ms (`VOXLOOP_HTTP_BODY_TIMEOUT_MS`).
    pub body_timeout_ms: u64,
    /// Most open HTTP connections; more wait in the listen backlog
    /// (`VOXLOOP_HTTP_MAX_CONNECTIONS`). A connection upgraded to a
    /// WebSocket leaves the count: those are bounded by `ws_idle_timeout_ms`
    /// until they offer, and by `max_sessions` after.
    pub max_connections: usize,
    /// A signaling WebSocket that has no session and sends nothing this
    /// long is closed, ms (`VOXLOOP_WS_IDLE_TIMEOUT_MS`).
    pub ws_idle_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            max_connections: 4096,
            ws_idle_timeout_ms: 30_000,
        }
    }
}

/// How the server stops (the `[shutdown]` table).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long a drain may take after SIGTERM/Ctrl-C: turns and replies
    /// under way finish, then sessions end, and open connections get what
    /// is left of it, ms (`VOXLOOP_DRAIN_TIMEOUT_MS`).
    pub drain_timeout_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout_ms: 10_000,
        }
    }
}

/// One signing key of join tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthKey {
    /// The key's id, named by tokens in their `kid` header (rotation).
    pub kid: String,
    /// The HMAC secret, at least 32 bytes.
    pub secret: String,
}

/// Who may use the server (the `[auth]` table). With no key, auth is off,
/// which only a loopback bind allows (or `insecure_no_auth`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Token keys; any verifies, the first signs (`VOXLOOP_AUTH_KEY`:
    /// `SECRET` for one key with id `default`, or `KID:SECRET,KID:SECRET`).
    pub keys: Vec<AuthKey>,
    /// Origins besides the server's own that may open `/ws` and post to
    /// `/whip`, e.g. `https://app.example.org` (`VOXLOOP_ALLOWED_ORIGINS`).
    pub allowed_origins: Vec<String>,
    /// Accepted `Host` names (DNS rebinding); empty = loopback names on a
    /// loopback bind, any name otherwise (`VOXLOOP_ALLOWED_HOSTS`).
    pub allowed_hosts: Vec<String>,
    /// Serve a non-loopback address without auth (`--insecure-no-auth`).
    pub insecure_no_auth: bool,
}

/// Abuse limits (the `[limits]` table); docs/RELIABILITY.md says what a
/// client sees for each.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Live sessions per client IP (`VOXLOOP_SESSIONS_PER_IP`).
    pub sessions_per_ip: usize,
    /// Offers (`/ws` and `POST /whip`) per client IP per minute (`VOXLOOP_OFFERS_PER_MINUTE`).
    pub offers_per_minute: u32,
    /// Loopback clients skip the per-IP limits: load tests, and a reverse
    /// proxy on the same machine (which must then limit by itself).
    pub exempt_loopback: bool,
    /// Remote ICE candidates one signaling socket may send.
    pub candidates_per_session: usize,
    /// Typed texts per session per minute.
    pub texts_per_minute: u32,
    /// Longest `?wait=true` on the prompt API, ms; then it answers `queued`.
    pub prompt_wait_max_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            sessions_per_ip: 8,
            offers_per_minute: 30,
            exempt_loopback: true,
            candidates_per_session: 64,
            texts_per_minute: 30,
            prompt_wait_max_ms: 120_000,
        }
    }
}
