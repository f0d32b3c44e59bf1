//! A lock-free latency histogram in the Prometheus text format: fixed
//! buckets, a sum and a count, plus the largest value seen.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, ms.
const BOUNDS_MS: [u64; 9] = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

#[derive(Debug, Default)]
pub struct LagHistogram {
    buckets: [AtomicU64; BOUNDS_MS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl LagHistogram {
    pub fn observe(&self, lag: Duration) {
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = BOUNDS_MS.iter().position(|b| us <= b * 1000) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// `NAME_bucket{le=..}`, `NAME_sum`, `NAME_count` (seconds), and the
    /// largest value as the gauge `MAX_NAME`.
    pub fn render(&self, out: &mut String, name: &str, help: &str, max_name: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, n) in BOUNDS_MS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let le = *b as f64 / 1000.0;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let max = self.max_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum:.6}\n{name}_count {count}"
        );
        let _ = writeln!(
            out,
            "# HELP {max_name} The largest value of {name} since the process began.\n# TYPE {max_name} gauge\n{max_name} {max:.6}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::parse_sample;

    #[test]
    fn buckets_are_cumulative_and_the_max_is_kept() {
        let h = LagHistogram::default();
        for ms in [5, 15, 15, 90, 3000, 9000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut text = String::new();
        h.render(&mut text, "lag_seconds", "Lag.", "lag_max_seconds");
        let s = |n: &str| parse_sample(&text, n);
        assert_eq!(s("lag_seconds_bucket{le=\"0.01\"}"), Some(1.0));
        assert_eq!(s("lag_seconds_bucket{le=\"0.02\"}"), Some(3.0));
        assert_eq!(s("lag_seconds_bucket{le=\"0.1\"}"), Some(4.0));
        assert_eq!(s("lag_seconds_bucket{le=\"5\"}"), Some(5.0));
        assert_eq!(s("lag_seconds_bucket{le=\"+Inf\"}"), Some(6.0));
        assert_eq!(s("lag_seconds_count"), Some(6.0));
        assert_eq!(s("lag_seconds_sum"), Some(12.125));
        assert_eq!(s("lag_max_seconds"), Some(9.0));
    }
}
