//! What a load test records and how it is written: the per-turn and
//! per-session records, their summary, the JSON file (every turn) and the
//! Markdown report (summary tables, links to the plots).
//!
//! The JSON field names are an interface (scripts read them); add fields,
//! do not rename them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Mode;
use super::stats::{Dist, GlitchCounts, pct};

/// How a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A reply (or, in media mode, the echo) was heard.
    #[default]
    Replied,
    /// The server was overloaded and played its busy line.
    Busy,
    /// No usable reply; `error` says why.
    Failed,
    /// The run was stopped during the turn; not counted anywhere.
    Aborted,
}

/// Why a turn or a session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The WebRTC session could not be set up.
    Connect,
    /// Sending audio failed.
    Send,
    /// The server or the network ended the session.
    SessionEnded,
    /// The server sent an `error` event for the turn.
    ServerError,
    /// The server took the turn but answered nothing (it heard no words).
    NoReply,
    /// A reply was announced but no voiced audio arrived.
    NoAudio,
    /// Nothing within the turn timeout.
    Timeout,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Send => "send",
            ErrorKind::SessionEnded => "session_ended",
            ErrorKind::ServerError => "server_error",
            ErrorKind::NoReply => "no_reply",
            ErrorKind::NoAudio => "no_audio",
            ErrorKind::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The server's own stage timings of a turn (its `timings` event), ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimings {
    pub endpoint_ms: Option<f64>,
    pub asr_ms: Option<f64>,
    pub asr_decode_ms: Option<f64>,
    pub llm_first_token_ms: Option<f64>,
    pub first_sentence_ms: Option<f64>,
    pub tts_first_audio_ms: Option<f64>,
    pub total_ms: Option<f64>,
}

/// Stage names in report order, with what each measures.
pub const STAGES: [(&str, &str); 6] = [
    ("endpoint_ms", "end-of-turn wait (trailing silence)"),
    ("asr_ms", "ASR after end of turn"),
    ("llm_first_token_ms", "LLM first token"),
    ("first_sentence_ms", "first sentence (from LLM start)"),
    ("tts_first_audio_ms", "TTS first audio"),
    (
        "total_ms",
        "server total (last speech → first audio queued)",
    ),
];

impl StageTimings {
    pub fn from_event(ev: &Value) -> Self {
        let g = |k: &str| ev[k].as_f64();
        Self {
            endpoint_ms: g("endpoint_ms"),
            asr_ms: g("asr_ms"),
            asr_decode_ms: g("asr_decode_ms"),
            llm_first_token_ms: g("llm_first_token_ms"),
            first_sentence_ms: g("first_sentence_ms"),
            tts_first_audio_ms: g("tts_first_audio_ms"),
            total_ms: g("total_ms"),
        }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "endpoint_ms" => self.endpoint_ms,
            "asr_ms" => self.asr_ms,
            "asr_decode_ms" => self.asr_decode_ms,
            "llm_first_token_ms" => self.llm_first_token_ms,
            "first_sentence_ms" => self.first_sentence_ms,
            "tts_first_audio_ms" => self.tts_first_audio_ms,
            "total_ms" => self.total_ms,
            _ => None,
        }
    }
}

/// One turn as the client saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    pub user: usize,
    /// The user's turn number, from 1.
    pub turn: u32,
    /// Start, seconds since the run began.
    pub t_start_s: f64,
    pub duration_s: f64,
    /// Sessions connected when the turn started.
    pub sessions: usize,
    pub utterance: String,
    pub reference: String,
    pub outcome: Outcome,
    pub error: Option<Failure>,
    /// Last voiced sample sent → first voiced reply sample received.
    pub voice_to_voice_ms: Option<f64>,
    /// The server's transcript(s) of the utterance.
    pub transcript: Option<String>,
    /// Word error rate of `transcript` against `reference` (0..=1+).
    pub wer: Option<f64>,
    pub reply: Option<String>,
    /// `queue_full` or `deadline` when the busy line was played.
    pub busy_reason: Option<String>,
    pub timings: Option<StageTimings>,
    /// Received-stream trouble from the turn's start to its end.
    pub glitches: GlitchCounts,
}

