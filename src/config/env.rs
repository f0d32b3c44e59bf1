//! The `VOXLOOP_*` environment layer: one table row per variable, and the
//! text parsers it shares with the command line (`parse_duration`).
//!
//! Why a table and not clap's `env` attributes: the layer sits between the
//! TOML file and the flags for every subcommand, most variables have no
//! flag, a bad value must name its variable, an unknown `VOXLOOP_*` name is
//! worth a warning, and tests pass the variables in rather than touching the
//! process environment. Clap's `env` reads the process environment and
//! reports a bad value as a bad flag; it serves the one variable that must
//! be read before there is a config, `VOXLOOP_CONFIG` (in `main.rs`).

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use super::{Config, ConfigError, LlmBackendKind};

/// Sets one field from a variable's text, or says what is wrong with it.
type Setter = fn(&mut Config, &str) -> Result<(), String>;

/// Every variable the layer reads, with the field it sets.
pub const VARS: &[(&str, Setter)] = &[
    ("VOXLOOP_BIND", |c, v| set(&mut c.bind, v)),
    ("VOXLOOP_NATS_URL", |c, v| text(&mut c.nats_url, v)),
    ("VOXLOOP_WEB_DIR", |c, v| {
        c.web_dir = v.into();
        Ok(())
    }),
    ("VOXLOOP_PIPELINE", |c, v| set(&mut c.pipeline, v)),
    ("VOXLOOP_LOG", |c, v| text(&mut c.log, v)),
    ("VOXLOOP_MAX_SESSIONS", |c, v| set(&mut c.max_sessions, v)),
    ("VOXLOOP_MAX_MESSAGE_BYTES", |c, v| {
        set(&mut c.max_message_bytes, v)
    }),
    ("VOXLOOP_RTC_BIND", |c, v| {
        c.rtc.udp_bind = parse_list(v)?;
        Ok(())
    }),
    ("VOXLOOP_RTC_PUBLIC_IPS", |c, v| {
        let ips: Vec<IpAddr> = parse_list(v)?;
        c.rtc.public_ips = ips.iter().map(|ip| ip.to_string()).collect();
        Ok(())
    }),
    ("VOXLOOP_RTC_DTX", |c, v| flag(&mut c.rtc.dtx, v)),
    ("VOXLOOP_RTC_ICE_CHECK_MS", |c, v| {
        set(&mut c.rtc.ice_check_interval_ms, v)
    }),
    ("VOXLOOP_HTTP_HEADER_TIMEOUT_MS", |c, v| {
        set(&mut c.http.header_timeout_ms, v)
    }),
    ("VOXLOOP_HTTP_BODY_TIMEOUT_MS", |c, v| {
        set(&mut c.http.body_timeout_ms, v)
    }),
    ("VOXLOOP_HTTP_MAX_CONNECTIONS", |c, v| {
        set(&mut c.http.max_connections, v)
    }),
    ("VOXLOOP_WS_IDLE_TIMEOUT_MS", |c, v| {
        set(&mut c.http.ws_idle_timeout_ms, v)
    }),
    ("VOXLOOP_DRAIN_TIMEOUT_MS", |c, v| {
        set(&mut c.shutdown.drain_timeout_ms, v)
    }),
    ("VOXLOOP_NATS_CREDS", |c, v| {
        c.bus.creds_file = Some(v.into());
        Ok(())
    }),
    ("VOXLOOP_NATS_NKEY", |c, v| text(&mut c.bus.nkey_seed, v)),
    ("VOXLOOP_NATS_TOKEN", |c, v| text(&mut c.bus.token, v)),
    ("VOXLOOP_NATS_USER", |c, v| text(&mut c.bus.user, v)),
    ("VOXLOOP_NATS_PASSWORD", |c, v| text(&mut c.bus.password, v)),
    ("VOXLOOP_SESSIONS_PER_IP", |c, v| {
        set(&mut c.limits.sessions_per_ip, v)
    }),
    ("VOXLOOP_OFFERS_PER_MINUTE", |c, v| {
        set(&mut c.limits.offers_per_minute, v)
    }),
    ("VOXLOOP_LIMITS_EXEMPT_LOOPBACK", |c, v| {
        set(&mut c.limits.exempt_loopback, v)
    }),
    ("VOXLOOP_PROMPT_WAIT_MAX_MS", |c, v| {
        set(&mut c.limits.prompt_wait_max_ms, v)
    }),
    ("VOXLOOP_AUTH_KEY", |c, v| {
        c.auth.keys = parse_keys(v)?;
        Ok(())
    }),
    ("VOXLOOP_ALLOWED_ORIGINS", |c, v| {
        c.auth.allowed_origins = parse_list(v)?;
        Ok(())
    }),
    ("VOXLOOP_ALLOWED_HOSTS", |c, v| {
        c.auth.allowed_hosts = parse_list(v)?;
        Ok(())
    }),
    ("VOXLOOP_INSECURE_NO_AUTH", |c, v| {
        set(&mut c.auth.insecure_no_auth, v)
    }),
    ("VOXLOOP_RTC_CONNECT_TIMEOUT_MS", |c, v| {
        set(&mut c.rtc.connect_timeout_ms, v)
    }),
    ("VOXLOOP_RTC_DISCONNECT_GRACE_MS", |c, v| {
        set(&mut c.rtc.disconnect_grace_ms, v)
    }),
    ("VOXLOOP_MODELS_DIR", |c, v| {
        c.models.dir = v.into();
        Ok(())
    }),
    ("VOXLOOP_MODELS_PROFILE", |c, v| {
        text(&mut c.models.profile, v)
    }),
    ("VOXLOOP_KB_DIR", |c, v| {
        c.kb.dir = (!v.is_empty()).then(|| v.into());
        Ok(())
    }),
    ("VOXLOOP_KB_INDEX_DIR", |c, v| {
        c.kb.index_dir = (!v.is_empty()).then(|| v.into());
        Ok(())
    }),
    ("VOXLOOP_KB_MAX_DOC_BYTES", |c, v| {
        set(&mut c.kb.max_doc_bytes, v)
    }),
    ("VOXLOOP_KB_TOP_K", |c, v| set(&mut c.kb.top_k, v)),
    ("VOXLOOP_KB_CHECK_REPLIES", |c, v| {
        set(&mut c.kb.check_replies, v)
    }),
    ("VOXLOOP_SYSTEM_PROMPT", |c, v| {
        text(&mut c.conversation.system_prompt, v)
    }),
    ("VOXLOOP_FIRST_PIECE_WORDS", |c, v| {
        set(&mut c.conversation.first_piece_words, v)
    }),
    ("VOXLOOP_MAX_SILENCE_MS", |c, v| {
        set(&mut c.turn.max_silence_ms, v)
    }),
    ("VOXLOOP_LULL_MS", |c, v| set(&mut c.turn.lull_ms, v)),
    ("VOXLOOP_TRANSCRIPT_PAUSE_MS", |c, v| {
        set(&mut c.turn.transcript_pause_ms, v)
    }),
    ("VOXLOOP_BARGE_IN_MS", |c, v| {
        set(&mut c.turn.barge_in_ms, v)
    }),
    ("VOXLOOP_PREFILL_EVERY_MS", |c, v| {
        set(&mut c.turn.prefill_every_ms, v)
    }),
    ("VOXLOOP_LLM_BACKEND", |c, v| {
        c.llm.backend = match v {
            "embedded" => LlmBackendKind::Embedded,
            "openai" => LlmBackendKind::Openai,
            _ => return Err("expected embedded or openai".into()),
        };
        Ok(())
    }),
    ("VOXLOOP_INFERENCE", |c, v| set(&mut c.inference.mode, v)),
    ("VOXLOOP_LLM_URL", |c, v| text(&mut c.llm.url, v)),
    ("VOXLOOP_LLM_MODEL", |c, v| text(&mut c.llm.model, v)),
    ("VOXLOOP_LLM_SLOTS", |c, v| {
        set(&mut c.inference.llm_slots, v)
    }),
    ("VOXLOOP_LLM_REPEAT_PENALTY", |c, v| {
        set(&mut c.inference.llm_repeat_penalty, v)
    }),
    ("VOXLOOP_BULK_NICE", |c, v| {
        set(&mut c.inference.bulk_nice, v)
    }),
    ("VOXLOOP_THREADS_FOLLOW_LOAD", |c, v| {
        flag(&mut c.inference.threads_follow_load, v)
    }),
    ("VOXLOOP_START_DEADLINE_MS", |c, v| {
        set(&mut c.inference.start_deadline_ms, v)
    }),
    ("VOXLOOP_OPUS_BITRATE", |c, v| {
        set(&mut c.audio.opus_bitrate, v)
    }),
    ("VOXLOOP_OPUS_COMPLEXITY", |c, v| {
        set(&mut c.audio.opus_complexity, v)
    }),
    ("VOXLOOP_AUDIO_PACKET_MS", |c, v| {
        set(&mut c.audio.packet_ms, v)
    }),
    ("VOXLOOP_NATS_PREFIX", |c, v| text(&mut c.bus.prefix, v)),
    ("VOXLOOP_NATS_CONSUMER", |c, v| text(&mut c.bus.consumer, v)),
    ("VOXLOOP_PROMPT_GRACE_MS", |c, v| {
        set(&mut c.prompts.grace_ms, v)
    }),
    ("VOXLOOP_PROMPT_RECONNECT_MS", |c, v| {
        set(&mut c.prompts.reconnect_wait_ms, v)
    }),
    ("VOXLOOP_INTENT_QUIET_MS", |c, v| {
        set(&mut c.intent.quiet_ms, v)
    }),
    // Read by the binary before the config exists, or by scripts.
    ("VOXLOOP_CONFIG", |_, _| Ok(())),
    ("VOXLOOP_CACHE_DIR", |_, _| Ok(())),
];

