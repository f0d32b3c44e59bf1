//! The one configuration type: defaults that run out of the box, overridden by
//! a TOML file, then `VOXLOOP_*` environment variables, then command-line flags.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rtc::RtcSettings;

/// A configuration source had a bad value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}={value:?}: {message}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Which conversation pipeline a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PipelineKind {
    /// The voice assistant: VAD, end of turn, ASR, LLM, TTS, barge-in.
    Speech,
    /// Plays each utterance back after the user stops: a diagnostics mode
    /// that measures the media path alone.
    Echo,
}

impl std::str::FromStr for PipelineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "speech" => Ok(PipelineKind::Speech),
            "echo" => Ok(PipelineKind::Echo),
            other => Err(format!(
                "unknown pipeline {other:?} (expected: speech, echo)"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address (`VOXLOOP_BIND`). Port 0 picks a free port.
    pub bind: SocketAddr,
    /// NATS server for prompts and events (`VOXLOOP_NATS_URL`); empty turns NATS off.
    pub nats_url: String,
    /// Directory of the web page served at `/` (`VOXLOOP_WEB_DIR`).
    pub web_dir: PathBuf,
    /// Pipeline for new sessions (`VOXLOOP_PIPELINE`).
    pub pipeline: PipelineKind,
    /// Log filter in `tracing` syntax (`VOXLOOP_LOG`).
    pub log: String,
    /// Most concurrent sessions; further offers get a `busy` error (`VOXLOOP_MAX_SESSIONS`).
    pub max_sessions: usize,
    /// Largest accepted signaling message in bytes (`VOXLOOP_MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
    pub rtc: RtcConfig,
    pub audio: AudioConfig,
    pub echo: EchoConfig,
    pub models: ModelsConfig,
    pub inference: InferenceConfig,
    pub turn: TurnConfig,
    pub conversation: ConversationConfig,
    pub llm: LlmConfig,
    pub bus: BusConfig,
    pub prompts: PromptsConfig,
    pub intent: IntentConfig,
}

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
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            prefix: "voxloop".into(),
            consumer: "voxloop-server".into(),
            event_buffer: 1024,
            event_retention_hours: 24,
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
}