/// One virtual user's session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user: usize,
    pub t_connect_s: f64,
    pub t_end_s: f64,
    pub connected: bool,
    pub connect_ms: Option<f64>,
    /// Why the session failed (connect, send, ended by the server).
    pub error: Option<Failure>,
    /// Turns completed (aborted ones excluded).
    pub turns: u32,
    /// The whole received stream, think time included.
    pub glitches: GlitchCounts,
    pub ended_by_server: Option<String>,
}

/// Counters read from the server's `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSnapshot {
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<f64>,
    pub frames_out: f64,
    pub late_frames_out: f64,
    pub skipped_frames_out: f64,
    pub inbound_dropped: f64,
    pub busy_replies: f64,
    pub active_sessions: f64,
}

impl ServerSnapshot {
    pub fn parse(text: &str) -> Self {
        let g = |n: &str| crate::metrics::parse_sample(text, n);
        Self {
            cpu_seconds: g("process_cpu_seconds_total"),
            rss_bytes: g("process_resident_memory_bytes"),
            frames_out: g("voxloop_audio_frames_out_total").unwrap_or(0.0),
            late_frames_out: g("voxloop_late_frames_out_total").unwrap_or(0.0),
            skipped_frames_out: g("voxloop_skipped_frames_out_total").unwrap_or(0.0),
            inbound_dropped: g("voxloop_inbound_frames_dropped_total").unwrap_or(0.0),
            busy_replies: g("voxloop_busy_replies_total").unwrap_or(0.0),
            active_sessions: g("voxloop_active_sessions").unwrap_or(0.0),
        }
    }
}

/// The server over a window of the run (from `/metrics` before and after).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerStats {
    pub window_s: f64,
    /// Mean sessions connected over the window (sampled every second).
    pub mean_sessions: f64,
    /// CPU used over the window, % of one core.
    pub cpu_pct: Option<f64>,
    /// `cpu_pct` / `mean_sessions`.
    pub cpu_per_session_pct: Option<f64>,
    pub rss_mb: Option<f64>,
    pub frames_out: f64,
    pub late_frames_out: f64,
    pub late_pct: f64,
    pub skipped_frames_out: f64,
    pub inbound_dropped: f64,
    pub busy_replies: f64,
}

impl ServerStats {
    pub fn between(
        a: &ServerSnapshot,
        b: &ServerSnapshot,
        window_s: f64,
        mean_sessions: f64,
    ) -> Self {
        let cpu_pct = match (a.cpu_seconds, b.cpu_seconds) {
            (Some(x), Some(y)) if window_s > 0.0 => Some((y - x) / window_s * 100.0),
            _ => None,
        };
        let frames_out = b.frames_out - a.frames_out;
        let late = b.late_frames_out - a.late_frames_out;
        Self {
            window_s,
            mean_sessions,
            cpu_pct,
            cpu_per_session_pct: cpu_pct
                .filter(|_| mean_sessions > 0.0)
                .map(|c| c / mean_sessions),
            rss_mb: b.rss_bytes.map(|r| r / 1e6),
            frames_out,
            late_frames_out: late,
            late_pct: if frames_out > 0.0 {
                late * 100.0 / frames_out
            } else {
                0.0
            },
            skipped_frames_out: b.skipped_frames_out - a.skipped_frames_out,
            inbound_dropped: b.inbound_dropped - a.inbound_dropped,
            busy_replies: b.busy_replies - a.busy_replies,
        }
    }
}

/// The machine the load test ran on (it shares it with the server on loopback).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    /// 1-minute load average when the run started and ended.
    pub load_start: Option<f64>,
    pub load_end: Option<f64>,
}

