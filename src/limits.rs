//! Rate limits as token buckets: `capacity` requests at once, refilled at
//! `per_minute`. Pure (the caller passes the time), so the server's per-IP,
//! per-session and per-socket limits share one tested piece.

use std::time::Instant;

/// One client's allowance.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Full at `now`: `per_minute` requests, all of them at once if need be.
    pub fn new(per_minute: u32, now: Instant) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Self {
            capacity,
            per_sec: capacity / 60.0,
            tokens: capacity,
            last: now,
        }
    }

    /// Take one request's token at `now`, or say no.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + dt * self.per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Back to full by `now` (an idle client's bucket can be forgotten).
    pub fn is_full(&self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + dt * self.per_sec >= self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(6, t0); // one per 10 s
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let taken: Vec<bool> = (0..8).map(|_| b.try_take(t0)).collect();
        assert_eq!(taken, [true, true, true, true, true, true, false, false]);
        assert!(!b.try_take(at(9.0)));
        assert!(b.try_take(at(10.5)));
        assert!(!b.try_take(at(11.0)));
        assert!(!b.is_full(at(30.0)));
        assert!(b.is_full(at(80.0)));
        // A clock that goes backwards neither refills nor panics.
        assert!(!b.try_take(t0));
    }
}
