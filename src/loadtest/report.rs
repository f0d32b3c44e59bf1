//! What a load test records: the per-turn and per-session records, their
//! summary and the JSON file (every turn). The Markdown report is in
//! [`super::markdown`], the server figures in [`super::server`].
//!
//! The JSON field names are an interface (scripts read them); add fields,
//! do not rename them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Mode;
use super::server::{Machine, ServerStats};
use super::stats::{Dist, GlitchCounts, pct};
use crate::events::Timings;

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

impl From<&Timings> for StageTimings {
    fn from(t: &Timings) -> Self {
        let f = |v: Option<u64>| v.map(|v| v as f64);
        Self {
            endpoint_ms: Some(f64::from(t.endpoint_ms)),
            asr_ms: Some(t.asr_ms as f64),
            asr_decode_ms: Some(t.asr_decode_ms as f64),
            llm_first_token_ms: f(t.llm_first_token_ms),
            first_sentence_ms: f(t.first_sentence_ms),
            tts_first_audio_ms: f(t.tts_first_audio_ms),
            total_ms: f(t.total_ms),
        }
    }
}

impl StageTimings {
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
    /// Utterances asked in corpus order (`--in-order`), not at random.
    #[serde(default)]
    pub in_order: bool,
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

/// Write `value` as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// A latency cell: whole milliseconds, or `-`.
pub(super) fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.0}"))
}

/// A turn record for tests.
#[cfg(test)]
pub(crate) fn test_turn(outcome: Outcome, v2v: Option<f64>, wer: Option<f64>) -> TurnRecord {
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

#[cfg(test)]
mod tests {
    use super::*;
    use test_turn as turn;

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
}