impl Machine {
    pub fn probe() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            })
            .unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            load_start: load_average(),
            load_end: None,
        }
    }
}

/// The 1-minute load average (`/proc/loadavg`).
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Totals and distributions over a run's turns and sessions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Turns counted (aborted ones are not).
    pub turns: usize,
    pub replied: usize,
    pub busy: usize,
    pub failed: usize,
    pub aborted: usize,
    pub sessions_connected: usize,
    pub connect_failures: usize,
    /// Connected sessions that were not ended by an error.
    pub sessions_held: usize,
    /// (failed turns + failed connects) / (turns + connect attempts that failed).
    pub failure_pct: f64,
    /// Like `failure_pct`, counting busy-line turns as failures too: the
    /// share of turns that did not get a real answer.
    pub unanswered_pct: f64,
    /// Failures by kind (turns and sessions).
    pub errors: BTreeMap<String, u64>,
    /// Over replied turns only (a busy line is fast and would flatter it).
    pub voice_to_voice_ms: Dist,
    pub busy_voice_to_voice_ms: Dist,
    pub stages_ms: BTreeMap<String, Dist>,
    /// Per-turn WER in percent.
    pub wer_pct: Dist,
    pub connect_ms: Dist,
    pub glitches: GlitchCounts,
    pub late_pct: f64,
    pub received_minutes: f64,
    pub glitches_per_min: f64,
}

impl Summary {
    pub fn of(turns: &[TurnRecord], sessions: &[SessionRecord]) -> Self {
        let counted: Vec<&TurnRecord> = turns
            .iter()
            .filter(|t| t.outcome != Outcome::Aborted)
            .collect();
        let n = |o: Outcome| counted.iter().filter(|t| t.outcome == o).count();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        for f in counted.iter().filter_map(|t| t.error.as_ref()) {
            *errors.entry(f.kind.as_str().to_string()).or_default() += 1;
        }
        // Session errors not already counted on a turn (connect failures, a
        // session that died between turns).
        for s in sessions {
            if let Some(f) = &s.error
                && (f.kind == ErrorKind::Connect || !s.connected)
            {
                *errors.entry(f.kind.as_str().to_string()).or_default() += 1;
            }
        }
        let replied: Vec<&&TurnRecord> = counted
            .iter()
            .filter(|t| t.outcome == Outcome::Replied)
            .collect();
        let v2v: Vec<f64> = replied.iter().filter_map(|t| t.voice_to_voice_ms).collect();
        let busy_v2v: Vec<f64> = counted
            .iter()
            .filter(|t| t.outcome == Outcome::Busy)
            .filter_map(|t| t.voice_to_voice_ms)
            .collect();
        let stages_ms = STAGES
            .iter()
            .map(|(name, _)| {
                let v: Vec<f64> = replied
                    .iter()
                    .filter_map(|t| t.timings.as_ref().and_then(|x| x.get(name)))
                    .collect();
                (name.to_string(), Dist::of(&v))
            })
            .filter(|(_, d)| d.n > 0)
            .collect();
        let wer: Vec<f64> = counted
            .iter()
            .filter_map(|t| t.wer.map(|w| w * 100.0))
            .collect();
        let connect: Vec<f64> = sessions
            .iter()
            .filter(|s| s.connected)
            .filter_map(|s| s.connect_ms)
            .collect();
        let connect_failures = sessions
            .iter()
            .filter(|s| !s.connected && s.error.is_some())
            .count();
        let mut glitches = GlitchCounts::default();
        for s in sessions {
            glitches.add(&s.glitches);
        }
        let received_minutes = glitches.frames as f64 * f64::from(crate::FRAME_MS) / 60_000.0;
        let failed = n(Outcome::Failed);
        let busy = n(Outcome::Busy);
        let attempts = (counted.len() + connect_failures) as u64;
        Self {
            turns: counted.len(),
            replied: replied.len(),
            busy,
            failed,
            aborted: turns.len() - counted.len(),
            sessions_connected: sessions.iter().filter(|s| s.connected).count(),
            connect_failures,
            sessions_held: sessions
                .iter()
                .filter(|s| s.connected && s.error.is_none())
                .count(),
            failure_pct: pct((failed + connect_failures) as u64, attempts),
            unanswered_pct: pct((failed + busy + connect_failures) as u64, attempts),
            errors,
            voice_to_voice_ms: Dist::of(&v2v),
            busy_voice_to_voice_ms: Dist::of(&busy_v2v),
            stages_ms,
            wer_pct: Dist::of(&wer),
            connect_ms: Dist::of(&connect),
            glitches,
            late_pct: pct(glitches.late_frames, glitches.frames),
            received_minutes,
            glitches_per_min: if received_minutes > 0.0 {
                glitches.glitches as f64 / received_minutes
            } else {
                0.0
            },
        }
    }

