//! A worker's load per role and whether it takes one more job: not when
//! its queue is full, and not when, judged by its queue and how long its
//! recent jobs took, the job would start later than the server asked.
//! A refusal is "busy" at once, so the server tries another worker or
//! gives the busy line instead of waiting in a queue that cannot serve it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// What [`RoleLoad::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Taken (counted in flight); `at_once` when a free engine starts it
    /// now, so its time is the engine's pace.
    Take { at_once: bool },
    /// Running and queued jobs reach the limit.
    Full,
    /// It would start in about `wait_ms`, later than asked.
    TooLate { wait_ms: u64 },
}

/// One role's jobs on this worker.
#[derive(Debug)]
pub struct RoleLoad {
    /// Jobs the engine runs side by side (threads, LLM sequences).
    parallel: usize,
    /// Jobs held at most (running + queued).
    limit: usize,
    in_flight: AtomicUsize,
    completed: AtomicU64,
    failed: AtomicU64,
    refused_busy: AtomicU64,
    /// How long a job that started at once took, in ms: an average that
    /// follows the recent ones (0 until one finished).
    pace_ms: AtomicU64,
}

impl RoleLoad {
    pub fn new(parallel: usize, limit: usize) -> Self {
        Self {
            parallel: parallel.max(1),
            limit,
            in_flight: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            refused_busy: AtomicU64::new(0),
            pace_ms: AtomicU64::new(0),
        }
    }

    /// Take a job that must start within `start_by_ms`, or say why not.
    pub fn admit(&self, start_by_ms: u64) -> Admit {
        let ahead = self.in_flight.fetch_add(1, Ordering::SeqCst);
        let wait_ms = expected_wait_ms(ahead, self.parallel, self.pace_ms.load(Ordering::Relaxed));
        let verdict = if ahead >= self.limit {
            Admit::Full
        } else if wait_ms > start_by_ms {
            Admit::TooLate { wait_ms }
        } else {
            return Admit::Take {
                at_once: ahead < self.parallel,
            };
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.refused_busy.fetch_add(1, Ordering::Relaxed);
        verdict
    }

    /// A taken job ended after `took` (from its admission).
    pub fn finish(&self, ok: bool, at_once: bool, took: Duration) {
        let counter = if ok { &self.completed } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        // Only a job that did not queue shows the engine's pace; a failed
        // or cancelled one says nothing about it.
        if ok && at_once {
            let ms = took.as_millis().max(1) as u64;
            let old = self.pace_ms.load(Ordering::Relaxed);
            let new = if old == 0 { ms } else { (3 * old + ms) / 4 };
            self.pace_ms.store(new, Ordering::Relaxed);
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// The counts `voxloop workers` and the service's `STATS` show.
    pub fn stats(&self) -> serde_json::Value {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let pace = self.pace_ms.load(Ordering::Relaxed);
        serde_json::json!({
            "in_flight": in_flight,
            "limit": self.limit,
            "parallel": self.parallel,
            "completed": self.completed.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
            "busy_refusals": self.refused_busy.load(Ordering::Relaxed),
            "pace_ms": pace,
            "expected_wait_ms": expected_wait_ms(in_flight, self.parallel, pace),
        })
    }
}

/// When a job that finds `ahead` jobs before it starts: at once while an
/// engine is free; else once one of the running jobs has finished (half a
/// pace on average: they are part done) and then the jobs queued before
/// it, `parallel` at a time, a pace each. Unknown (0) while no job has
/// finished: the queue limit alone decides then.
pub fn expected_wait_ms(ahead: usize, parallel: usize, pace_ms: u64) -> u64 {
    let parallel = parallel.max(1);
    if ahead < parallel {
        return 0;
    }
    let queued_rounds = ((ahead - parallel) / parallel) as u64;
    pace_ms / 2 + queued_rounds * pace_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_grows_by_a_pace_per_round_of_free_engines() {
        // (ahead, parallel, pace) → wait
        let cases = [
            (0, 1, 900, 0),
            (1, 1, 900, 450),
            (3, 1, 900, 2250),
            (3, 4, 900, 0),
            (4, 4, 900, 450),
            (7, 4, 900, 450),
            (8, 4, 900, 1350),
            (5, 1, 0, 0),
            (2, 0, 500, 750),
        ];
        for (ahead, parallel, pace, want) in cases {
            assert_eq!(
                expected_wait_ms(ahead, parallel, pace),
                want,
                "ahead {ahead}, parallel {parallel}, pace {pace}"
            );
        }
    }

    #[test]
    fn a_job_that_would_start_too_late_is_refused_before_the_queue_is_full() {
        let load = RoleLoad::new(1, 9);
        // Nothing learned yet: only the limit refuses.
        assert_eq!(load.admit(100), Admit::Take { at_once: true });
        load.finish(true, true, Duration::from_millis(1000));
        assert_eq!(load.admit(2000), Admit::Take { at_once: true });
        assert_eq!(load.admit(2000), Admit::Take { at_once: false });
        assert_eq!(load.admit(2000), Admit::Take { at_once: false });
        assert_eq!(load.admit(2000), Admit::TooLate { wait_ms: 2500 });
        // A longer bound still fits it: the queue has room.
        assert_eq!(load.admit(10_000), Admit::Take { at_once: false });
        let s = load.stats();
        assert_eq!(s["in_flight"], 4);
        assert_eq!(s["busy_refusals"], 1);
        assert_eq!(s["pace_ms"], 1000);
    }

    #[test]
    fn the_limit_refuses_whatever_the_pace() {
        let load = RoleLoad::new(2, 2);
        assert!(matches!(load.admit(u64::MAX), Admit::Take { .. }));
        assert!(matches!(load.admit(u64::MAX), Admit::Take { .. }));
        assert_eq!(load.admit(u64::MAX), Admit::Full);
        load.finish(false, true, Duration::from_millis(5));
        assert_eq!(load.stats()["pace_ms"], 0, "a failed job sets no pace");
        assert!(matches!(load.admit(u64::MAX), Admit::Take { .. }));
    }

    #[test]
    fn the_pace_follows_recent_jobs() {
        let load = RoleLoad::new(1, 4);
        for ms in [1000, 200, 200, 200] {
            assert!(matches!(load.admit(u64::MAX), Admit::Take { .. }));
            load.finish(true, true, Duration::from_millis(ms));
        }
        let pace = load.stats()["pace_ms"].as_u64().unwrap();
        assert!((300..=600).contains(&pace), "{pace}");
    }
}
