//! Process-wide counters, rendered in the Prometheus text format at `/metrics`.
//!
//! Plain atomics: the media path increments them 50 times a second per
//! session, so they must never lock or allocate there.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::error_code::ErrorCode;

mod lag;
pub use lag::LagHistogram;
mod remote;
pub use remote::RemoteMetrics;

#[derive(Debug, Default)]
pub struct Metrics {
    pub active_sessions: AtomicI64,
    pub sessions_total: AtomicU64,
    pub audio_frames_in: AtomicU64,
    pub audio_frames_out: AtomicU64,
    pub audio_frames_held: AtomicU64,
    pub late_frames_out: AtomicU64,
    pub skipped_frames_out: AtomicU64,
    pub inbound_frames_dropped: AtomicU64,
    pub utterances: AtomicU64,
    pub barge_ins: AtomicU64,
    /// Replies held for speech over them that was too short to interrupt
    /// (a cough), then resumed.
    pub holds_resumed: AtomicU64,
    /// Turns ended early that the user went on with before the reply was heard.
    pub turns_continued: AtomicU64,
    pub busy_replies: AtomicU64,
    /// Grounded replies ended because they stated a number or name their
    /// notes did not have.
    pub unsupported_replies: AtomicU64,
    pub events_dropped: AtomicU64,
    pub bus_events_published: AtomicU64,
    pub bus_events_dropped: AtomicU64,
    pub prompts_received: AtomicU64,
    pub prompts_spoken: AtomicU64,
    pub prompts_dropped: AtomicU64,
    /// Prompts this server received for a session another server holds,
    /// and handed to it.
    pub prompts_relayed: AtomicU64,
    pub prompts_parked: AtomicU64,
    /// How far voice activity detection runs behind the audio received.
    pub vad_lag: LagHistogram,
    /// VAD windows under the level floor, taken as silence without Silero.
    pub vad_windows_skipped: AtomicU64,
    /// `serve --inference nats`: latency and failures per role.
    pub remote: RemoteMetrics,
    signaling_errors: ByKind,
    data_channel_errors: ByKind,
}

impl Metrics {
    pub fn signaling_error(&self, code: ErrorCode) {
        count(&self.signaling_errors, code);
    }

    pub fn signaling_errors(&self, code: ErrorCode) -> u64 {
        counted(&self.signaling_errors, code)
    }

    /// A client message on the `events` data channel was refused.
    pub fn data_channel_error(&self, code: ErrorCode) {
        count(&self.data_channel_errors, code);
    }