impl Default for PromptsConfig {
    fn default() -> Self {
        Self {
            grace_ms: 1500,
            reconnect_wait_ms: 15_000,
            max_chars: 1000,
            max_queued: 16,
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
    /// Speech needed to start a turn, ms.
    pub min_speech_ms: u32,
    /// Speech needed to interrupt the assistant, ms.
    pub barge_in_ms: u32,
    /// Silence after which Smart Turn is asked whether the turn is over, ms.
    pub short_pause_ms: u32,
    /// Silence that ends a turn whatever Smart Turn says, ms (`VOXLOOP_MAX_SILENCE_MS`).
    pub max_silence_ms: u32,
    /// Longest turn; a longer monologue is answered at this point, ms.
    pub max_turn_ms: u32,
    /// Use Smart Turn; off = plain silence threshold (`max_silence_ms`).
    pub smart_turn: bool,
    /// Start the LLM on the speculative transcript at the first pause, so a
    /// turn that ends on silence has its reply under way.
    pub speculative_reply: bool,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            vad_threshold: 0.5,
            min_speech_ms: 96,
            barge_in_ms: 250,
            short_pause_ms: 200,
            max_silence_ms: 1000,
            // Under Whisper's 30 s window, pre-roll included.
            max_turn_ms: 28_000,
            smart_turn: true,
            speculative_reply: true,
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
    /// An early clause this long is spoken before its sentence ends.
    pub min_clause_words: usize,
    /// Longest spoken reply, in words (0 = no cap): past it the LLM is
    /// stopped and the reply ends with the last whole clause.
    pub max_spoken_words: usize,
}

impl Default for ConversationConfig {
    fn default() -> Self {
        Self {
            system_prompt: crate::pipeline::llm::DEFAULT_SYSTEM_PROMPT.into(),
            busy_line: "One moment, please. I'm a little busy right now.".into(),
            fallback_line: "Sorry, I don't have a good answer to that.".into(),
            min_clause_words: 6,
            max_spoken_words: 50,
        }
    }
}

/// Threads and queues of the inference engines (2-core defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceConfig {
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
    pub tts_workers: usize,
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
            tts_workers: 1,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtcConfig {
    /// Local IPs to bind media sockets on (`VOXLOOP_RTC_BIND`, comma-separated).
    /// Loopback by default; add a real interface to serve other machines.
    pub udp_bind: Vec<IpAddr>,
    /// Public IPs to advertise for a 1:1 NAT (`VOXLOOP_RTC_PUBLIC_IPS`).
    pub public_ips: Vec<String>,
    /// ICE connectivity-check interval in ms (`VOXLOOP_RTC_ICE_CHECK_MS`).
    pub ice_check_interval_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioConfig {
    /// Opus bitrate of the audio we send, bits/s (`VOXLOOP_OPUS_BITRATE`).
    pub opus_bitrate: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EchoConfig {
    /// Frame level above which the echo gate hears speech, dBFS.
    pub threshold_dbfs: f32,
    /// Silence that ends an utterance, ms.
    pub hangover_ms: u32,
    /// Longest utterance kept; longer speech is played back in pieces, ms.
    pub max_utterance_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            nats_url: "nats://127.0.0.1:4222".into(),
            web_dir: PathBuf::from("web"),
            pipeline: PipelineKind::Speech,
            log: "info".into(),
            max_sessions: 64,
            max_message_bytes: crate::rtc::signaling::DEFAULT_MAX_MESSAGE,
            rtc: RtcConfig::default(),
            audio: AudioConfig::default(),
            echo: EchoConfig::default(),
            models: ModelsConfig::default(),
            inference: InferenceConfig::default(),
            turn: TurnConfig::default(),
            conversation: ConversationConfig::default(),
            llm: LlmConfig::default(),
            bus: BusConfig::default(),
            prompts: PromptsConfig::default(),
            intent: IntentConfig::default(),
        }
    }
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            udp_bind: vec![IpAddr::from([127, 0, 0, 1])],
            public_ips: vec![],
            ice_check_interval_ms: 20,
        }
    }
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            opus_bitrate: 48_000,
        }
    }
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            threshold_dbfs: -40.0,
            hangover_ms: 500,
            max_utterance_ms: 30_000,
        }
    }
}

fn parse_list<T: std::str::FromStr>(value: &str) -> Result<Vec<T>, String>
where
    T::Err: std::fmt::Display,
{
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<T>().map_err(|e| format!("{s:?}: {e}")))
        .collect()
}

/// Parse a duration flag: `500ms`, `30s`, `2m`, `1h`, `1.5s` or bare seconds.
/// Shared by every command that takes one (`say`, `intent-worker`, `loadtest`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 500ms, 2m or 1h"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_one<T: std::str::FromStr>(value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse::<T>().map_err(|e| e.to_string())
}

