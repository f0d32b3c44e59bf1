//! One run at a fixed session count: start the users at the ramp rate,
//! sample concurrency and show progress once a second, read the server's
//! `/metrics` over the steady window, stop the users and gather the record.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::report::{Outcome, RunRecord, Summary, TurnRecord};
use super::server::{self, Machine, ServerSnapshot, ServerStats};
use super::user::{self, Controls, UserConfig};
use super::{LoadtestError, Mode, corpus, stats};

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
    /// Utterances in corpus order rather than at random.
    pub in_order: bool,
    pub audio_dir: PathBuf,
    /// Print progress to stderr (a live line on a terminal, plain lines otherwise).
    pub progress: bool,
    /// Join token for a server with auth on (admin, to read `/metrics` too).
    pub token: Option<String>,
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

/// GET `url`, with `token` as a Bearer (a server with auth on wants an
/// admin token for `/metrics`).
async fn fetch_text(url: &str, token: Option<&str>) -> Result<String, String> {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = tokio::time::timeout(Duration::from_secs(5), req.send())
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    resp.text().await.map_err(|e| e.to_string())
}

async fn snapshot(base: &str, token: Option<&str>) -> Option<ServerSnapshot> {
    match fetch_text(&format!("{}/metrics", base.trim_end_matches('/')), token).await {
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
    let text = fetch_text(&format!("{base}/healthz"), None)
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
pub(super) async fn wait_drained(url: &str, token: Option<&str>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if snapshot(url, token)
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
            in_order: settings.in_order,
            opus_bitrate: 48_000,
            token: settings.token.clone(),
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
                    if let Some(snap) = snapshot(&settings.url, settings.token.as_deref()).await {
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
        Some(_) => snapshot(&settings.url, settings.token.as_deref()).await,
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
    machine.load_end = server::load_average();
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
        in_order: settings.in_order,
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
