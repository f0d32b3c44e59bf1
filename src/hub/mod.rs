//! The live sessions of one server, as signaling, prompts and events see them.
//!
//! The hub owns the session table: signaling admits and releases sessions
//! here, and every prompt (from NATS or `POST /sessions/{id}/prompt`) is
//! routed here to the session's [`Control`] channel. It also numbers each
//! session's events, so `Nats-Msg-Id` (session id + sequence) is unique and
//! a consumer can see gaps.
//!
//! Session ids can be chosen by the client (`session_id` in the `offer`,
//! `?session=` on WHIP) to resume a conversation's identity after a
//! reconnect: a prompt for an id that is not live waits up to
//! `prompts.reconnect_wait_ms` (bounded by its expiry) for that id to come
//! back before it is dropped as `no_session`. From NATS it waits in the
//! parked stream ([`parked`]), so it holds no slot of the prompt consumer.

mod events;
mod parked;
mod relay;
mod routing;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::bus::payload::rfc3339;
use crate::bus::{Bus, new_session_id};
use crate::config::Config;
use crate::events::Event;
use crate::metrics::Metrics;
use crate::prompt::Control;
use crate::rtc::{ErrorCode, SignalError};

pub use events::SessionEvents;
pub use routing::Delivered;

/// Commands a session may have waiting before it reads them.
pub const CONTROL_QUEUE: usize = 64;

struct Entry {
    cancel: CancellationToken,
    /// Set once the session's tasks run (after the offer was answered).
    control: Option<mpsc::Sender<Control>>,
    events: Arc<SessionEvents>,
    started_at: OffsetDateTime,
    /// The token identity that opened it (auth on), to recognise its own token.
    owner: Option<String>,
    /// The session's busy flag, once attached.
    busy: Option<Arc<AtomicBool>>,
    /// The client's address, when per-IP limits apply to it.
    ip: Option<IpAddr>,
    /// Ends this session's answering of prompts relayed by other servers.
    relay: CancellationToken,
}

/// A live session, as `GET /sessions` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub started_at: String,
    pub turns: u64,
}

/// A reserved place in the session table. Dropping it frees the place, on
/// every path: the session ended, its offer failed, the request that made
/// it was abandoned, or its owner panicked. Before this guard a WHIP client
/// that hung up while the server gathered candidates left its entry behind
/// for good.
pub struct Slot {
    hub: Arc<Hub>,
    pub id: String,
    /// Cancelled to end the session (`DELETE /whip/{id}`, shutdown).
    pub cancel: CancellationToken,
    pub events: Arc<SessionEvents>,
    attached: bool,
}

