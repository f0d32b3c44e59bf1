//! `voxloop loadtest`: many virtual users against a running server, each a
//! real WebRTC client ([`user`]), with per-turn records, a summary
//! ([`report`]), SVG plots ([`plot`]) and a capacity search.
//!
//! The driver starts users at the ramp rate, samples concurrency once a
//! second, prints live progress, reads the server's `/metrics` at the end of
//! the ramp and at the end of the run (CPU, late frames, busy lines), and
//! stops users at the duration (the turn in progress may finish within its
//! timeout) or at once on Ctrl-C. Whatever happened, the JSON and the report
//! are written.
//!
//! Safety: only loopback targets unless `--allow-remote`; sessions, duration
//! and capacity steps are bounded; every user stops by itself.

pub mod corpus;
pub mod plot;
pub mod report;
pub mod stats;
pub mod user;

use std::io::{IsTerminal, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::parse_duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use report::{
    CapacityRecord, CapacityStep, Machine, Outcome, RunRecord, ServerSnapshot, ServerStats,
    Summary, TurnRecord,
};
use user::{Controls, UserConfig};

/// Most virtual users in one run (each is a WebRTC peer with its own sockets).
pub const MAX_SESSIONS: usize = 500;
/// Longest run (or capacity step).
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// What the load test cannot start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    #[error("{0}")]
    Args(String),
    #[error(
        "refusing to load {0}: not a loopback address (pass --allow-remote to load a server you run elsewhere)"
    )]
    Remote(String),
    #[error("audio {path}: {message}")]
    Corpus { path: PathBuf, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
    #[error("server {url}: {message}")]
    Server { url: String, message: String },
}

/// What the virtual users do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Talk to the assistant (`serve --pipeline speech`): full turns.
    #[default]
    Conversation,
    /// Against `serve --pipeline echo`: the media path alone.
    Media,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Conversation => "conversation",
            Mode::Media => "media",
        }
    }

    /// The server pipeline this mode needs.
    fn pipeline(self) -> &'static str {
        match self {
            Mode::Conversation => "speech",
            Mode::Media => "echo",
        }
    }
}

/// `voxloop loadtest` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadtestArgs {
    /// Server to load, http://host:port. Loopback only unless --allow-remote.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
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
    /// conversation (speech pipeline) or media (echo pipeline).
    #[arg(long, value_enum, default_value_t = Mode::Conversation)]
    pub mode: Mode,
    /// Pause after a reply before the next utterance: MIN..MAX or one value.
    #[arg(long, default_value = "1s..3s", value_parser = parse_think)]
    pub think: (Duration, Duration),
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

/// Seconds since `t0`.
pub fn secs_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

/// Live counters shared by the users and the progress display.
#[derive(Debug, Default)]
pub struct Live {
    pub sessions_up: AtomicUsize,
    /// Users past their connect attempt (connected or not).
    pub attempted: AtomicUsize,
    pub connect_failures: AtomicUsize,
    pub turns: AtomicU64,
    pub failed: AtomicU64,
    pub busy: AtomicU64,
    /// Voice-to-voice of replied turns so far, ms.
    pub latencies: Mutex<Vec<f64>>,
}

impl Live {
    pub fn record(&self, t: &TurnRecord) {
        match t.outcome {
            Outcome::Aborted => return,
            Outcome::Failed => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Busy => {
                self.busy.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Replied => {
                if let (Some(v), Ok(mut l)) = (t.voice_to_voice_ms, self.latencies.lock()) {
                    l.push(v);
                }
            }
        }
        self.turns.fetch_add(1, Ordering::Relaxed);
    }

    /// One progress line.
    fn line(&self, elapsed: Duration, target: usize) -> String {
        let (p50, p95) = self
            .latencies
            .lock()
            .map(|l| (stats::percentile(&l, 0.5), stats::percentile(&l, 0.95)))
            .unwrap_or((None, None));
        let s =
            |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{:.2}s", x / 1000.0));
        format!(
            "{:>4.0}s sessions {}/{} turns {} busy {} failed {} v2v p50 {} p95 {}",
            elapsed.as_secs_f64(),
            self.sessions_up.load(Ordering::Relaxed),
            target,
            self.turns.load(Ordering::Relaxed),
            self.busy.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed)
                + self.connect_failures.load(Ordering::Relaxed) as u64,
            s(p50),
            s(p95),
        )
    }
}

