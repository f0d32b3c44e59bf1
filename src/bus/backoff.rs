//! Waiting between tries while something does not answer: by default 0.5 s,
//! doubling up to 5 s. Used by the work that must outlast a NATS outage
//! (heard marks, parked prompts, the knowledge base's follower), and with
//! other bounds while the index queue is full.

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(500);
const MAX: Duration = Duration::from_secs(5);

/// The pause before the next try; each one taken doubles it, up to a bound.
#[derive(Debug)]
pub struct Backoff {
    pause: Duration,
    max: Duration,
}

impl Default for Backoff {
    /// 0.5 s, doubling up to 5 s.
    fn default() -> Self {
        Self::new(FIRST, MAX)
    }
}

impl Backoff {
    /// `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { pause: first, max }
    }

    /// The pause to take now (for a caller that waits on more than the
    /// clock); the next one is twice as long.
    pub fn next_pause(&mut self) -> Duration {
        let p = self.pause;
        self.pause = (p * 2).min(self.max);
        p
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pauses_double_up_to_five_seconds() {
        let mut b = Backoff::default();
        let mut seen = Vec::new();
        for _ in 0..6 {
            let t0 = tokio::time::Instant::now();
            b.wait().await;
            seen.push(t0.elapsed().as_millis());
        }
        assert_eq!(seen, [500, 1000, 2000, 4000, 5000, 5000]);
    }

    #[test]
    fn other_bounds() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(150));
        let seen: Vec<u128> = (0..4).map(|_| b.next_pause().as_millis()).collect();
        assert_eq!(seen, [50, 100, 150, 150]);
    }
}