    pub fn data_channel_errors(&self, code: ErrorCode) -> u64 {
        counted(&self.data_channel_errors, code)
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            "voxloop_sessions_total",
            "Sessions started since the process began.",
            get(&self.sessions_total),
        );
        counter(
            "voxloop_audio_frames_in_total",
            "20 ms audio frames received and decoded.",
            get(&self.audio_frames_in),
        );
        counter(
            "voxloop_audio_frames_out_total",
            "20 ms audio frames encoded and sent.",
            get(&self.audio_frames_out),
        );
        counter(
            "voxloop_audio_frames_held_total",
            "20 ms frames of silence held back by DTX instead of sent (rtc.dtx).",
            get(&self.audio_frames_held),
        );
        counter(
            "voxloop_late_frames_out_total",
            "Outgoing frames sent more than half a frame after their deadline.",
            get(&self.late_frames_out),
        );
        counter(
            "voxloop_skipped_frames_out_total",
            "Outgoing deadlines skipped after a stall (instead of bursting).",
            get(&self.skipped_frames_out),
        );
        counter(
            "voxloop_inbound_frames_dropped_total",
            "Inbound frames dropped because the pipeline fell behind.",
            get(&self.inbound_frames_dropped),
        );
        counter(
            "voxloop_utterances_total",
            "User utterances detected.",
            get(&self.utterances),
        );
        counter(
            "voxloop_vad_windows_skipped_total",
            "VAD windows under the level floor (turn.vad_floor_dbfs), taken as silence without running Silero.",
            get(&self.vad_windows_skipped),
        );
        counter(
            "voxloop_barge_ins_total",
            "Replies cut off because the user spoke over them.",
            get(&self.barge_ins),
        );
        counter(
            "voxloop_holds_resumed_total",
            "Replies paused for speech over them that stayed shorter than turn.barge_in_ms (a cough, a word of assent), then resumed.",
            get(&self.holds_resumed),
        );
        counter(
            "voxloop_turns_continued_total",
            "Turns ended early (Smart Turn said complete, or the transcript read finished after turn.transcript_pause_ms) that the user went on with before the reply was heard: taken back and continued.",
            get(&self.turns_continued),
        );
        counter(
            "voxloop_busy_replies_total",
            "Turns answered with the busy line because inference was overloaded.",
            get(&self.busy_replies),
        );
        counter(
            "voxloop_unsupported_replies_total",
            "Grounded replies ended (or replaced by \"I don't know\") because they stated a number or name their notes did not have.",
            get(&self.unsupported_replies),
        );
        counter(
            "voxloop_events_dropped_total",
            "Client events dropped because the session's event queue was full.",
            get(&self.events_dropped),
        );
        counter(
            "voxloop_bus_events_published_total",
            "Conversation events stored in the NATS event stream.",
            get(&self.bus_events_published),
        );
        counter(
            "voxloop_bus_events_dropped_total",
            "Conversation events not published (NATS down or its buffer full).",
            get(&self.bus_events_dropped),
        );
        counter(
            "voxloop_prompts_received_total",
            "Proactive prompts received (NATS or HTTP), valid or not.",
            get(&self.prompts_received),
        );
        counter(
            "voxloop_prompts_spoken_total",
            "Proactive prompts spoken into a session.",
            get(&self.prompts_spoken),
        );
        counter(
            "voxloop_prompts_dropped_total",
            "Proactive prompts dropped (expired, no session, bad payload, ...).",
            get(&self.prompts_dropped),
        );
        counter(
            "voxloop_prompts_relayed_total",
            "Prompts for a session another server holds, handed to that server.",
            get(&self.prompts_relayed),
        );
        counter(
            "voxloop_prompts_parked_total",
            "Prompts from NATS for a session no server held, parked until it comes back.",
            get(&self.prompts_parked),
        );
        let _ = writeln!(
            out,
            "# HELP voxloop_active_sessions Sessions currently live.\n# TYPE voxloop_active_sessions gauge\nvoxloop_active_sessions {}",
            self.active_sessions.load(Ordering::Relaxed)
        );
        self.vad_lag.render(
            &mut out,
            "voxloop_vad_lag_seconds",
            "How far voice activity detection runs behind the audio received, per scored batch: the batch's wait and run plus the audio that queued meanwhile.",
            "voxloop_vad_lag_max_seconds",
        );
        self.remote.render(&mut out);
        by_kind(
            &mut out,
            "voxloop_signaling_errors_total",
            "Rejected signaling messages by kind.",
            &self.signaling_errors,
        );
        by_kind(
            &mut out,
            "voxloop_data_channel_errors_total",
            "Rejected events data channel messages by kind.",
            &self.data_channel_errors,
        );
        // The standard process metrics, so a load tester on another machine
        // (or one without this pid) can still work out CPU per session.
        if let Some(cpu) = process_cpu_seconds("self") {
            let _ = writeln!(
                out,
                "# HELP process_cpu_seconds_total User and system CPU time of this process.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu:.2}"
            );
        }
        if let Some(rss) = process_rss_bytes("self") {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident set size of this process.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
            );
        }
        if let Some(heap) = heap_in_use_bytes() {
            let _ = writeln!(
                out,
                "# HELP voxloop_heap_in_use_bytes Bytes the allocator has handed out and not had back.\n# TYPE voxloop_heap_in_use_bytes gauge\nvoxloop_heap_in_use_bytes {heap}"
            );
        }
        out
    }
}

