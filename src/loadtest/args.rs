//! `voxloop loadtest` flags and their parsers.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Mode;
use crate::config::parse_duration;

/// `voxloop loadtest` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadtestArgs {
    /// Server to load, http://host:port. Loopback only unless --allow-remote.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Join token for a server with auth on (`voxloop token --grant admin`:
    /// admin also lets the report read `/metrics`).
    #[arg(long, env = "VOXLOOP_TOKEN")]
    pub token: Option<String>,
    /// Virtual users (concurrent sessions).
    #[arg(long, default_value_t = 1)]
    pub sessions: usize,
    /// How fast users join, N/s (e.g. 1/s, 0.5/s, 20/s).
    #[arg(long, default_value = "1/s", value_parser = parse_rate)]
    pub ramp: f64,
    /// How long to run (per step with --find-capacity): 60s, 2m, 500ms.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Turns per user before it hangs up; 0 = until the duration ends.
    #[arg(long, default_value_t = 0)]
    pub turns: u32,
    /// Directory with transcripts.tsv (file<TAB>[voice<TAB>]text) and the
    /// audio, or such a .tsv file (audio names relative to its directory).
    #[arg(long, default_value = "tests/data")]
    pub audio: PathBuf,
    /// conversation (speech pipeline), media (echo pipeline) or listen
    /// (speech pipeline, mostly silent users).
    #[arg(long, value_enum, default_value_t = Mode::Conversation)]
    pub mode: Mode,
    /// Pause after a reply before the next utterance: MIN..MAX or one value
    /// (default 1s..3s; 20s..60s with --mode listen, which also pauses
    /// before the first).
    #[arg(long, value_parser = parse_think)]
    pub think: Option<(Duration, Duration)>,
    /// A turn whose reply has not begun this long after the user stopped
    /// fails, as does a reply that stalls this long; one still playing twice
    /// this long after it began is cut short.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub turn_timeout: Duration,
    /// Jitter a received frame may have before it counts late (the depth of
    /// the jitter buffer the glitch count models).
    #[arg(long, default_value = "40ms", value_parser = parse_duration)]
    pub late_after: Duration,
    /// Output directory for loadtest.json, report.md and the plots
    /// (default loadtest-results/<unix time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed for utterance and think-time choices (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Ask the utterances in the order of the corpus (user k starts at the
    /// k-th) instead of at random, e.g. to ask what another client asked.
    #[arg(long)]
    pub in_order: bool,
    /// Step sessions up (doubling, then bisecting) until p95 voice-to-voice
    /// passes --p95-bound or failures pass --max-failure-pct; report the
    /// largest count that held.
    #[arg(long)]
    pub find_capacity: bool,
    /// p95 voice-to-voice a capacity step may reach.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub p95_bound: Duration,
    /// Failed (or busy-line) turns a capacity step may have, percent.
    #[arg(long, default_value_t = 1.0)]
    pub max_failure_pct: f64,
    /// Late received frames (percent) a capacity step may have: 0.5 finds
    /// how many sessions the media path holds (with --mode media).
    #[arg(long, default_value_t = 100.0)]
    pub max_late_pct: f64,
    /// Largest session count --find-capacity tries.
    #[arg(long, default_value_t = 32)]
    pub max_sessions: usize,
    /// Allow a target that is not on this machine's loopback.
    #[arg(long)]
    pub allow_remote: bool,
}

/// Parse `1/s`, `0.5/s`, `30/m` or a bare number (per second).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, per) = match s.split_once('/') {
        Some((n, "s")) => (n, 1.0),
        Some((n, "m")) => (n, 60.0),
        Some((_, u)) => return Err(format!("unknown rate unit {u:?} (use /s or /m)")),
        None => (s, 1.0),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad rate {s:?} (expected e.g. 1/s)"))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("rate must be positive: {s:?}"));
    }
    Ok(n / per)
}

/// `1s..3s` or a single duration.
pub fn parse_think(s: &str) -> Result<(Duration, Duration), String> {
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (parse_duration(a)?, parse_duration(b)?);
            if b < a {
                return Err(format!("think range {s:?} is backwards"));
            }
            Ok((a, b))
        }
        None => parse_duration(s).map(|d| (d, d)),
    }
}

/// Is `url`'s host on this machine's loopback?
pub fn is_loopback_url(url: &str) -> Result<bool, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| format!("bad URL {url:?} (expected http://host:port)"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(true);
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(ip.is_loopback()),
        Err(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_think_ranges() {
        assert_eq!(parse_rate("1/s"), Ok(1.0));
        assert_eq!(parse_rate("0.5/s"), Ok(0.5));
        assert_eq!(parse_rate("30/m"), Ok(0.5));
        assert_eq!(parse_rate("4"), Ok(4.0));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("1/h").is_err());
        assert!(parse_rate("fast").is_err());
        assert_eq!(
            parse_think("1s..3s"),
            Ok((Duration::from_secs(1), Duration::from_secs(3)))
        );
        assert_eq!(
            parse_think("0.5s"),
            Ok((Duration::from_millis(500), Duration::from_millis(500)))
        );
        assert!(parse_think("3s..1s").is_err());
    }

    #[test]
    fn only_loopback_targets() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.3.2.1:1/",
            "http://localhost:8080",
            "http://[::1]:8080",
            "ws://127.0.0.1:9/ws",
        ] {
            assert_eq!(is_loopback_url(ok), Ok(true), "{ok}");
        }
        for remote in [
            "http://192.0.2.10:8080",
            "http://10.0.0.1:8080",
            "http://example.invalid:8080",
            "http://[2001:db8::1]:80",
            "http://0.0.0.0:8080",
        ] {
            assert_eq!(is_loopback_url(remote), Ok(false), "{remote}");
        }
        assert!(is_loopback_url("ftp://127.0.0.1").is_err());
    }
}