/// A parsed value (surrounding blanks ignored).
fn set<T: FromStr>(slot: &mut T, value: &str) -> Result<(), String>
where
    T::Err: std::fmt::Display,
{
    *slot = parse_one(value)?;
    Ok(())
}

/// A switch: 1/true/on or 0/false/off, any case.
fn flag(slot: &mut bool, value: &str) -> Result<(), String> {
    *slot = match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => true,
        "0" | "false" | "off" | "no" => false,
        other => return Err(format!("{other:?} is not on/off (1/0, true/false)")),
    };
    Ok(())
}

/// A string as given (a URL, a prompt: blanks may matter).
fn text(slot: &mut String, value: &str) -> Result<(), String> {
    *slot = value.to_string();
    Ok(())
}

fn parse_one<T: FromStr>(value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse::<T>().map_err(|e| e.to_string())
}

/// A comma-separated list; empty items are skipped.
fn parse_list<T: FromStr>(value: &str) -> Result<Vec<T>, String>
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

/// `SECRET` (one key, id `default`) or `KID:SECRET,KID:SECRET`.
fn parse_keys(value: &str) -> Result<Vec<super::AuthKey>, String> {
    let key = |kid: &str, secret: &str| super::AuthKey {
        kid: kid.to_string(),
        secret: secret.to_string(),
    };
    if !value.contains(',') && !value.contains(':') {
        return Ok(vec![key("default", value.trim())]);
    }
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once(':') {
            Some((kid, secret)) if !kid.is_empty() => Ok(key(kid, secret)),
            _ => Err("expected SECRET or KID:SECRET,KID:SECRET".to_string()),
        })
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

