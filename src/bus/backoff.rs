//! Waiting between tries while NATS does not answer: 0.5 s, doubling up to
//! 5 s. Used by the work that must outlast an outage (heard marks, parked
//! prompts).

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(500);
const MAX: Duration = Duration::from_secs(5);

/// The pause before the next try; each `wait` doubles it, up to 5 s.
#[derive(Debug)]
pub struct Backoff {
    pause: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { pause: FIRST }
    }
}

impl Backoff {
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(MAX);
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
}
