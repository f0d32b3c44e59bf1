//! [`Tracker`]: what the intent worker knows of each live conversation (its
//! last lines, when it went quiet, how many follow-ups it had), fed the bus
//! events and asked what is due. No IO, no clock: the caller passes the time.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::IntentConfig;
use crate::events::{BusEvent, Event};
use crate::pipeline::llm::Role;

/// Lines of a conversation kept per session.
const KEEP_LINES: usize = 8;
/// Conversations followed at once; past it the quietest is forgotten, so a
/// flood of made-up session ids cannot grow the worker without bound.
const MAX_TRACKED: usize = 10_000;
/// Longest line kept from an event, in characters (the prompt stays short).
const MAX_LINE_CHARS: usize = 600;
struct Conv {
    lines: VecDeque<(Role, String)>,
    last_activity: Instant,
    /// The user said something that no follow-up has picked up yet.
    open: bool,
    followups: u32,
}

/// A follow-up to ask: which session, and the conversation so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub session_id: String,
    pub lines: Vec<(Role, String)>,
    /// 1 for the first follow-up of the session, ...
    pub number: u32,
}

/// What the worker knows of each live conversation. No IO, no clock.
pub struct Tracker {
    cfg: IntentConfig,
    sessions: HashMap<String, Conv>,
}

impl Tracker {
    pub fn new(cfg: IntentConfig) -> Self {
        Self {
            cfg,
            sessions: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Take in one event from the bus.
    pub fn on_event(&mut self, ev: &BusEvent, now: Instant) {
        // Only ids a server could have made: anything else cannot be
        // prompted (the subject would be invalid) and is not worth memory.
        let Some(id) = ev
            .session_id
            .as_deref()
            .filter(|id| crate::bus::valid_session_id(id))
        else {
            return;
        };
        if let Event::SessionEnded { .. } = ev.event {
            self.sessions.remove(id);
            return;
        }
        if !self.sessions.contains_key(id)
            && self.sessions.len() >= MAX_TRACKED
            && let Some(quietest) = self
                .sessions
                .iter()
                .min_by_key(|(_, c)| c.last_activity)
                .map(|(k, _)| k.clone())
        {
            self.sessions.remove(&quietest);
        }
        let conv = self.sessions.entry(id.to_string()).or_insert_with(|| Conv {
            lines: VecDeque::new(),
            last_activity: now,
            open: false,
            followups: 0,
        });
        conv.last_activity = now;
        let (role, text) = match &ev.event {
            Event::Transcript { text, .. } => (Role::User, text.trim()),
            Event::Reply { text, .. } => (Role::Assistant, text.trim()),
            _ => return,
        };
        if text.is_empty() {
            return;
        }
        if role == Role::User {
            conv.open = true;
        }
        conv.lines
            .push_back((role, text.chars().take(MAX_LINE_CHARS).collect()));
        while conv.lines.len() > KEEP_LINES {
            conv.lines.pop_front();
        }
    }

    /// Sessions that need a follow-up now; each is returned once per opening.
    pub fn due(&mut self, now: Instant) -> Vec<Due> {
        let quiet = Duration::from_millis(self.cfg.quiet_ms);
        let mut out = Vec::new();
        for (id, c) in self.sessions.iter_mut() {
            if c.open
                && c.followups < self.cfg.max_followups
                && now.saturating_duration_since(c.last_activity) >= quiet
            {
                c.open = false;
                c.followups += 1;
                out.push(Due {
                    session_id: id.clone(),
                    lines: c.lines.iter().cloned().collect(),
                    number: c.followups,
                });
            }
        }
        out.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(quiet_ms: u64) -> IntentConfig {
        IntentConfig {
            quiet_ms,
            max_followups: 2,
            ..Default::default()
        }
    }

    fn on_bus(session_id: Option<&str>, event: Event) -> BusEvent {
        BusEvent {
            session_id: session_id.map(str::to_string),
            seq: Some(1),
            at: "2026-01-01T00:00:00Z".into(),
            event,
        }
    }

    fn said(session_id: Option<&str>, text: &str) -> BusEvent {
        on_bus(
            session_id,
            Event::Transcript {
                turn: 1,
                text: text.into(),
                is_final: true,
                typed: false,
            },
        )
    }

    #[test]
    fn bad_ids_are_ignored_and_the_tracker_is_bounded() {
        let mut t = Tracker::new(cfg(1000));
        let t0 = Instant::now();
        t.on_event(&said(Some("../../etc"), "hello"), t0);
        t.on_event(&said(Some("x"), "hello"), t0);
        assert!(t.is_empty());
        for i in 0..MAX_TRACKED + 5 {
            let id = format!("session-{i:08}");
            t.on_event(
                &said(Some(&id), "hello"),
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(t.len(), MAX_TRACKED);
        // The quietest (the first ones) went.
        assert!(!t.sessions.contains_key("session-00000000"));
        assert!(
            t.sessions
                .contains_key(&format!("session-{:08}", MAX_TRACKED + 4))
        );
        let long = "word ".repeat(1000);
        t.on_event(&said(Some("session-long-1"), &long), t0);
        let kept = &t.sessions["session-long-1"].lines[0].1;
        assert_eq!(kept.chars().count(), MAX_LINE_CHARS);
    }

    #[test]
    fn follows_up_once_after_the_user_goes_quiet() {
        let mut t = Tracker::new(cfg(1000));
        let t0 = Instant::now();
        t.on_event(
            &on_bus(Some("session-1"), Event::SessionStarted { turn: 0 }),
            t0,
        );
        assert!(
            t.due(t0 + Duration::from_secs(5)).is_empty(),
            "nothing said yet"
        );
        t.on_event(
            &said(Some("session-1"), "I'm planning a trip to Japan."),
            t0,
        );
        let reply = Event::Reply {
            turn: 1,
            text: "How exciting!".into(),
            interrupted: false,
            prompt_id: None,
            sources: Vec::new(),
        };
        t.on_event(
            &on_bus(Some("session-1"), reply),
            t0 + Duration::from_millis(500),
        );
        assert!(
            t.due(t0 + Duration::from_millis(1400)).is_empty(),
            "not quiet long enough"
        );
        let due = t.due(t0 + Duration::from_millis(1600));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].session_id, "session-1");
        assert_eq!(due[0].number, 1);
        assert_eq!(due[0].lines.len(), 2);
        assert!(
            t.due(t0 + Duration::from_secs(60)).is_empty(),
            "once per opening"
        );
    }

    #[test]
    fn stops_after_the_limit_and_forgets_ended_sessions() {
        let mut t = Tracker::new(cfg(0));
        let t0 = Instant::now();
        for i in 0..4 {
            t.on_event(&said(Some("session-2"), &format!("topic {i}")), t0);
            let n = t.due(t0).len();
            assert_eq!(n, usize::from(i < 2), "round {i}");
        }
        t.on_event(
            &on_bus(Some("session-2"), Event::SessionEnded { turn: 4 }),
            t0,
        );
        assert!(t.is_empty());
        t.on_event(&said(None, "no session id"), t0);
        assert!(t.is_empty());
    }
}
