//! When to give up on a peer: one that never connects, or one whose
//! connection dropped and did not come back.
//!
//! Sans-IO: the owner of a session feeds it the peer's events and asks for
//! the next deadline; it never sleeps or reads a clock itself. Without it a
//! peer that never connects held its slot for the engine's ~30 s ICE
//! timeout, and a transient `Disconnected` (a Wi-Fi hiccup) ended the
//! session at once although ICE can recover from it.

use std::time::{Duration, Instant};

use super::PeerEvent;

/// Why a session was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The peer did not connect within the connect timeout.
    NeverConnected,
    /// The connection was lost and did not recover within the grace period.
    Lost,
}

impl GiveUp {
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUp::NeverConnected => "connect timeout",
            GiveUp::Lost => "disconnected",
        }
    }
}

/// The connection watch of one session.
#[derive(Debug, Clone)]
pub struct Liveness {
    connect_by: Instant,
    grace: Duration,
    connected: bool,
    lost_since: Option<Instant>,
}

impl Liveness {
    /// A session answered at `now` must connect within `connect_timeout`;
    /// once connected, a lost connection may recover within `grace`.
    pub fn new(now: Instant, connect_timeout: Duration, grace: Duration) -> Self {
        Self {
            connect_by: now + connect_timeout,
            grace,
            connected: false,
            lost_since: None,
        }
    }

    pub fn on_event(&mut self, ev: &PeerEvent, now: Instant) {
        match ev {
            PeerEvent::Connected => {
                self.connected = true;
                self.lost_since = None;
            }
            PeerEvent::Disconnected => {
                self.lost_since.get_or_insert(now);
            }
            _ => {}
        }
    }

    /// When [`Liveness::check`] will give up unless an event comes first.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.connected {
            Some(self.connect_by)
        } else {
            self.lost_since.map(|t| t + self.grace)
        }
    }

    /// Give up at `now`?
    pub fn check(&self, now: Instant) -> Option<GiveUp> {
        let deadline = self.deadline()?;
        (now >= deadline).then_some(if self.connected {
            GiveUp::Lost
        } else {
            GiveUp::NeverConnected
        })
    }
}

/// Sleep until `deadline`, or forever without one (for `select!`).
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Peer events at ms offsets, when to check, and the verdict then.
    type Case = (&'static [(u64, PeerEvent)], u64, Option<GiveUp>);

    #[test]
    fn verdicts() {
        use PeerEvent::{Connected as C, Disconnected as D};
        let cases: &[Case] = &[
            (&[], 999, None),
            (&[], 1000, Some(GiveUp::NeverConnected)),
            (&[(10, C)], 5000, None),
            (&[(10, C), (100, D)], 599, None),
            (&[(10, C), (100, D)], 600, Some(GiveUp::Lost)),
            (&[(10, C), (100, D), (300, C)], 5000, None),
            // A second Disconnected does not restart the grace period.
            (&[(10, C), (100, D), (400, D)], 600, Some(GiveUp::Lost)),
            // Disconnected before ever connecting: still the connect timeout.
            (&[(100, D)], 999, None),
        ];
        let t0 = Instant::now();
        for (i, (events, at, want)) in cases.iter().enumerate() {
            let mut l = Liveness::new(t0, Duration::from_millis(1000), Duration::from_millis(500));
            for (t, ev) in events.iter() {
                l.on_event(ev, t0 + Duration::from_millis(*t));
            }
            assert_eq!(l.check(t0 + Duration::from_millis(*at)), *want, "case {i}");
        }
    }
}
