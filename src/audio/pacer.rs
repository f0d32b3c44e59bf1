//! A sans-IO frame pacer: one frame every period on a monotonic clock.
//!
//! The caller owns time: it sleeps until [`Pacer::next_deadline`], then calls
//! [`Pacer::on_wake`] with the instant it actually woke. Deadlines are computed
//! as `start + n * period`, never by adding to the previous wake time, so
//! scheduling jitter cannot accumulate into drift. After a stall longer than a
//! frame the pacer skips the missed deadlines instead of sending a burst to
//! catch up (a burst would overflow the receiver's jitter buffer).

use std::time::{Duration, Instant};

/// What happened on one wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The frame went out later than the lateness threshold (half a period).
    pub late: bool,
    /// Deadlines skipped because the caller stalled for more than one period.
    pub skipped: u64,
}

/// Paces frames at a fixed period from a fixed start instant.
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    period: Duration,
    next: u64,
}

impl Pacer {
    /// A pacer whose first frame is due at `start`.
    pub fn new(start: Instant, period: Duration) -> Self {
        assert!(!period.is_zero(), "pacer period must be positive");
        Self {
            start,
            period,
            next: 0,
        }
    }

    /// When the next frame is due.
    pub fn next_deadline(&self) -> Instant {
        self.deadline(self.next)
    }

    /// Frames accounted for so far (sent or skipped).
    pub fn frames(&self) -> u64 {
        self.next
    }

    fn deadline(&self, n: u64) -> Instant {
        // u32 is enough for 2.7 years of 20 ms frames; saturate rather than panic.
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        self.start + self.period * n32
    }

    /// Give up, without sending, the frames whose deadlines passed before
    /// `now`, at most `max` of them; returns how many. A sender with nothing
    /// to send (DTX) sleeps through them instead of waking for each.
    pub fn pass(&mut self, now: Instant, max: u64) -> u64 {
        let mut n = 0;
        while n < max && self.next_deadline() < now {
            self.next += 1;
            n += 1;
        }
        n
    }

    /// When frame `next + ahead` is due.
    pub fn deadline_after(&self, ahead: u64) -> Instant {
        self.deadline(self.next + ahead)
    }

    /// `n` more frames went out with the one just sent, ahead of their
    /// deadlines (several frames in one packet).
    pub fn sent_ahead(&mut self, n: u64) {
        self.next += n;
    }

    /// Record that the caller woke at `now` to send the frame that is due.
    pub fn on_wake(&mut self, now: Instant) -> Tick {
        let due = self.next_deadline();
        let lag = now.saturating_duration_since(due);
        let late = lag > self.period / 2;
        let mut skipped = 0;
        if lag >= self.period {
            // Whole periods missed: drop those deadlines so the next send is
            // one period after this one, not immediately after it.
            skipped = (lag.as_nanos() / self.period.as_nanos()) as u64;
        }
        self.next += 1 + skipped;
        Tick { late, skipped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Duration = Duration::from_millis(20);

    #[test]
    fn no_drift_over_ten_simulated_minutes() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, P);
        // A cheap deterministic jitter source: wake 0..7 ms after the deadline.
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut last_wake = start;
        let mut late = 0;
        let frames = 10 * 60 * 50;
        for _ in 0..frames {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let jitter = Duration::from_micros(seed % 7000);
            let wake = pacer.next_deadline() + jitter;
            assert!(wake >= last_wake, "time went backwards");
            last_wake = wake;
            let tick = pacer.on_wake(wake);
            assert_eq!(tick.skipped, 0);
            late += u32::from(tick.late);
        }
        assert_eq!(late, 0);
        assert_eq!(pacer.frames(), frames);
        // Exactly 10 minutes of deadlines: no accumulated error at all.
        assert_eq!(
            pacer.next_deadline() - start,
            Duration::from_secs(600),
            "drift after 10 minutes"
        );
    }

    #[test]
    fn stall_skips_instead_of_bursting() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, P);
        pacer.on_wake(start);
        // Caller stalls 105 ms past the second deadline.
        let wake = pacer.next_deadline() + Duration::from_millis(105);
        let tick = pacer.on_wake(wake);
        assert!(tick.late);
        assert_eq!(tick.skipped, 5);
        // The next deadline is in the future relative to the late wake: no burst.
        assert!(pacer.next_deadline() > wake);
        assert!(pacer.next_deadline() - wake <= P);
        // Still on the original grid.
        assert_eq!((pacer.next_deadline() - start).as_millis() % 20, 0);
    }

    #[test]
    fn slightly_late_frame_is_flagged_but_not_skipped() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, P);
        let tick = pacer.on_wake(start + Duration::from_millis(15));
        assert_eq!(
            tick,
            Tick {
                late: true,
                skipped: 0
            }
        );
        assert_eq!(pacer.next_deadline(), start + P);
    }

    #[test]
    fn passing_frames_keeps_the_grid_and_stops_at_max() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, P);
        pacer.on_wake(start);
        // Slept until the deadline of frame 1 + 5: frames 1..=5 passed.
        let woke = pacer.deadline_after(5) + Duration::from_micros(300);
        assert_eq!(pacer.pass(woke, 5), 5);
        // Frame 6 is still to send, on the grid, not late.
        assert_eq!(pacer.next_deadline(), start + P * 6);
        assert!(!pacer.on_wake(woke).late);
        // Woken early (audio came): only the deadlines already gone.
        let early = pacer.next_deadline() + P * 2 + Duration::from_millis(5);
        assert_eq!(pacer.pass(early, 19), 3);
        assert!(pacer.next_deadline() > early);
        assert_eq!(pacer.pass(early, 19), 0);
        assert_eq!(pacer.frames(), 10);
    }
}