    /// The `summary:` output line (an interface: keys are stable).
    pub fn line(&self) -> String {
        format!(
            "turns={} replied={} busy={} failed={} failure_pct={:.1} v2v_p50_ms={} v2v_p95_ms={} v2v_p99_ms={} wer_pct={} late_pct={:.2} glitches_per_min={:.2} connect_p50_ms={}",
            self.turns,
            self.replied,
            self.busy,
            self.failed,
            self.failure_pct,
            ms(self.voice_to_voice_ms.p50),
            ms(self.voice_to_voice_ms.p95),
            ms(self.voice_to_voice_ms.p99),
            self.wer_pct
                .mean
                .map_or_else(|| "-".to_string(), |w| format!("{w:.1}")),
            self.late_pct,
            self.glitches_per_min,
            ms(self.connect_ms.p50),
        )
    }
}

/// A whole `voxloop loadtest` run at one session count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub mode: Mode,
    pub url: String,
    /// Virtual users asked for.
    pub sessions: usize,
    pub ramp_per_s: f64,
    pub duration_s: f64,
    pub max_turns: u32,
    pub think_s: (f64, f64),
    pub late_after_ms: f64,
    pub seed: u64,
    pub audio_dir: String,
    pub utterances: usize,
    /// Wall-clock start, seconds since the Unix epoch.
    pub started_unix_s: u64,
    pub ran_s: f64,
    /// Stopped by Ctrl-C.
    pub interrupted: bool,
    /// When the last user had connected (or failed to), seconds from start.
    pub ramp_done_s: Option<f64>,
    pub machine: Machine,
    /// (seconds since start, sessions connected), once a second.
    pub concurrency: Vec<(f64, usize)>,
    /// From `/metrics`, from the end of the ramp to the end of the run.
    pub server: Option<ServerStats>,
    /// This process's CPU over the same window, % of one core per session.
    pub client_cpu_per_session_pct: Option<f64>,
    pub summary: Summary,
    pub session_records: Vec<SessionRecord>,
    pub turns: Vec<TurnRecord>,
}

/// One step of `--find-capacity`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityStep {
    pub sessions: usize,
    pub held: bool,
    /// Over turns that started after the ramp (all sessions up).
    pub steady: Summary,
    pub server: Option<ServerStats>,
}

/// The result of `--find-capacity`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityRecord {
    pub bounds: super::Bounds,
    /// The largest session count that held (0 if none did).
    pub capacity: usize,
    pub steps: Vec<CapacityStep>,
    pub runs: Vec<RunRecord>,
}

impl CapacityRecord {
    /// The run the report details and plots: the last one at the capacity,
    /// else the last step.
    pub fn shown_run(&self) -> Option<&RunRecord> {
        self.runs
            .iter()
            .rev()
            .find(|r| r.sessions == self.capacity)
            .or(self.runs.last())
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.0}"))
}