impl Config {
    /// Read a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Apply `VOXLOOP_*` variables. Takes the variables as an iterator so tests
    /// need not touch the process environment.
    pub fn apply_env<I>(&mut self, vars: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        for (var, value) in vars {
            if !var.starts_with("VOXLOOP_") {
                continue;
            }
            let res: Result<(), String> = match var.as_str() {
                "VOXLOOP_BIND" => parse_one(&value).map(|v| self.bind = v),
                "VOXLOOP_NATS_URL" => {
                    self.nats_url = value.clone();
                    Ok(())
                }
                "VOXLOOP_WEB_DIR" => {
                    self.web_dir = PathBuf::from(&value);
                    Ok(())
                }
                "VOXLOOP_PIPELINE" => parse_one(&value).map(|v| self.pipeline = v),
                "VOXLOOP_LOG" => {
                    self.log = value.clone();
                    Ok(())
                }
                "VOXLOOP_MAX_SESSIONS" => parse_one(&value).map(|v| self.max_sessions = v),
                "VOXLOOP_MAX_MESSAGE_BYTES" => {
                    parse_one(&value).map(|v| self.max_message_bytes = v)
                }
                "VOXLOOP_RTC_BIND" => parse_list(&value).map(|v| self.rtc.udp_bind = v),
                "VOXLOOP_RTC_PUBLIC_IPS" => parse_list::<IpAddr>(&value)
                    .map(|v| self.rtc.public_ips = v.iter().map(|ip| ip.to_string()).collect()),
                "VOXLOOP_RTC_ICE_CHECK_MS" => {
                    parse_one(&value).map(|v| self.rtc.ice_check_interval_ms = v)
                }
                "VOXLOOP_MODELS_DIR" => {
                    self.models.dir = PathBuf::from(&value);
                    Ok(())
                }
                "VOXLOOP_MODELS_PROFILE" => {
                    self.models.profile = value.clone();
                    Ok(())
                }
                "VOXLOOP_SYSTEM_PROMPT" => {
                    self.conversation.system_prompt = value.clone();
                    Ok(())
                }
                "VOXLOOP_MAX_SILENCE_MS" => parse_one(&value).map(|v| self.turn.max_silence_ms = v),
                "VOXLOOP_LLM_BACKEND" => match value.as_str() {
                    "embedded" => {
                        self.llm.backend = LlmBackendKind::Embedded;
                        Ok(())
                    }
                    "openai" => {
                        self.llm.backend = LlmBackendKind::Openai;
                        Ok(())
                    }
                    _ => Err("expected embedded or openai".to_string()),
                },
                "VOXLOOP_LLM_URL" => {
                    self.llm.url = value.clone();
                    Ok(())
                }
                "VOXLOOP_LLM_MODEL" => {
                    self.llm.model = value.clone();
                    Ok(())
                }
                "VOXLOOP_LLM_SLOTS" => parse_one(&value).map(|v| self.inference.llm_slots = v),
                "VOXLOOP_START_DEADLINE_MS" => {
                    parse_one(&value).map(|v| self.inference.start_deadline_ms = v)
                }
                "VOXLOOP_OPUS_BITRATE" => parse_one(&value).map(|v| self.audio.opus_bitrate = v),
                "VOXLOOP_NATS_PREFIX" => {
                    self.bus.prefix = value.clone();
                    Ok(())
                }
                "VOXLOOP_NATS_CONSUMER" => {
                    self.bus.consumer = value.clone();
                    Ok(())
                }
                "VOXLOOP_PROMPT_GRACE_MS" => parse_one(&value).map(|v| self.prompts.grace_ms = v),
                "VOXLOOP_PROMPT_RECONNECT_MS" => {
                    parse_one(&value).map(|v| self.prompts.reconnect_wait_ms = v)
                }
                "VOXLOOP_INTENT_QUIET_MS" => parse_one(&value).map(|v| self.intent.quiet_ms = v),
                // Read by the binary before the config exists, or by scripts.
                "VOXLOOP_CONFIG" | "VOXLOOP_CACHE_DIR" => Ok(()),
                _ => {
                    tracing::warn!(%var, "unknown VOXLOOP_ variable ignored");
                    Ok(())
                }
            };
            res.map_err(|message| ConfigError::Env {
                var: var.clone(),
                value: value.clone(),
                message,
            })?;
        }
        Ok(())
    }

    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rtc.udp_bind.is_empty() {
            return Err(ConfigError::Invalid(
                "rtc.udp_bind is empty: at least one media address is needed".into(),
            ));
        }
        if self.rtc.udp_bind.iter().any(|ip| ip.is_unspecified()) {
            return Err(ConfigError::Invalid(
                "rtc.udp_bind must list concrete addresses (0.0.0.0 / :: skip loopback in the WebRTC engine)".into(),
            ));
        }
        if !(6_000..=510_000).contains(&self.audio.opus_bitrate) {
            return Err(ConfigError::Invalid(format!(
                "audio.opus_bitrate {} is outside Opus' 6000..=510000",
                self.audio.opus_bitrate
            )));
        }
        if self.max_sessions == 0 {
            return Err(ConfigError::Invalid(
                "max_sessions must be at least 1".into(),
            ));
        }
        let prefix_ok = !self.bus.prefix.is_empty()
            && self.bus.prefix.split('.').all(|t| {
                !t.is_empty()
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !prefix_ok {
            return Err(ConfigError::Invalid(format!(
                "bus.prefix {:?} must be dot-separated tokens of letters, digits, '_' or '-'",
                self.bus.prefix
            )));
        }
        if self.bus.event_buffer == 0 || self.prompts.max_queued == 0 {
            return Err(ConfigError::Invalid(
                "bus.event_buffer and prompts.max_queued must be at least 1".into(),
            ));
        }
        if self.echo.hangover_ms < crate::FRAME_MS || self.echo.max_utterance_ms < 1000 {
            return Err(ConfigError::Invalid(
                "echo.hangover_ms must be >= 20 and echo.max_utterance_ms >= 1000".into(),
            ));
        }
        Ok(())
    }

    pub fn rtc_settings(&self) -> RtcSettings {
        RtcSettings {
            udp_bind: self.rtc.udp_bind.clone(),
            public_ips: self.rtc.public_ips.clone(),
            ice_check_interval: Duration::from_millis(self.rtc.ice_check_interval_ms.max(1)),
        }
    }

    /// The effective configuration as TOML, with credentials in URLs masked.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.nats_url = redact_url(&self.nats_url);
        shown.llm.url = redact_url(&self.llm.url);
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }
}

