//! Numbering and publishing one session's events on the bus (the mirror of
//! its data channel), so `Nats-Msg-Id` is unique and a consumer can see gaps.
//!
//! The id is `<session id>-<connection>-<seq>`: `seq` restarts at 1 on every
//! connection, and a resumed session keeps its id, so without the
//! connection part (a random 32-bit tag) the resumed session's first events
//! repeated ids JetStream had seen within its duplicate window and were
//! silently discarded.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::bus::{Bus, now_rfc3339};
use crate::events::{BusEvent, Event};

/// Numbers and publishes one session's events.
pub struct SessionEvents {
    bus: Bus,
    session_id: String,
    /// Tells this connection's events from those of earlier ones of the id.
    connection: u32,
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
            connection: rand::random(),
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
            .publish_event(ev.event.kind(), self.msg_id(seq), &ev);
    }

    fn msg_id(&self, seq: u64) -> String {
        format!("{}-{:08x}-{seq}", self.session_id, self.connection)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_differ_across_connections_of_one_session() {
        let a = SessionEvents::new(Bus::disabled(), "resumed-session-1".into());
        let b = SessionEvents::new(Bus::disabled(), "resumed-session-1".into());
        assert!(a.msg_id(1).starts_with("resumed-session-1-"));
        assert!(a.msg_id(1).ends_with("-1"));
        assert_ne!(a.msg_id(1), a.msg_id(2));
        // Two connections collide only if their random tags do (1 in 2^32).
        assert_ne!(a.msg_id(1), b.msg_id(1));
    }
}