fn dist_row(out: &mut String, name: &str, d: &Dist) {
    let _ = writeln!(
        out,
        "| {name} | {} | {} | {} | {} | {} | {} |",
        ms(d.p50),
        ms(d.p95),
        ms(d.p99),
        ms(d.mean),
        ms(d.max),
        d.n
    );
}

fn run_header(out: &mut String, r: &RunRecord) {
    let m = &r.machine;
    let load = |l: Option<f64>| l.map_or_else(|| "?".to_string(), |v| format!("{v:.2}"));
    let _ = writeln!(
        out,
        "- target: `{}`, mode `{}`\n- virtual users: {} (ramp {}/s), duration {:.0} s{}, think {:.1}–{:.1} s, seed {}\n- utterances: {} from `{}`\n- ran {:.1} s{}\n- machine: {} CPUs ({}), 1-min load average {} at start, {} at end{}\n- latency: last voiced sample sent → first voiced reply sample received, one monotonic clock, no jitter buffer (frames decoded on arrival); a frame counts late past {:.0} ms of jitter",
        r.url,
        r.mode.as_str(),
        r.sessions,
        r.ramp_per_s,
        r.duration_s,
        if r.max_turns > 0 {
            format!(", at most {} turns each", r.max_turns)
        } else {
            String::new()
        },
        r.think_s.0,
        r.think_s.1,
        r.seed,
        r.utterances,
        r.audio_dir,
        r.ran_s,
        if r.interrupted {
            " (interrupted by Ctrl-C)"
        } else {
            ""
        },
        m.cpus,
        if m.cpu_model.is_empty() {
            "unknown CPU"
        } else {
            &m.cpu_model
        },
        load(m.load_start),
        load(m.load_end),
        if m.load_start.is_some_and(|l| l > 0.5 * m.cpus as f64) {
            " — the machine was busy when the run started; figures are pessimistic"
        } else {
            ""
        },
        r.late_after_ms,
    );
}

fn summary_tables(out: &mut String, r: &RunRecord) {
    let s = &r.summary;
    let _ = writeln!(
        out,
        "\n## Turns\n\n| turns | replied | busy line | failed | failure % | unanswered % | sessions held / connected | connect failures |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {:.1} | {:.1} | {} / {} | {} |",
        s.turns,
        s.replied,
        s.busy,
        s.failed,
        s.failure_pct,
        s.unanswered_pct,
        s.sessions_held,
        s.sessions_connected,
        s.connect_failures
    );
    if !s.errors.is_empty() {
        let list: Vec<String> = s.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(out, "\nErrors by kind: {}.", list.join(", "));
    }
    let _ = writeln!(
        out,
        "\n## Latency (ms)\n\n| measure | p50 | p95 | p99 | mean | max | n |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let v2v_name = match r.mode {
        Mode::Conversation => "**voice-to-voice** (replied turns)",
        Mode::Media => "**echo round trip** (voice-to-voice)",
    };
    dist_row(out, v2v_name, &s.voice_to_voice_ms);
    if s.busy_voice_to_voice_ms.n > 0 {
        dist_row(out, "voice-to-voice, busy line", &s.busy_voice_to_voice_ms);
    }
    for (name, what) in STAGES {
        if let Some(d) = s.stages_ms.get(name) {
            dist_row(out, what, d);
        }
    }
    dist_row(out, "connect (socket → media flowing)", &s.connect_ms);
    if s.wer_pct.n > 0 {
        let _ = writeln!(
            out,
            "\n## Accuracy\n\nASR word error rate of the server's transcript against the reference, per turn: mean {:.1} %, p95 {:.1} %, max {:.1} % over {} turns.",
            s.wer_pct.mean.unwrap_or(0.0),
            s.wer_pct.p95.unwrap_or(0.0),
            s.wer_pct.max.unwrap_or(0.0),
            s.wer_pct.n
        );
    }
    let g = &s.glitches;
    let _ = writeln!(
        out,
        "\n## Received audio\n\n| frames | late | late % | lost | gaps | glitches | glitches / min |\n|---:|---:|---:|---:|---:|---:|---:|\n| {} | {} | {:.2} | {} | {} | {} | {:.2} |",
        g.frames, g.late_frames, s.late_pct, g.lost_frames, g.gaps, g.glitches, s.glitches_per_min
    );
    if let Some(sv) = &r.server {
        let opt =
            |v: Option<f64>, d: usize| v.map_or_else(|| "-".to_string(), |x| format!("{x:.d$}"));
        let _ = writeln!(
            out,
            "\n## Server (`/metrics`, {:.0} s after the ramp, {:.1} sessions on average)\n\n| CPU % of a core | CPU % per session | RSS MB | frames out | late frames out | late % | skipped | inbound dropped | busy lines |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} |",
            sv.window_s,
            sv.mean_sessions,
            opt(sv.cpu_pct, 1),
            opt(sv.cpu_per_session_pct, 2),
            opt(sv.rss_mb, 0),
            sv.frames_out,
            sv.late_frames_out,
            sv.late_pct,
            sv.skipped_frames_out,
            sv.inbound_dropped,
            sv.busy_replies
        );
        if let Some(c) = r.client_cpu_per_session_pct {
            let _ = writeln!(
                out,
                "\nThe load tester itself used {c:.2} % of a core per session over the same window (same machine)."
            );
        }
    }
}