/// Settings of one run at a fixed session count.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub url: String,
    pub mode: Mode,
    pub sessions: usize,
    pub ramp_per_s: f64,
    pub duration: Duration,
    pub max_turns: u32,
    pub think: (Duration, Duration),
    pub turn_timeout: Duration,
    pub late_after: Duration,
    pub seed: u64,
    pub audio_dir: PathBuf,
    /// Print progress to stderr (a live line on a terminal, plain lines otherwise).
    pub progress: bool,
}

/// Where the live progress goes.
struct Progress {
    tty: bool,
    last_plain: Option<Instant>,
}

impl Progress {
    /// Plain lines this often when stderr is not a terminal.
    const PLAIN_EVERY: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last_plain: None,
        }
    }

    fn show(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
        } else if self
            .last_plain
            .is_none_or(|t| t.elapsed() >= Self::PLAIN_EVERY)
        {
            self.last_plain = Some(Instant::now());
            let _ = writeln!(err, "progress: {line}");
        }
    }

    fn done(&mut self, line: &str) {
        if self.tty {
            let _ = writeln!(std::io::stderr(), "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(std::io::stderr(), "progress: {line}");
        }
    }
}

async fn fetch_text(url: &str) -> Result<String, String> {
    let resp = tokio::time::timeout(Duration::from_secs(5), reqwest::get(url))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    resp.text().await.map_err(|e| e.to_string())
}

async fn snapshot(base: &str) -> Option<ServerSnapshot> {
    match fetch_text(&format!("{}/metrics", base.trim_end_matches('/'))).await {
        Ok(t) => Some(ServerSnapshot::parse(&t)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read /metrics; no server figures");
            None
        }
    }
}

/// Check the server is up and runs the pipeline `mode` needs.
pub async fn check_server(url: &str, mode: Mode) -> Result<(), LoadtestError> {
    let base = url.trim_end_matches('/');
    let text = fetch_text(&format!("{base}/healthz"))
        .await
        .map_err(|message| LoadtestError::Server {
            url: url.to_string(),
            message: format!("/healthz: {message}"),
        })?;
    let health: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| LoadtestError::Server {
            url: url.to_string(),
            message: format!("/healthz is not JSON: {e}"),
        })?;
    let pipeline = health["pipeline"].as_str().unwrap_or("");
    if pipeline != mode.pipeline() {
        return Err(LoadtestError::Server {
            url: url.to_string(),
            message: format!(
                "runs the {pipeline:?} pipeline; --mode {} needs `serve --pipeline {}`",
                mode.as_str(),
                mode.pipeline()
            ),
        });
    }
    Ok(())
}

