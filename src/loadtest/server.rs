//! The server and the machine as a load test sees them: counters read
//! from `/metrics` before and after the steady window, and the machine
//! (which shares its cores with the server on loopback).

use serde::{Deserialize, Serialize};

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
    /// `voxloop_vad_lag_seconds`: batches, their total, those over 100 ms.
    pub vad_batches: f64,
    pub vad_lag_sum_s: f64,
    pub vad_batches_over_100ms: f64,
    pub vad_lag_max_s: Option<f64>,
}

impl ServerSnapshot {
    pub fn parse(text: &str) -> Self {
        let g = |n: &str| crate::metrics::parse_sample(text, n);
        Self {
            cpu_seconds: g("process_cpu_seconds_total"),
            rss_bytes: g("process_resident_memory_bytes"),
            // Every 20 ms deadline, sent or held back by DTX: lateness is
            // counted on each.
            frames_out: g("voxloop_audio_frames_out_total").unwrap_or(0.0)
                + g("voxloop_audio_frames_held_total").unwrap_or(0.0),
            late_frames_out: g("voxloop_late_frames_out_total").unwrap_or(0.0),
            skipped_frames_out: g("voxloop_skipped_frames_out_total").unwrap_or(0.0),
            inbound_dropped: g("voxloop_inbound_frames_dropped_total").unwrap_or(0.0),
            busy_replies: g("voxloop_busy_replies_total").unwrap_or(0.0),
            active_sessions: g("voxloop_active_sessions").unwrap_or(0.0),
            vad_batches: g("voxloop_vad_lag_seconds_count").unwrap_or(0.0),
            vad_lag_sum_s: g("voxloop_vad_lag_seconds_sum").unwrap_or(0.0),
            vad_batches_over_100ms: g("voxloop_vad_lag_seconds_count").unwrap_or(0.0)
                - g("voxloop_vad_lag_seconds_bucket{le=\"0.1\"}").unwrap_or(0.0),
            vad_lag_max_s: g("voxloop_vad_lag_max_seconds"),
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
    /// Mean VAD lag over the window, ms (`None` if nothing was scored).
    #[serde(default)]
    pub vad_lag_mean_ms: Option<f64>,
    /// Share of VAD batches over the window that ran more than 100 ms behind.
    #[serde(default)]
    pub vad_lag_over_100ms_pct: Option<f64>,
    /// The largest VAD lag since the server started, ms.
    #[serde(default)]
    pub vad_lag_max_ms: Option<f64>,
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
        let batches = b.vad_batches - a.vad_batches;
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
            vad_lag_mean_ms: (batches > 0.0)
                .then(|| (b.vad_lag_sum_s - a.vad_lag_sum_s) / batches * 1000.0),
            vad_lag_over_100ms_pct: (batches > 0.0)
                .then(|| (b.vad_batches_over_100ms - a.vad_batches_over_100ms) / batches * 100.0),
            vad_lag_max_ms: b.vad_lag_max_s.map(|s| s * 1000.0),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s.vad_lag_mean_ms, None);
        let lag = |n, sum, over| {
            format!(
                "voxloop_vad_lag_seconds_bucket{{le=\"0.1\"}} {}\nvoxloop_vad_lag_seconds_sum {sum}\nvoxloop_vad_lag_seconds_count {n}\nvoxloop_vad_lag_max_seconds 0.25\n",
                n - over
            )
        };
        let v = ServerStats::between(
            &ServerSnapshot::parse(&lag(100, 1.0, 0)),
            &ServerSnapshot::parse(&lag(300, 5.0, 20)),
            10.0,
            4.0,
        );
        assert_eq!(v.vad_lag_mean_ms, Some(20.0));
        assert_eq!(v.vad_lag_over_100ms_pct, Some(10.0));
        assert_eq!(v.vad_lag_max_ms, Some(250.0));
        let none = ServerStats::between(&ServerSnapshot::default(), &b, 10.0, 4.0);
        assert_eq!(none.cpu_pct, None);
    }
}