/// Bytes allocated and not yet freed (glibc's `mallinfo2`: in the arenas
/// plus in their own mappings). Unlike RSS it does not keep the high-water
/// mark of a busy moment or the arenas' fragmentation, so it is the figure
/// that shows a leak.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap_in_use_bytes() -> Option<u64> {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct; it
    // only reads the allocator's own counters under its locks.
    let info = unsafe { libc::mallinfo2() };
    Some((info.uordblks + info.hblkhd) as u64)
}

/// See the glibc version; other allocators do not say.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_in_use_bytes() -> Option<u64> {
    None
}

/// Linux reports process times in USER_HZ, which is 100 on every
/// architecture Linux supports for user space (it is part of the ABI).
pub const USER_HZ: f64 = 100.0;

/// User + system CPU seconds of process `pid` (`"self"` for this one), from
/// `/proc/PID/stat`; `None` where there is no procfs.
pub fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat_cpu(&stat)
}

/// Resident set size of process `pid` in bytes, from `/proc/PID/status`.
pub fn process_rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in seconds.
/// The command name (field 2) may hold spaces and parentheses, so fields are
/// counted from its closing parenthesis.
fn parse_proc_stat_cpu(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// Read one sample from Prometheus text (used by tests and the load tester).
pub fn parse_sample(text: &str, name_with_labels: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == name_with_labels).then(|| value.parse().ok())?
    })
}

type ByKind = Mutex<BTreeMap<&'static str, u64>>;

fn count(m: &ByKind, code: ErrorCode) {
    if let Ok(mut m) = m.lock() {
        *m.entry(code.as_str()).or_default() += 1;
    }
}

fn counted(m: &ByKind, code: ErrorCode) -> u64 {
    m.lock()
        .map(|m| m.get(code.as_str()).copied().unwrap_or(0))
        .unwrap_or(0)
}

/// A counter family labelled by error code (`{kind="bad_json"}`).
fn by_kind(out: &mut String, name: &str, help: &str, m: &ByKind) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    if let Ok(m) = m.lock() {
        for (kind, v) in m.iter() {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses() {
        let m = Metrics::default();
        m.active_sessions.fetch_add(2, Ordering::Relaxed);
        Metrics::inc(&m.audio_frames_in);
        m.signaling_error(ErrorCode::BadJson);
        m.signaling_error(ErrorCode::BadJson);
        m.data_channel_error(ErrorCode::UnknownType);
        let text = m.render();
        assert_eq!(parse_sample(&text, "voxloop_active_sessions"), Some(2.0));
        assert_eq!(
            parse_sample(&text, "voxloop_audio_frames_in_total"),
            Some(1.0)
        );
        assert_eq!(
            parse_sample(&text, "voxloop_signaling_errors_total{kind=\"bad_json\"}"),
            Some(2.0)
        );
        assert_eq!(m.signaling_errors(ErrorCode::BadJson), 2);
        assert_eq!(
            parse_sample(
                &text,
                "voxloop_data_channel_errors_total{kind=\"unknown_type\"}"
            ),
            Some(1.0)
        );
        assert_eq!(m.data_channel_errors(ErrorCode::UnknownType), 1);
        assert_eq!(m.data_channel_errors(ErrorCode::BadJson), 0);
        assert!(parse_sample(&text, "process_cpu_seconds_total").is_some());
        assert!(parse_sample(&text, "process_resident_memory_bytes").unwrap_or(0.0) > 0.0);
    }

    #[test]
    fn proc_stat_cpu_fields() {
        // pid (comm with spaces and a paren) state ppid ... utime=250 stime=50
        let line = "42 (tokio rt (1)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_proc_stat_cpu(line), Some(3.0));
        assert_eq!(parse_proc_stat_cpu("garbage"), None);
        assert!(process_cpu_seconds("self").is_some());
    }
}
