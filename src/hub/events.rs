//! Numbering and publishing one session's events on the bus (the mirror of
//! its data channel), so `Nats-Msg-Id` (session id + sequence) is unique and
//! a consumer can see gaps.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::bus::{Bus, now_rfc3339};
use crate::events::{BusEvent, Event};

/// Numbers and publishes one session's events.
pub struct SessionEvents {
    bus: Bus,
    session_id: String,
    seq: AtomicU64,
    last_turn: AtomicU64,
}

impl std::fmt::Debug for SessionEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEvents")
            .field("session_id", &self.session_id)
            .field("seq", &self.seq)
            .finish()
    }
}

impl SessionEvents {
    pub fn new(bus: Bus, session_id: String) -> Self {
        Self {
            bus,
            session_id,
            seq: AtomicU64::new(0),
            last_turn: AtomicU64::new(0),
        }
    }

    /// The highest turn this session's events named so far.
    pub fn last_turn(&self) -> u64 {
        self.last_turn.load(Ordering::Relaxed)
    }

    /// Number `event` and publish it on `<prefix>.event.<kind>`.
    pub fn publish(&self, event: Event) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(t) = event.turn() {
            self.last_turn.fetch_max(t, Ordering::Relaxed);
        }
        let ev = BusEvent {
            session_id: Some(self.session_id.clone()),
            seq: Some(seq),
            at: now_rfc3339(),
            event,
        };
        self.bus
            .publish_event(ev.event.kind(), format!("{}-{seq}", self.session_id), &ev);
    }

    /// Mirror a data-channel event to the bus when it is one consumers want:
    /// final transcripts and replies.
    pub fn mirror(&self, ev: &Event) {
        if matches!(
            ev,
            Event::Transcript { is_final: true, .. } | Event::Reply { .. }
        ) {
            self.publish(ev.clone());
        }
    }
}
