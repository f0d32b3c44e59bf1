//! How many threads a ggml computation (a transcription, an LLM step) gets:
//! the configured count, or fewer while other programs use the cores.
//!
//! ggml's threads meet at a barrier after every graph node and wait there by
//! spinning. When another program holds one of two cores, each barrier waits
//! for the thread the OS has descheduled, a time slice at a time: a reply
//! that takes 1 s on a quiet machine took 20 s beside two busy loops, and
//! the same turn with one thread per engine 2.5 s (docs/BENCHMARKS.md). One
//! thread costs ~0.4 s per turn on a quiet machine, so the count follows
//! the load: a sampler thread reads `/proc/stat` and this process's own CPU
//! time four times a second, and what the machine used beyond this process
//! is the other programs' share.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Once, OnceLock};
use std::time::Duration;

/// How often the machine's CPU use is sampled.
const PERIOD: Duration = Duration::from_millis(250);
/// Weight of a new sample in the smoothed share (a time constant of ~0.7 s:
/// a program that starts is seen within a second, a blip is not).
const ALPHA: f32 = 0.3;
/// A core other programs use less than this much of still counts as free.
/// Not 0.3: beside four load-test sessions (the load tester, NATS, the
/// kernel's network work) others read 0.25–0.35, and at 0.3 the LLM's
/// thread count flapped between 2 and 1, remaking its context (and losing
/// its cached prompts) each time; turns waited seconds and got the busy
/// line. A busy loop reads 1.0, so one still takes its core.
const SLACK: f32 = 0.5;

static FOLLOW: AtomicBool = AtomicBool::new(false);
/// Cores other programs use, in thousandths, smoothed.
static OTHERS_MILLI: AtomicU32 = AtomicU32::new(0);
static SAMPLER: Once = Once::new();

/// Follow the load from now on (`inference.threads_follow_load`), or use
/// the configured counts as they are. Starts the sampler the first time.
pub fn follow_load(on: bool) {
    FOLLOW.store(on, Ordering::Relaxed);
    if on {
        SAMPLER.call_once(start_sampler);
    }
}

/// Threads for the next computation of an engine configured for `configured`.
pub fn threads(configured: i32) -> i32 {
    if !FOLLOW.load(Ordering::Relaxed) {
        return configured;
    }
    threads_for(configured, cores(), others())
}

/// Whether thread counts follow the load (the sampler runs).
pub fn following() -> bool {
    FOLLOW.load(Ordering::Relaxed)
}

/// The most threads a computation gets now: the cores other programs leave
/// free (what [`threads`] caps a configured count at).
pub fn free_cores() -> i32 {
    threads_for(i32::MAX, cores(), others())
}

/// Cores other programs used lately (smoothed), as the sampler last saw.
pub fn others() -> f32 {
    OTHERS_MILLI.load(Ordering::Relaxed) as f32 / 1000.0
}

/// The cores this process may use, counted once: the count reads the
/// affinity mask and cgroup files, and the sampler needs it four times a
/// second.
fn cores() -> f32 {
    static CORES: OnceLock<f32> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()) as f32)
}

/// The cores other programs leave free, rounded down after forgiving each
/// `SLACK` of use, within 1..=`configured`.
pub fn threads_for(configured: i32, cores: f32, others: f32) -> i32 {
    let free = (cores - others.max(0.0) + SLACK).floor() as i32;
    free.clamp(1, configured.max(1))
}

/// CPU ticks of the whole machine and of this process at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Ticks the CPUs spent busy (user, nice, system, irq, softirq, steal).
    pub busy: u64,
    /// Busy plus idle and iowait ticks.
    pub total: u64,
    /// Ticks this process spent (user + system).
    pub own: u64,
}

/// The smoothed share of the machine other programs use, from samples.
#[derive(Debug, Default)]
pub struct OtherLoad {
    prev: Option<Sample>,
    cores: f32,
}

