//! The one configuration type: defaults that run out of the box, overridden by
//! a TOML file, then `VOXLOOP_*` environment variables ([`env`]), then
//! command-line flags (`main.rs`). The sections and their defaults are in
//! [`sections`], [`media`] and [`kb`].
//!
//! This module imports nothing from the rest of the crate but its root
//! constants: every layer reads it, so it holds the defaults the upper
//! layers would otherwise own (the system prompt, the signaling message cap).

mod env;
mod kb;
mod media;
mod sections;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use env::{VARS, parse_duration};
pub use kb::KbConfig;
pub use media::{AudioConfig, EchoConfig, RtcConfig};
pub use sections::*;

use serde::{Deserialize, Serialize};

/// The default system prompt: written for speech, not for a chat window.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are voxloop, a friendly voice assistant. Your replies are spoken aloud, so answer in one or two short sentences of plain conversational English. Never use lists, markdown, code or emoji.";

/// Default cap on one signaling message; an SDP offer is a few KiB.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;

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
    pub http: HttpConfig,
    pub shutdown: ShutdownConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub kb: KbConfig,
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
            max_message_bytes: DEFAULT_MAX_MESSAGE,
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
            http: HttpConfig::default(),
            shutdown: ShutdownConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            kb: KbConfig::default(),
        }
    }
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
        if self.http.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "http.max_connections must be at least 1".into(),
            ));
        }
        if self.rtc.connect_timeout_ms < 100 {
            return Err(ConfigError::Invalid(format!(
                "rtc.connect_timeout_ms {} is too short to connect (at least 100)",
                self.rtc.connect_timeout_ms
            )));
        }
        if !(6_000..=510_000).contains(&self.audio.opus_bitrate) {
            return Err(ConfigError::Invalid(format!(
                "audio.opus_bitrate {} is outside Opus' 6000..=510000",
                self.audio.opus_bitrate
            )));
        }
        if !(0..=10).contains(&self.audio.opus_complexity) {
            return Err(ConfigError::Invalid(format!(
                "audio.opus_complexity {} is outside Opus' 0..=10",
                self.audio.opus_complexity
            )));
        }
        if ![20, 40, 60].contains(&self.audio.packet_ms) {
            return Err(ConfigError::Invalid(format!(
                "audio.packet_ms {} is not 20, 40 or 60",
                self.audio.packet_ms
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
        if self.bus.event_buffer == 0
            || self.prompts.max_queued == 0
            || self.prompts.max_deliveries == 0
        {
            return Err(ConfigError::Invalid(
                "bus.event_buffer, prompts.max_queued and prompts.max_deliveries must be at least 1"
                    .into(),
            ));
        }
        if self.echo.hangover_ms < crate::FRAME_MS || self.echo.max_utterance_ms < 1000 {
            return Err(ConfigError::Invalid(
                "echo.hangover_ms must be >= 20 and echo.max_utterance_ms >= 1000".into(),
            ));
        }
        let inf = &self.inference;
        if !(inf.llm_repeat_penalty.is_finite() && inf.llm_repeat_penalty > 0.0)
            || inf.llm_repeat_last_n < 0
        {
            return Err(ConfigError::Invalid(format!(
                "inference.llm_repeat_penalty {} must be > 0 (1 = off) and llm_repeat_last_n {} >= 0",
                inf.llm_repeat_penalty, inf.llm_repeat_last_n
            )));
        }
        if !(0..=19).contains(&inf.bulk_nice) {
            return Err(ConfigError::Invalid(format!(
                "inference.bulk_nice {} must be within 0..=19",
                inf.bulk_nice
            )));
        }
        Ok(())
    }

    /// The effective configuration as TOML, with credentials in URLs masked.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.nats_url = redact_url(&self.nats_url);
        shown.llm.url = redact_url(&self.llm.url);
        for k in &mut shown.auth.keys {
            k.secret = "***".into();
        }
        for secret in [
            &mut shown.bus.nkey_seed,
            &mut shown.bus.token,
            &mut shown.bus.password,
        ] {
            if !secret.is_empty() {
                *secret = "***".into();
            }
        }
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
    use std::net::IpAddr;

    #[test]
    fn defaults_are_valid_and_local() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.nats_url, "nats://127.0.0.1:4222");
        assert!(c.rtc.udp_bind.iter().all(|ip| ip.is_loopback()));
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

    #[test]
    fn a_repetition_penalty_must_be_positive() {
        for (penalty, last_n, ok) in [
            (1.15, 64, true),
            (1.0, 0, true),
            (0.0, 64, false),
            (f32::NAN, 64, false),
            (1.1, -1, false),
        ] {
            let mut c = Config::default();
            c.inference.llm_repeat_penalty = penalty;
            c.inference.llm_repeat_last_n = last_n;
            assert_eq!(c.validate().is_ok(), ok, "{penalty} {last_n}");
        }
    }
}