/// `nats://user:secret@host` → `nats://***@host`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_local() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.nats_url, "nats://127.0.0.1:4222");
        assert!(c.rtc.udp_bind.iter().all(|ip| ip.is_loopback()));
    }

    #[test]
    fn env_overrides_and_errors_name_the_variable() {
        let mut c = Config::default();
        c.apply_env(env(&[
            ("VOXLOOP_BIND", "127.0.0.1:0"),
            ("VOXLOOP_NATS_URL", "nats://u:p@127.0.0.1:4333"),
            ("VOXLOOP_RTC_BIND", "127.0.0.1, ::1"),
            ("HOME", "/root"),
        ]))
        .unwrap();
        assert_eq!(c.bind.port(), 0);
        assert_eq!(c.rtc.udp_bind.len(), 2);
        assert!(c.redacted_toml().contains("nats://***@127.0.0.1:4333"));
        assert!(!c.redacted_toml().contains("u:p"));
        let err = c
            .apply_env(env(&[("VOXLOOP_MAX_SESSIONS", "many")]))
            .unwrap_err();
        assert!(err.to_string().contains("VOXLOOP_MAX_SESSIONS"), "{err}");
    }

    #[test]
    fn file_layer_and_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("voxloop-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "bind = \"127.0.0.1:9999\"\n[echo]\nhangover_ms = 300\n",
        )
        .unwrap();
        let c = Config::from_file(&good).unwrap();
        assert_eq!(c.bind.port(), 9999);
        assert_eq!(c.echo.hangover_ms, 300);
        assert_eq!(c.max_sessions, 64, "unset keys keep defaults");
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "bnid = \"x\"\n").unwrap();
        assert!(matches!(
            Config::from_file(&bad),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn wildcard_media_bind_is_rejected() {
        let mut c = Config::default();
        c.rtc.udp_bind = vec![IpAddr::from([0, 0, 0, 0])];
        assert!(c.validate().is_err());
    }
}