/// Wait (bounded) until the server has no sessions left, so one capacity
/// step does not measure the tail of the previous one.
async fn wait_drained(url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if snapshot(url)
            .await
            .is_some_and(|s| s.active_sessions == 0.0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Run `settings.sessions` users once. `abort` (Ctrl-C) ends it early; the
/// record is complete either way.
pub async fn run_load(
    settings: &RunSettings,
    corpus: Arc<Vec<corpus::Utterance>>,
    abort: CancellationToken,
) -> RunRecord {
    let machine = Machine::probe();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let run_start = Instant::now();
    let live = Arc::new(Live::default());
    let stop = CancellationToken::new();
    let user_abort = abort.child_token();
    let (turn_tx, mut turn_rx) = mpsc::unbounded_channel();
    let controls = Controls {
        stop: stop.clone(),
        abort: user_abort.clone(),
        live: live.clone(),
        turns: turn_tx,
    };
    let mut users = tokio::task::JoinSet::new();
    let n = settings.sessions;
    for id in 0..n {
        let cfg = UserConfig {
            id,
            url: settings.url.clone(),
            mode: settings.mode,
            corpus: corpus.clone(),
            think: settings.think,
            turn_timeout: settings.turn_timeout,
            max_turns: settings.max_turns,
            late_after: settings.late_after,
            connect_timeout: Duration::from_secs(10),
            seed: settings.seed,
            opus_bitrate: 48_000,
            run_start,
        };
        let controls = controls.clone();
        let at = run_start + Duration::from_secs_f64(id as f64 / settings.ramp_per_s);
        users.spawn(async move {
            tokio::select! {
                _ = controls.abort.cancelled() => None,
                _ = controls.stop.cancelled() => None,
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {
                    Some(user::run_user(cfg, controls).await)
                }
            }
        });
    }
    drop(controls);

    let mut progress = Progress::new();
    let mut concurrency: Vec<(f64, usize)> = vec![(0.0, 0)];
    let mut ramp_done_s = None;
    let mut steady: Option<(Instant, ServerSnapshot, Option<f64>)> = None;
    let mut sessions_sum = 0.0;
    let mut sessions_samples = 0u32;
    let end_at = tokio::time::Instant::from_std(run_start + settings.duration);
    let mut sessions = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut interrupted = false;
    // Until the duration passes, the users are all done, or Ctrl-C.
    loop {
        tokio::select! {
            _ = abort.cancelled() => { interrupted = true; break; }
            _ = tokio::time::sleep_until(end_at) => break,
            r = users.join_next() => match r {
                Some(Ok(Some(s))) => sessions.push(s),
                Some(_) => {}
                None => break,
            },
            _ = tick.tick() => {
                let up = live.sessions_up.load(Ordering::Relaxed);
                concurrency.push((secs_since(run_start), up));
                if steady.is_some() {
                    sessions_sum += up as f64;
                    sessions_samples += 1;
                }
                if ramp_done_s.is_none() && live.attempted.load(Ordering::Relaxed) >= n {
                    ramp_done_s = Some(secs_since(run_start));
                    if let Some(snap) = snapshot(&settings.url).await {
                        steady = Some((Instant::now(), snap, crate::metrics::process_cpu_seconds("self")));
                    }
                }
                if settings.progress {
                    progress.show(&live.line(run_start.elapsed(), n));
                }
            }
        }
    }
    // The window the server figures cover ends here, before users hang up.
    let end_snap = match &steady {
        Some(_) => snapshot(&settings.url).await,
        None => None,
    };
    let client_cpu_end = crate::metrics::process_cpu_seconds("self");
    let window_end = Instant::now();
    stop.cancel();
    // Turns in progress may finish (a reply may take a timeout to begin and
    // two to play out); then they are cut.
    let grace = tokio::time::Instant::now() + settings.turn_timeout * 3 + Duration::from_secs(5);
    let mut grace_over = false;
    loop {
        tokio::select! {
            _ = abort.cancelled(), if !interrupted => { interrupted = true; user_abort.cancel(); }
            _ = tokio::time::sleep_until(grace), if !grace_over => {
                grace_over = true;
                user_abort.cancel();
            }
            r = users.join_next() => match r {
                Some(Ok(Some(s))) => sessions.push(s),
                Some(_) => {}
                None => break,
            },
        }
    }
    if interrupted {
        user_abort.cancel();
    }
    concurrency.push((
        secs_since(run_start),
        live.sessions_up.load(Ordering::Relaxed),
    ));
    let mut turns = Vec::new();
    while let Ok(t) = turn_rx.try_recv() {
        turns.push(t);
    }
    turns.sort_by(|a: &TurnRecord, b| a.t_start_s.total_cmp(&b.t_start_s));
    sessions.sort_by_key(|s| s.user);
    if settings.progress {
        progress.done(&live.line(run_start.elapsed(), n));
    }

    let (server, client_cpu_per_session_pct) = match (steady, end_snap) {
        (Some((t0, a, cpu0)), Some(b)) => {
            let window = window_end.duration_since(t0).as_secs_f64();
            let mean = if sessions_samples > 0 {
                sessions_sum / f64::from(sessions_samples)
            } else {
                live.sessions_up.load(Ordering::Relaxed) as f64
            };
            let client = match (cpu0, client_cpu_end) {
                (Some(x), Some(y)) if window > 0.0 && mean > 0.0 => {
                    Some((y - x) / window * 100.0 / mean)
                }
                _ => None,
            };
            (Some(ServerStats::between(&a, &b, window, mean)), client)
        }
        _ => (None, None),
    };
    let mut machine = machine;
    machine.load_end = report::load_average();
    let summary = Summary::of(&turns, &sessions);
    RunRecord {
        mode: settings.mode,
        url: settings.url.clone(),
        sessions: n,
        ramp_per_s: settings.ramp_per_s,
        duration_s: settings.duration.as_secs_f64(),
        max_turns: settings.max_turns,
        think_s: (
            settings.think.0.as_secs_f64(),
            settings.think.1.as_secs_f64(),
        ),
        late_after_ms: settings.late_after.as_secs_f64() * 1000.0,
        seed: settings.seed,
        audio_dir: settings.audio_dir.display().to_string(),
        utterances: corpus.len(),
        started_unix_s,
        ran_s: secs_since(run_start),
        interrupted,
        ramp_done_s,
        machine,
        concurrency,
        server,
        client_cpu_per_session_pct,
        summary,
        session_records: sessions,
        turns,
    }
}

/// Summary of the turns that started once every session was up (all turns
/// if the ramp never completed): what a capacity step is judged on.
pub fn steady_summary(run: &RunRecord) -> Summary {
    let from = run.ramp_done_s.unwrap_or(0.0);
    let steady: Vec<TurnRecord> = run
        .turns
        .iter()
        .filter(|t| t.t_start_s >= from)
        .cloned()
        .collect();
    let turns = if steady.is_empty() {
        &run.turns
    } else {
        &steady
    };
    Summary::of(turns, &run.session_records)
}

/// What a capacity step must stay within.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub p95_ms: f64,
    pub failure_pct: f64,
    pub late_pct: f64,
}

/// Did a capacity step hold?
pub fn step_held(s: &Summary, b: &Bounds) -> bool {
    s.voice_to_voice_ms.p95.is_some_and(|p| p <= b.p95_ms)
        && s.unanswered_pct <= b.failure_pct
        && s.late_pct <= b.late_pct
}

/// Next session count to try: double until a step fails, then bisect.
/// `None` when the answer is known.
pub fn next_step(held_max: usize, failed_min: Option<usize>, limit: usize) -> Option<usize> {
    match failed_min {
        None => {
            let next = (held_max.max(1) * 2).min(limit);
            (next > held_max).then_some(next)
        }
        Some(f) if f > held_max + 1 => Some(held_max + (f - held_max) / 2),
        Some(_) => None,
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), LoadtestError> {
    std::fs::write(path, text).map_err(|source| LoadtestError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Write the JSON, report and plots of one run; print their labelled lines.
fn write_run(out: &Path, run: &RunRecord) -> Result<(), LoadtestError> {
    let json = out.join("loadtest.json");
    report::write_json(&json, run).map_err(|source| LoadtestError::Write {
        path: json.clone(),
        source,
    })?;
    let plots = ["latency_over_time.svg", "latency_histogram.svg"];
    plot::latency_over_time(run, &out.join(plots[0]))?;
    plot::latency_histogram(run, &out.join(plots[1]))?;
    let md = out.join("report.md");
    let names: Vec<String> = plots.iter().map(|p| p.to_string()).collect();
    write_file(&md, &report::markdown(run, &names))?;
    print_run_lines(run);
    println!("json: {}", json.display());
    for p in plots {
        println!("plot: {}", out.join(p).display());
    }
    println!("report: {}", md.display());
    Ok(())
}

fn print_run_lines(run: &RunRecord) {
    println!("summary: {}", run.summary.line());
    if let Some(s) = &run.server {
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.2}"));
        println!(
            "server: sessions={:.1} cpu_pct={} cpu_per_session_pct={} late_frames_out_pct={:.2} busy_replies={:.0} client_cpu_per_session_pct={}",
            s.mean_sessions,
            opt(s.cpu_pct),
            opt(s.cpu_per_session_pct),
            s.late_pct,
            s.busy_replies,
            opt(run.client_cpu_per_session_pct),
        );
    }
    if run.mode == Mode::Media {
        println!(
            "media: sessions_held={}/{} late_pct={:.2} lost_frames={} glitches_per_min={:.2} echo_p50_ms={:.0}",
            run.summary.sessions_held,
            run.sessions,
            run.summary.late_pct,
            run.summary.glitches.lost_frames,
            run.summary.glitches_per_min,
            run.summary.voice_to_voice_ms.p50.unwrap_or(f64::NAN),
        );
    }
}

/// `voxloop loadtest`: returns the process exit code (0 done, 130 stopped
/// by Ctrl-C after writing the report).
pub async fn main(args: LoadtestArgs) -> Result<i32, LoadtestError> {
    if !args.allow_remote && !is_loopback_url(&args.url).map_err(LoadtestError::Args)? {
        return Err(LoadtestError::Remote(args.url.clone()));
    }
    if args.sessions == 0 || args.sessions > MAX_SESSIONS {
        return Err(LoadtestError::Args(format!(
            "--sessions must be 1..={MAX_SESSIONS}"
        )));
    }
    if args.max_sessions == 0 || args.max_sessions > MAX_SESSIONS {
        return Err(LoadtestError::Args(format!(
            "--max-sessions must be 1..={MAX_SESSIONS}"
        )));
    }
    if args.duration.is_zero() || args.duration > MAX_DURATION {
        return Err(LoadtestError::Args(format!(
            "--duration must be more than 0 and at most {} s",
            MAX_DURATION.as_secs()
        )));
    }
    if args.turn_timeout.is_zero() || args.turn_timeout > MAX_DURATION {
        return Err(LoadtestError::Args("--turn-timeout is out of range".into()));
    }
    check_server(&args.url, args.mode).await?;
    let corpus = Arc::new(corpus::load(&args.audio)?);
    let seed = args.seed.unwrap_or_else(rand::random);
    let out = args.out.clone().unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from("loadtest-results").join(now.to_string())
    });
    std::fs::create_dir_all(&out).map_err(|source| LoadtestError::Write {
        path: out.clone(),
        source,
    })?;
    let abort = CancellationToken::new();
    {
        let abort = abort.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping (Ctrl-C): finishing the report");
                abort.cancel();
            }
        });
    }
    let settings = RunSettings {
        url: args.url.trim_end_matches('/').to_string(),
        mode: args.mode,
        sessions: args.sessions,
        ramp_per_s: args.ramp,
        duration: args.duration,
        max_turns: args.turns,
        think: args.think,
        turn_timeout: args.turn_timeout,
        late_after: args.late_after,
        seed,
        audio_dir: args.audio.clone(),
        progress: true,
    };
    println!(
        "run: mode={} url={} seed={} utterances={} out={}",
        args.mode.as_str(),
        settings.url,
        seed,
        corpus.len(),
        out.display()
    );
    if !args.find_capacity {
        let run = run_load(&settings, corpus, abort.clone()).await;
        write_run(&out, &run)?;
        return Ok(if run.interrupted { 130 } else { 0 });
    }

    let bounds = Bounds {
        p95_ms: args.p95_bound.as_secs_f64() * 1000.0,
        failure_pct: args.max_failure_pct,
        late_pct: args.max_late_pct,
    };
    let mut cap = CapacityRecord {
        bounds,
        ..CapacityRecord::default()
    };
    let mut failed_min: Option<usize> = None;
    let mut n = args.sessions.min(args.max_sessions);
    loop {
        wait_drained(&settings.url, Duration::from_secs(15)).await;
        let step_settings = RunSettings {
            sessions: n,
            ..settings.clone()
        };
        let run = run_load(&step_settings, corpus.clone(), abort.clone()).await;
        let steady = steady_summary(&run);
        let held = !run.interrupted && step_held(&steady, &bounds);
        println!(
            "step: sessions={n} held={} turns={} v2v_p50_ms={:.0} v2v_p95_ms={:.0} failure_pct={:.1} unanswered_pct={:.1} late_pct={:.2}",
            if held { "yes" } else { "no" },
            steady.turns,
            steady.voice_to_voice_ms.p50.unwrap_or(f64::NAN),
            steady.voice_to_voice_ms.p95.unwrap_or(f64::NAN),
            steady.failure_pct,
            steady.unanswered_pct,
            steady.late_pct,
        );
        cap.steps.push(CapacityStep {
            sessions: n,
            held,
            steady,
            server: run.server,
        });
        let interrupted = run.interrupted;
        cap.runs.push(run);
        if interrupted {
            break;
        }
        if held {
            cap.capacity = cap.capacity.max(n);
        } else {
            failed_min = Some(failed_min.map_or(n, |f| f.min(n)));
        }
        match next_step(cap.capacity, failed_min, args.max_sessions) {
            Some(next) if !cap.steps.iter().any(|s| s.sessions == next) => n = next,
            _ => break,
        }
    }
    let json = out.join("capacity.json");
    report::write_json(&json, &cap).map_err(|source| LoadtestError::Write {
        path: json.clone(),
        source,
    })?;
    let mut plots = vec!["capacity.svg".to_string()];
    plot::capacity(&cap, &out.join("capacity.svg"))?;
    if let Some(r) = cap.shown_run() {
        plot::latency_over_time(r, &out.join("latency_over_time.svg"))?;
        plot::latency_histogram(r, &out.join("latency_histogram.svg"))?;
        plots.push("latency_over_time.svg".into());
        plots.push("latency_histogram.svg".into());
    }
    let md = out.join("report.md");
    write_file(&md, &report::capacity_markdown(&cap, &plots))?;
    println!(
        "capacity: sessions={} p95_bound_ms={:.0} max_failure_pct={:.1} max_late_pct={:.1} steps={}",
        cap.capacity,
        bounds.p95_ms,
        bounds.failure_pct,
        bounds.late_pct,
        cap.steps.len()
    );
    println!("json: {}", json.display());
    for p in &plots {
        println!("plot: {}", out.join(p).display());
    }
    println!("report: {}", md.display());
    let interrupted = cap.runs.last().is_some_and(|r| r.interrupted);
    Ok(if interrupted { 130 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_durations_and_think_ranges() {
        assert_eq!(parse_rate("1/s"), Ok(1.0));
        assert_eq!(parse_rate("0.5/s"), Ok(0.5));
        assert_eq!(parse_rate("30/m"), Ok(0.5));
        assert_eq!(parse_rate("4"), Ok(4.0));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("1/h").is_err());
        assert!(parse_rate("fast").is_err());
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
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

    #[test]
    fn capacity_steps_double_then_bisect() {
        // 1 held → 2 held → 4 held → 8 failed → 6 held → 7 failed → done (6).
        assert_eq!(next_step(1, None, 32), Some(2));
        assert_eq!(next_step(2, None, 32), Some(4));
        assert_eq!(next_step(4, None, 32), Some(8));
        assert_eq!(next_step(4, Some(8), 32), Some(6));
        assert_eq!(next_step(6, Some(8), 32), Some(7));
        assert_eq!(next_step(6, Some(7), 32), None);
        // Nothing held: the first step failed at 1.
        assert_eq!(next_step(0, Some(1), 32), None);
        // Bounded by the limit.
        assert_eq!(next_step(20, None, 32), Some(32));
        assert_eq!(next_step(32, None, 32), None);
    }

    #[test]
    fn a_step_holds_on_latency_failures_and_late_frames() {
        let b = Bounds {
            p95_ms: 2000.0,
            failure_pct: 1.0,
            late_pct: 0.5,
        };
        let mut s = Summary {
            voice_to_voice_ms: stats::Dist::of(&[1000.0, 1500.0, 1900.0]),
            ..Summary::default()
        };
        assert!(step_held(&s, &b));
        s.unanswered_pct = 2.0;
        assert!(!step_held(&s, &b));
        s.unanswered_pct = 0.0;
        s.late_pct = 0.6;
        assert!(!step_held(&s, &b));
        s.late_pct = 0.0;
        s.voice_to_voice_ms = stats::Dist::of(&[1000.0, 3000.0]);
        assert!(!step_held(&s, &b));
        assert!(!step_held(&Summary::default(), &b), "no turns, no capacity");
    }
}