/// The Markdown report of one run; `plots` are file names beside it.
pub fn markdown(r: &RunRecord, plots: &[String]) -> String {
    let mut out = String::from("# voxloop load test\n\n");
    run_header(&mut out, r);
    summary_tables(&mut out, r);
    plot_links(&mut out, plots);
    out
}

fn plot_links(out: &mut String, plots: &[String]) {
    if plots.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Plots\n");
    for p in plots {
        let _ = writeln!(out, "![{p}]({p})\n");
    }
}

/// The Markdown report of `--find-capacity`.
pub fn capacity_markdown(c: &CapacityRecord, plots: &[String]) -> String {
    let mut out = String::from("# voxloop capacity\n\n");
    let _ = writeln!(
        out,
        "A step holds when p95 voice-to-voice of the turns started after its ramp is at most {:.0} ms and failures are at most {:.1} % (busy-line turns count as failures here){}. Sessions double until a step fails, then bisect.\n\n**Capacity: {} sessions.**\n\n| sessions | held | turns | p50 ms | p95 ms | p99 ms | failure % | unanswered % | late frames % | server CPU % | server late % |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        c.bounds.p95_ms,
        c.bounds.failure_pct,
        if c.bounds.late_pct < 100.0 {
            format!(
                ", and late received frames at most {:.2} %",
                c.bounds.late_pct
            )
        } else {
            String::new()
        },
        c.capacity
    );
    for s in &c.steps {
        let v = &s.steady.voice_to_voice_ms;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.2} | {} | {} |",
            s.sessions,
            if s.held { "yes" } else { "no" },
            s.steady.turns,
            ms(v.p50),
            ms(v.p95),
            ms(v.p99),
            s.steady.failure_pct,
            s.steady.unanswered_pct,
            s.steady.late_pct,
            s.server
                .and_then(|x| x.cpu_pct)
                .map_or_else(|| "-".into(), |x| format!("{x:.0}")),
            s.server
                .map_or_else(|| "-".into(), |x| format!("{:.2}", x.late_pct)),
        );
    }
    if let Some(r) = c.shown_run() {
        let _ = writeln!(out, "\n## The step at {} sessions\n", r.sessions);
        run_header(&mut out, r);
        summary_tables(&mut out, r);
    }
    plot_links(&mut out, plots);
    out
}

