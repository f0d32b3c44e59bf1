//! `voxloop loadtest`: many virtual users against a running server, each a
//! real WebRTC client ([`user`]), with per-turn records, a summary
//! ([`report`]), SVG plots ([`plot`]) and a capacity search ([`capacity`]).
//!
//! The driver ([`driver`]) starts users at the ramp rate, samples
//! concurrency once a second, prints live progress, reads the server's
//! `/metrics` at the end of the ramp and at the end of the run (CPU, late
//! frames, busy lines), and stops users at the duration (the turn in
//! progress may finish within its timeout) or at once on Ctrl-C. Whatever
//! happened, [`main`] writes the JSON and the report.
//!
//! Safety: only loopback targets unless `--allow-remote`; sessions, duration
//! and capacity steps are bounded; every user stops by itself.

pub mod args;
pub mod capacity;
pub mod corpus;
pub mod driver;
pub mod markdown;
mod mic;
pub mod plot;
pub mod report;
pub mod server;
pub mod stats;
pub mod user;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use args::{LoadtestArgs, is_loopback_url, parse_rate, parse_think};
pub use capacity::{Bounds, next_step, steady_summary, step_held};
use driver::wait_drained;
pub use driver::{Live, RunSettings, check_server, run_load, secs_since};
use report::{CapacityRecord, CapacityStep, RunRecord};

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
    /// Against `serve --pipeline speech`: users stay connected and silent,
    /// now and then asking one question (think 20s..60s unless given, and
    /// a first pause before the first), so the cost of a listening session
    /// and of the occasional turn are both measured.
    Listen,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Conversation => "conversation",
            Mode::Media => "media",
            Mode::Listen => "listen",
        }
    }

    /// Turns are questions to the assistant (not echoes).
    pub fn asks(self) -> bool {
        self != Mode::Media
    }

    /// The pause between turns when `--think` is not given.
    pub fn default_think(self) -> (Duration, Duration) {
        match self {
            Mode::Listen => (Duration::from_secs(20), Duration::from_secs(60)),
            _ => (Duration::from_secs(1), Duration::from_secs(3)),
        }
    }

    /// The server pipeline this mode needs.
    fn pipeline(self) -> &'static str {
        match self {
            Mode::Conversation | Mode::Listen => "speech",
            Mode::Media => "echo",
        }
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
    write_file(&md, &markdown::markdown(run, &names))?;
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
            "server: sessions={:.1} cpu_pct={} cpu_per_session_pct={} late_frames_out_pct={:.2} busy_replies={:.0} client_cpu_per_session_pct={} vad_lag_mean_ms={} vad_lag_over_100ms_pct={} vad_lag_max_ms={}",
            s.mean_sessions,
            opt(s.cpu_pct),
            opt(s.cpu_per_session_pct),
            s.late_pct,
            s.busy_replies,
            opt(run.client_cpu_per_session_pct),
            opt(s.vad_lag_mean_ms),
            opt(s.vad_lag_over_100ms_pct),
            opt(s.vad_lag_max_ms),
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
        think: args.think.unwrap_or(args.mode.default_think()),
        turn_timeout: args.turn_timeout,
        late_after: args.late_after,
        seed,
        in_order: args.in_order,
        audio_dir: args.audio.clone(),
        progress: true,
        token: args.token.clone(),
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
        wait_drained(
            &settings.url,
            settings.token.as_deref(),
            Duration::from_secs(15),
        )
        .await;
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
    write_file(&md, &markdown::capacity_markdown(&cap, &plots))?;
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