impl OtherLoad {
    /// Fold in a new sample on a machine of `cores` cores; returns the
    /// smoothed cores other programs use.
    pub fn update(&mut self, s: Sample, cores: f32) -> f32 {
        let prev = self.prev.replace(s);
        let Some(p) = prev else { return self.cores };
        let total = s.total.saturating_sub(p.total);
        if total == 0 {
            return self.cores;
        }
        let theirs = s
            .busy
            .saturating_sub(p.busy)
            .saturating_sub(s.own.saturating_sub(p.own));
        let now = (theirs as f32 / total as f32 * cores).clamp(0.0, cores);
        self.cores += ALPHA * (now - self.cores);
        self.cores
    }
}

/// The aggregate `cpu ` line of `/proc/stat`: (busy, total) ticks.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    if f.len() < 4 {
        return None;
    }
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    Some((busy, busy + at(3) + at(4)))
}

fn sample() -> Option<Sample> {
    let (busy, total) = parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)?;
    // Back to ticks of USER_HZ, the unit /proc/stat counts in.
    let own =
        (crate::metrics::process_cpu_seconds("self")? * crate::metrics::USER_HZ).round() as u64;
    Some(Sample { busy, total, own })
}

fn start_sampler() {
    let spawned = std::thread::Builder::new()
        .name("cpu-share".into())
        .spawn(|| {
            let mut load = OtherLoad::default();
            let mut was = threads_for(i32::MAX, cores(), 0.0);
            loop {
                let Some(s) = sample() else {
                    tracing::warn!("no /proc/stat: inference threads stay as configured");
                    FOLLOW.store(false, Ordering::Relaxed);
                    return;
                };
                let others = load.update(s, cores());
                OTHERS_MILLI.store((others * 1000.0) as u32, Ordering::Relaxed);
                let now = free_cores();
                if now != was {
                    tracing::info!(
                        others = format!("{others:.2}"),
                        free_cores = now,
                        "other programs' CPU use changed: inference threads follow"
                    );
                    was = now;
                }
                std::thread::sleep(PERIOD);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the CPU sampler: inference threads stay as configured");
        FOLLOW.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_leave_the_cores_others_use() {
        // (configured, cores, others) -> threads
        let cases = [
            (2, 2.0, 0.0, 2),
            (2, 2.0, 0.29, 2),
            (2, 2.0, 0.45, 2),
            (2, 2.0, 0.55, 1),
            (2, 2.0, 1.0, 1),
            (2, 2.0, 2.0, 1),
            (4, 8.0, 0.0, 4),
            (4, 8.0, 5.6, 2),
            (1, 2.0, 0.0, 1),
            (0, 2.0, 0.0, 1),
            (2, 2.0, -1.0, 2),
        ];
        for (configured, cores, others, want) in cases {
            assert_eq!(
                threads_for(configured, cores, others),
                want,
                "{configured} threads, {cores} cores, others {others}"
            );
        }
    }

    #[test]
    fn other_programs_are_what_the_machine_used_beyond_this_process() {
        let mut load = OtherLoad::default();
        let s = |busy, total, own| Sample { busy, total, own };
        assert_eq!(
            load.update(s(0, 0, 0), 2.0),
            0.0,
            "one sample is no interval"
        );
        // Half the machine busy, all of it this process: nobody else.
        assert_eq!(load.update(s(50, 100, 50), 2.0), 0.0);
        // Both cores busy for a while, none of it ours: the share climbs to 2.
        let mut others = 0.0;
        for k in 2..30 {
            others = load.update(s(50 + (k - 1) * 100, k * 100, 50), 2.0);
        }
        assert!((others - 2.0).abs() < 0.01, "{others}");
        // One sample of quiet does not undo it at once.
        let after = load.update(s(2850, 3000, 50), 2.0);
        assert!(after > 1.0 && after < 2.0, "{after}");
        // Counters that go backwards (a wrapped or reset reading) count as no use.
        let back = load.update(s(0, 3100, 0), 2.0);
        assert!(back < after, "{back}");
    }

    #[test]
    fn parses_the_aggregate_line_of_proc_stat() {
        let text = "cpu  100 5 20 800 10 1 2 3 0 0\ncpu0 50 2 10 400 5 0 1 1 0 0\nintr 1\n";
        assert_eq!(parse_proc_stat(text), Some((131, 941)));
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 x 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 2\n"), None);
    }
}