/// Write `value` as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(outcome: Outcome, v2v: Option<f64>, wer: Option<f64>) -> TurnRecord {
        TurnRecord {
            outcome,
            voice_to_voice_ms: v2v,
            wer,
            timings: Some(StageTimings {
                asr_ms: Some(200.0),
                ..Default::default()
            }),
            error: (outcome == Outcome::Failed).then(|| Failure::new(ErrorKind::Timeout, "x")),
            ..Default::default()
        }
    }

    #[test]
    fn summary_counts_and_excludes() {
        let turns = vec![
            turn(Outcome::Replied, Some(1000.0), Some(0.0)),
            turn(Outcome::Replied, Some(2000.0), Some(0.5)),
            turn(Outcome::Busy, Some(300.0), None),
            turn(Outcome::Failed, None, None),
            turn(Outcome::Aborted, Some(99.0), None),
        ];
        let sessions = vec![
            SessionRecord {
                connected: true,
                connect_ms: Some(70.0),
                glitches: GlitchCounts {
                    frames: 3000,
                    late_frames: 3,
                    glitches: 2,
                    ..Default::default()
                },
                ..Default::default()
            },
            SessionRecord {
                connected: false,
                error: Some(Failure::new(ErrorKind::Connect, "refused")),
                ..Default::default()
            },
        ];
        let s = Summary::of(&turns, &sessions);
        assert_eq!((s.turns, s.replied, s.busy, s.failed), (4, 2, 1, 1));
        assert_eq!(
            s.voice_to_voice_ms.n, 2,
            "busy and aborted turns are not in it"
        );
        assert_eq!(s.voice_to_voice_ms.p50, Some(1500.0));
        assert_eq!(s.busy_voice_to_voice_ms.p50, Some(300.0));
        assert_eq!(s.stages_ms["asr_ms"].n, 2);
        assert_eq!(s.wer_pct.mean, Some(25.0));
        assert_eq!(s.connect_failures, 1);
        assert_eq!(s.errors["timeout"], 1);
        assert_eq!(s.errors["connect"], 1);
        // 1 failed turn + 1 failed connect out of 4 turns + 1 attempt.
        assert!((s.failure_pct - 40.0).abs() < 1e-9);
        assert!((s.unanswered_pct - 60.0).abs() < 1e-9);
        // 3000 frames = 1 minute of audio.
        assert!((s.glitches_per_min - 2.0).abs() < 1e-9);
        assert!((s.late_pct - 0.1).abs() < 1e-9);
        assert!(s.line().contains("v2v_p50_ms=1500"), "{}", s.line());
    }

    #[test]
    fn server_stats_over_a_window() {
        let a = ServerSnapshot::parse(
            "process_cpu_seconds_total 10.00\nvoxloop_audio_frames_out_total 1000\nvoxloop_late_frames_out_total 5\n",
        );
        let b = ServerSnapshot::parse(
            "process_cpu_seconds_total 16.00\nvoxloop_audio_frames_out_total 3000\nvoxloop_late_frames_out_total 7\nvoxloop_busy_replies_total 2\n",
        );
        let s = ServerStats::between(&a, &b, 10.0, 4.0);
        assert_eq!(s.cpu_pct, Some(60.0));
        assert_eq!(s.cpu_per_session_pct, Some(15.0));
        assert_eq!(s.late_pct, 0.1);
        assert_eq!(s.busy_replies, 2.0);
        let none = ServerStats::between(&ServerSnapshot::default(), &b, 10.0, 4.0);
        assert_eq!(none.cpu_pct, None);
    }

    #[test]
    fn markdown_has_the_tables_and_plots() {
        let r = RunRecord {
            url: "http://127.0.0.1:1".into(),
            summary: Summary::of(&[turn(Outcome::Replied, Some(1200.0), Some(0.0))], &[]),
            ..Default::default()
        };
        let md = markdown(&r, &["latency_histogram.svg".into()]);
        assert!(
            md.contains("| **voice-to-voice** (replied turns) | 1200 |"),
            "{md}"
        );
        assert!(md.contains("![latency_histogram.svg](latency_histogram.svg)"));
        assert!(md.contains("ASR after end of turn"));
    }
}