impl Config {
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
            let Some((_, setter)) = VARS.iter().find(|(name, _)| *name == var) else {
                tracing::warn!(%var, "unknown VOXLOOP_ variable ignored");
                continue;
            };
            setter(self, &value).map_err(|message| ConfigError::Env {
                var: var.clone(),
                // A bad secret must not land in a log.
                value: if matches!(
                    var.as_str(),
                    "VOXLOOP_AUTH_KEY"
                        | "VOXLOOP_NATS_NKEY"
                        | "VOXLOOP_NATS_TOKEN"
                        | "VOXLOOP_NATS_PASSWORD"
                ) {
                    "***".into()
                } else {
                    value.clone()
                },
                message,
            })?;
        }
        Ok(())
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
    fn env_overrides_and_errors_name_the_variable() {
        let mut c = Config::default();
        c.apply_env(env(&[
            ("VOXLOOP_BIND", "127.0.0.1:0"),
            ("VOXLOOP_NATS_URL", "nats://u:p@127.0.0.1:4333"),
            ("VOXLOOP_RTC_BIND", "127.0.0.1, ::1"),
            ("VOXLOOP_PIPELINE", "echo"),
            ("VOXLOOP_RTC_DTX", " Off"),
            ("VOXLOOP_LLM_BACKEND", "openai"),
            ("VOXLOOP_MODELS_DIR", "/m"),
            ("VOXLOOP_NOT_A_THING", "ignored"),
            ("HOME", "/root"),
        ]))
        .unwrap();
        assert_eq!(c.bind.port(), 0);
        assert_eq!(c.rtc.udp_bind.len(), 2);
        assert!(!c.rtc.dtx);
        assert_eq!(c.pipeline, super::super::PipelineKind::Echo);
        assert_eq!(c.llm.backend, LlmBackendKind::Openai);
        assert_eq!(c.models.dir, std::path::PathBuf::from("/m"));
        assert!(c.redacted_toml().contains("nats://***@127.0.0.1:4333"));
        assert!(!c.redacted_toml().contains("u:p"));
        for (var, bad) in [
            ("VOXLOOP_MAX_SESSIONS", "many"),
            ("VOXLOOP_LLM_BACKEND", "gpt"),
            ("VOXLOOP_RTC_PUBLIC_IPS", "1.2.3.4, nope"),
            ("VOXLOOP_RTC_DTX", "maybe"),
        ] {
            let err = c.apply_env(env(&[(var, bad)])).unwrap_err();
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