impl Slot {
    /// The session's tasks run: route prompts to `control` and count it
    /// live; `busy` says when it is in a turn (for a draining server).
    pub fn attach(&mut self, control: mpsc::Sender<Control>, busy: Arc<AtomicBool>) {
        self.hub.attach(&self.id, control, busy);
        self.hub.serve_relay(&self.id);
        if !self.attached {
            self.attached = true;
            self.hub.spawn_unpark(&self.id);
            Metrics::inc(&self.hub.metrics.sessions_total);
            self.hub
                .metrics
                .active_sessions
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.attached {
            self.hub
                .metrics
                .active_sessions
                .fetch_sub(1, Ordering::Relaxed);
        }
        self.hub.release(&self.id);
    }
}

/// Registry of live sessions and router of prompts.
pub struct Hub {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    bus: Bus,
    sessions: Mutex<HashMap<String, Entry>>,
    /// Who owned recently ended sessions, so the same identity may resume
    /// its id (a page reconnecting) while prompts wait for it; nobody else may.
    recent_owners: Mutex<HashMap<String, (String, Instant)>>,
    draining: AtomicBool,
    changed: Notify,
}

/// Most ended sessions whose owner is remembered.
const RECENT_OWNERS: usize = 4096;

impl Hub {
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, bus: Bus) -> Arc<Self> {
        Arc::new(Self {
            config,
            metrics,
            bus,
            sessions: Mutex::new(HashMap::new()),
            recent_owners: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    fn table(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Entry>>, SignalError> {
        self.sessions
            .lock()
            .map_err(|_| SignalError::new(ErrorCode::Internal, "session table poisoned"))
    }

    /// Reserve a slot for a new session, with the client's id if it asked
    /// for one (to resume), or refuse with `busy` / `session_in_use`.
    /// `ip` is the client's address when per-IP limits apply to it.
    pub fn admit(
        self: &Arc<Self>,
        requested: Option<&str>,
        owner: Option<String>,
        ip: Option<IpAddr>,
    ) -> Result<Slot, SignalError> {
        let mut sessions = self.table()?;
        let per_ip = self.config.limits.sessions_per_ip;
        if let Some(ip) = ip
            && sessions.values().filter(|e| e.ip == Some(ip)).count() >= per_ip
        {
            return Err(SignalError::new(
                ErrorCode::RateLimited,
                format!("{per_ip} sessions from {ip} are live already (limits.sessions_per_ip)"),
            ));
        }
        if sessions.len() >= self.config.max_sessions {
            return Err(SignalError::new(
                ErrorCode::Busy,
                format!(
                    "server is at its limit of {} sessions; try again later",
                    self.config.max_sessions
                ),
            ));
        }
        let id = match requested {
            Some(id) if !crate::bus::valid_session_id(id) => {
                return Err(SignalError::new(
                    ErrorCode::BadMessage,
                    "session_id must be 8 to 64 letters, digits, '-' or '_'",
                ));
            }
            Some(id) if sessions.contains_key(id) => {
                return Err(SignalError::new(
                    ErrorCode::SessionInUse,
                    format!("session {id} is live on another connection"),
                ));
            }
            Some(id) => id.to_string(),
            None => new_session_id(),
        };
        let cancel = CancellationToken::new();
        let events = Arc::new(SessionEvents::new(self.bus.clone(), id.clone()));
        sessions.insert(
            id.clone(),
            Entry {
                cancel: cancel.clone(),
                control: None,
                events: events.clone(),
                started_at: OffsetDateTime::now_utc(),
                owner,
                busy: None,
                ip,
                relay: CancellationToken::new(),
            },
        );
        Ok(Slot {
            hub: self.clone(),
            id,
            cancel,
            events,
            attached: false,
        })
    }

    /// The session's tasks run: prompts may now reach it.
    fn attach(&self, id: &str, control: mpsc::Sender<Control>, busy: Arc<AtomicBool>) {
        if let Ok(mut s) = self.sessions.lock()
            && let Some(e) = s.get_mut(id)
        {
            e.control = Some(control);
            e.busy = Some(busy);
            e.events.publish(Event::SessionStarted { turn: 0 });
        }
        self.changed.notify_waiters();
    }

    /// Forget a session (ended, or its offer failed); only [`Slot`]'s drop calls it.
    fn release(&self, id: &str) {
        let gone = self.sessions.lock().ok().and_then(|mut s| s.remove(id));
        if let Some(e) = &gone {
            e.relay.cancel();
        }
        if let Some(owner) = gone.as_ref().and_then(|e| e.owner.clone())
            && let Ok(mut recent) = self.recent_owners.lock()
        {
            let now = Instant::now();
            recent.retain(|_, (_, until)| *until > now);
            if recent.len() < RECENT_OWNERS {
                let keep = Duration::from_millis(self.config.prompts.reconnect_wait_ms);
                recent.insert(id.to_string(), (owner, now + keep));
            }
        }
        if let Some(e) = gone
            && e.control.is_some()
        {
            e.events.publish(Event::SessionEnded {
                turn: e.events.last_turn(),
            });
        }
    }

    /// Who opened session `id` (`Some(None)`: nobody known, auth off), or
    /// `None` if it is not live.
    pub fn owner_of(&self, id: &str) -> Option<Option<String>> {
        let s = self.sessions.lock().ok()?;
        s.get(id).map(|e| e.owner.clone())
    }

    /// The identity that owned ended session `id`, while it may resume.
    pub fn recent_owner(&self, id: &str) -> Option<String> {
        let recent = self.recent_owners.lock().ok()?;
        let (owner, until) = recent.get(id)?;
        (*until > Instant::now()).then(|| owner.clone())
    }

    pub fn cancel_session(&self, id: &str) -> bool {
        match self.sessions.lock() {
            Ok(s) => s.get(id).map(|e| e.cancel.cancel()).is_some(),
            Err(_) => false,
        }
    }

    /// Shutting down: a prompt whose session ends now is handed back to
    /// JetStream (nak) for another server, not recorded as dropped.
    /// Stop admitting, and tell every live session's client that it ends
    /// within `deadline_ms` (a full control queue skips the notice).
    pub fn begin_drain(&self, deadline_ms: u64) {
        self.draining.store(true, Ordering::Release);
        for (_, control) in self.all_controls() {
            let _ = control.try_send(Control::Draining { deadline_ms });
        }
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Sessions in a turn or a reply.
    pub fn busy_count(&self) -> usize {
        match self.sessions.lock() {
            Ok(s) => s
                .values()
                .filter(|e| e.busy.as_ref().is_some_and(|b| b.load(Ordering::Acquire)))
                .count(),
            Err(_) => 0,
        }
    }

    pub fn cancel_all(&self) {
        if let Ok(s) = self.sessions.lock() {
            for e in s.values() {
                e.cancel.cancel();
            }
        }
    }

    pub fn count(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Live sessions, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut out: Vec<(OffsetDateTime, SessionInfo)> = match self.sessions.lock() {
            Ok(s) => s
                .iter()
                .filter(|(_, e)| e.control.is_some())
                .map(|(id, e)| {
                    (
                        e.started_at,
                        SessionInfo {
                            id: id.clone(),
                            started_at: rfc3339(e.started_at),
                            turns: e.events.last_turn(),
                        },
                    )
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        out.sort_by_key(|(t, _)| *t);
        out.into_iter().map(|(_, i)| i).collect()
    }

    fn control_of(&self, id: &str) -> Option<(mpsc::Sender<Control>, Arc<SessionEvents>)> {
        let s = self.sessions.lock().ok()?;
        let e = s.get(id)?;
        Some((e.control.clone()?, e.events.clone()))
    }

    fn all_controls(&self) -> Vec<(String, mpsc::Sender<Control>)> {
        match self.sessions.lock() {
            Ok(s) => s
                .iter()
                .filter_map(|(id, e)| Some((id.clone(), e.control.clone()?)))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A hub without NATS, for the hub's unit tests.
    pub(crate) fn hub(max_sessions: usize) -> Arc<Hub> {
        let config = Config {
            max_sessions,
            ..Config::default()
        };
        Hub::new(
            Arc::new(config),
            Arc::new(Metrics::default()),
            Bus::disabled(),
        )
    }

    #[test]
    fn admit_resume_and_limits() {
        let h = hub(2);
        let a = h.admit(None, None, None).expect("first");
        assert_eq!(a.id.len(), 32);
        let e = h
            .admit(Some("bad id"), None, None)
            .err()
            .expect("invalid id");
        assert_eq!(e.code, ErrorCode::BadMessage);
        let b = h
            .admit(Some("user-42-tab-1"), None, None)
            .expect("resume id");
        assert_eq!(b.id, "user-42-tab-1");
        let e = h.admit(None, None, None).err().expect("full");
        assert_eq!(e.code, ErrorCode::Busy);
        drop(b);
        let e = h.admit(Some(&a.id), None, None).err().expect("in use");
        assert_eq!(e.code, ErrorCode::SessionInUse);
        assert_eq!(h.count(), 1);
    }

    #[test]
    fn sessions_per_ip() {
        let h = hub(64);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let per_ip = h.config.limits.sessions_per_ip;
        let slots: Vec<Slot> = (0..per_ip)
            .map(|_| h.admit(None, None, Some(ip)).expect("under the limit"))
            .collect();
        let e = h.admit(None, None, Some(ip)).err().expect("over the limit");
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert!(
            h.admit(None, None, Some("192.0.2.8".parse().unwrap()))
                .is_ok()
        );
        drop(slots);
        assert!(h.admit(None, None, Some(ip)).is_ok());
    }

    #[test]
    fn a_slot_is_freed_on_every_path() {
        let h = hub(4);
        let mut s = h.admit(None, None, None).expect("slot");
        let (tx, _rx) = mpsc::channel(1);
        s.attach(tx, Arc::new(AtomicBool::new(false)));
        assert_eq!(h.count(), 1);
        assert_eq!(
            h.metrics
                .active_sessions
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        drop(s);
        assert_eq!(h.count(), 0);
        assert_eq!(
            h.metrics
                .active_sessions
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        // A panicking owner frees its slot too.
        let h2 = h.clone();
        let r = std::thread::spawn(move || {
            let _s = h2.admit(None, None, None).expect("slot");
            panic!("owner dies");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(h.count(), 0);
    }
}
