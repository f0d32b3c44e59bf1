//! HTTP (axum): the web page, signaling (`/ws`, `/whip`), the session REST
//! API (`/sessions`), health and metrics.

mod access;
mod errors;
mod health;
mod kb;
mod kb_sync;
mod listen;
mod rest;
mod whip;
mod ws;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::handler::HandlerWithoutStateExt;
use axum::middleware;
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::bus::Bus;
use crate::config::{Config, InferenceMode};
use crate::hub::{Hub, Slot};
use crate::limits::TokenBucket;
use crate::metrics::Metrics;
use crate::pipeline::speech::SpeechDeps;
use crate::rtc::liveness::{self, Liveness};
use crate::rtc::{ErrorCode, IceCandidate, Peer, PeerEvent, PeerStreams, RtcSettings, SignalError};
use crate::session::{Session, SessionContext};
use access::{Access, Caller};

/// Shared state of the HTTP server.
pub struct AppState {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub hub: Arc<Hub>,
    access: Access,
    /// Offers per client IP (`limits.offers_per_minute`).
    offers: std::sync::Mutex<HashMap<IpAddr, TokenBucket>>,
    speech: Option<SpeechDeps>,
    /// The live workers (`--inference nats`).
    workers: Option<Arc<crate::remote::Directory>>,
    started: Instant,
}

impl AppState {
    /// State for `config`; `speech` must be given for the speech pipeline.
    pub fn new(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        speech: Option<SpeechDeps>,
        bus: Bus,
        access: Access,
        workers: Option<Arc<crate::remote::Directory>>,
    ) -> Arc<Self> {
        let hub = Hub::new(config.clone(), metrics.clone(), bus);
        Arc::new(Self {
            config,
            metrics,
            hub,
            access,
            offers: std::sync::Mutex::new(HashMap::new()),
            speech,
            workers,
            started: Instant::now(),
        })
    }

    fn session_context(&self) -> SessionContext {
        SessionContext {
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            speech: self.speech.clone(),
        }
    }

    /// Reserve a slot for a new session of `caller` (with the id it asked
    /// for, to resume), or refuse with `busy` / `session_in_use` /
    /// `wrong_session`.
    fn admit(
        &self,
        caller: &Caller,
        requested: Option<&str>,
        client: Option<SocketAddr>,
    ) -> Result<Slot, SignalError> {
        let ip = self.limited_ip(client);
        self.check_offer_rate(ip)?;
        if self.hub.draining() {
            return Err(SignalError::new(
                ErrorCode::Draining,
                "the server is shutting down; connect again in a moment",
            ));
        }
        let id = match (caller.session_id(requested), requested) {
            (Ok(id), _) => id,
            // An unbound token may resume an id its own identity held until
            // just now: the page reconnecting after a lost connection.
            (Err(e), Some(r)) if e.code == ErrorCode::WrongSession => {
                if caller.identity().is_some() && self.hub.recent_owner(r) == caller.identity() {
                    Some(r.to_string())
                } else {
                    return Err(e);
                }
            }
            (Err(e), _) => return Err(e),
        };
        self.hub.admit(id.as_deref(), caller.identity(), ip)
    }

    /// The client's IP if per-IP limits apply to it.
    fn limited_ip(&self, client: Option<SocketAddr>) -> Option<IpAddr> {
        let ip = client?.ip();
        (!(self.config.limits.exempt_loopback && ip.is_loopback())).then_some(ip)
    }

    /// At most `limits.offers_per_minute` offers per client IP.
    fn check_offer_rate(&self, ip: Option<IpAddr>) -> Result<(), SignalError> {
        let Some(ip) = ip else { return Ok(()) };
        let per_minute = self.config.limits.offers_per_minute;
        let now = Instant::now();
        let Ok(mut buckets) = self.offers.lock() else {
            return Ok(());
        };
        // Forget clients whose allowance is whole again, so the map stays small.
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| !b.is_full(now));
        }
        let ok = buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(per_minute, now))
            .try_take(now);
        if ok {
            Ok(())
        } else {
            Err(SignalError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {per_minute} offers a minute from {ip}; slow down (limits.offers_per_minute)"
                ),
            ))
        }
    }

    /// Number of live sessions.
    /// The knowledge base, when the speech pipeline loaded one.
    pub fn kb(&self) -> Option<&Arc<crate::pipeline::retrieve::Retriever>> {
        self.speech.as_ref()?.kb.as_ref()
    }

    pub fn session_count(&self) -> usize {
        self.hub.count()
    }

    /// Cancel every session (shutdown).
    pub fn cancel_all(&self) {
        self.hub.cancel_all();
    }

    /// SIGTERM: `/readyz` turns false, new sessions are refused with
    /// `draining`, and turns and replies under way may finish until
    /// `deadline`; then every session ends. Prompts that were not spoken go
    /// back to JetStream (see `Hub::begin_drain`).
    pub async fn drain(&self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        self.hub.begin_drain(left.as_millis() as u64);
        let busy = self.hub.busy_count();
        tracing::info!(sessions = self.session_count(), busy, "draining");
        while self.hub.busy_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.hub.busy_count();
        if left > 0 {
            tracing::warn!(busy = left, "drain deadline: ending sessions mid-reply");
        }
        self.cancel_all();
    }

    /// Answer an offer and start its session in `slot`. On failure the
    /// slot is dropped, which frees it.
    async fn open_session(
        self: &Arc<Self>,
        mut slot: Slot,
        offer_sdp: &str,
    ) -> Result<Opened, SignalError> {
        let settings = RtcSettings::from(&self.config.rtc);
        match Peer::answer(&settings, offer_sdp).await {
            Ok((peer, PeerStreams { events, audio }, answer)) => {
                let session = Session::start(
                    slot.id.clone(),
                    Arc::new(peer),
                    audio,
                    self.session_context(),
                    slot.events.clone(),
                );
                slot.attach(session.control(), session.busy_flag());
                tracing::info!(session = %slot.id, "session started");
                let rtc = &self.config.rtc;
                Ok(Opened {
                    session,
                    events,
                    answer,
                    slot,
                    liveness: Liveness::new(
                        Instant::now(),
                        Duration::from_millis(rtc.connect_timeout_ms),
                        Duration::from_millis(rtc.disconnect_grace_ms),
                    ),
                })
            }
            Err(e) => {
                let code = match e {
                    crate::rtc::PeerError::Sdp(_) => ErrorCode::BadSdp,
                    _ => ErrorCode::Internal,
                };
                Err(SignalError::new(code, e.to_string()))
            }
        }
    }

    /// Stop a session and free its slot.
    async fn close_session(&self, session: Session, slot: Slot, reason: &str) {
        session.stop().await;
        tracing::info!(session = %slot.id, reason, "session ended");
        drop(slot);
    }

    fn record_error(&self, err: &SignalError) {
        self.metrics.signaling_error(err.code);
        tracing::warn!(code = err.code.as_str(), message = %err.message, "signaling error");
    }

    /// Count and log a refusal, and answer it as `{"error": {code, message}}`.
    fn refuse(&self, err: SignalError) -> Response {
        self.record_error(&err);
        errors::error(err.code, err.message)
    }
}

/// A session whose offer was answered, with everything its owner drives.
struct Opened {
    session: Session,
    events: mpsc::Receiver<PeerEvent>,
    answer: String,
    slot: Slot,
    liveness: Liveness,
}

/// What one wake-up of a session's peer side came to.
enum PeerStep {
    /// A local ICE candidate to trickle (`None`: gathering is complete).
    /// `/ws` sends it on; WHIP answered with every candidate already.
    Candidate(Option<IceCandidate>),
    /// Handled; go on.
    Continue,
    /// The session is over, for this reason.
    End(&'static str),
}

/// Wait for the next thing that happens to a session's peer: an event, a
/// cancel (`DELETE /whip/{id}`, shutdown), a panicked task, or the
/// liveness deadline. The one loop body of WHIP and `/ws` sessions.
async fn next_peer_step(opened: &mut Opened) -> PeerStep {
    let Opened {
        session,
        events,
        slot,
        liveness,
        ..
    } = opened;
    tokio::select! {
        _ = slot.cancel.cancelled() => PeerStep::End("cancelled"),
        _ = session.failed().cancelled() => PeerStep::End("session failed"),
        _ = liveness::sleep_until(liveness.deadline()) => {
            match liveness.check(Instant::now()) {
                Some(g) => {
                    tracing::info!(session = %slot.id, reason = g.as_str(), "giving up on the peer");
                    PeerStep::End(g.as_str())
                }
                None => PeerStep::Continue,
            }
        }
        ev = events.recv() => match ev {
            Some(PeerEvent::LocalCandidate(c)) => PeerStep::Candidate(Some(c)),
            Some(PeerEvent::GatheringComplete) => PeerStep::Candidate(None),
            Some(PeerEvent::Ended(why)) => {
                tracing::debug!(%why, "peer ended");
                PeerStep::End("peer ended")
            }
            Some(ev) => {
                liveness.on_event(&ev, Instant::now());
                session.on_peer_event(&ev).await;
                PeerStep::Continue
            }
            None => PeerStep::End("peer gone"),
        },
    }
}

/// Drive a WHIP session's peer side until it ends, is cancelled or is
/// given up on (the WebSocket handler runs the same steps beside its socket).
async fn run_session_events(state: Arc<AppState>, mut opened: Opened) {
    let reason = loop {
        if let PeerStep::End(reason) = next_peer_step(&mut opened).await {
            break reason;
        }
    };
    state
        .close_session(opened.session, opened.slot, reason)
        .await;
}

/// The axum router for `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let static_files =
        ServeDir::new(&state.config.web_dir).not_found_service(errors::not_found.into_service());
    let body_timeout = Duration::from_millis(state.config.http.body_timeout_ms);
    Router::new()
        .route("/ws", get(ws::handler))
        .route(
            "/whip",
            post(whip::post).layer(axum::extract::DefaultBodyLimit::max(
                state.config.max_message_bytes,
            )),
        )
        .route("/whip/{id}", delete(whip::delete))
        .route("/sessions", get(rest::list_sessions))
        .route(
            "/sessions/{id}/prompt",
            post(rest::post_prompt).layer(axum::extract::DefaultBodyLimit::max(
                state.config.max_message_bytes,
            )),
        )
        .route("/kb/docs", get(kb::list_docs))
        .route(
            "/kb/docs/{*name}",
            put(kb::put_doc)
                .delete(kb::delete_doc)
                .layer(axum::extract::DefaultBodyLimit::max(
                    state.config.kb.max_doc_bytes,
                )),
        )
        .route("/kb/search", get(kb::search))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback_service(static_files)
        .method_not_allowed_fallback(errors::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            access::host_check,
        ))
        // A body trickled in byte by byte must not hold a handler forever.
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .with_state(state)
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Access(String),
    #[error(transparent)]
    Speech(#[from] crate::engines::LoadError),
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    #[error("inference.mode = nats needs nats_url (VOXLOOP_NATS_URL, --nats-url)")]
    NoNats,
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// With NATS and a knowledge base: follow (and feed) the shared bucket
/// until `cancel`. Without NATS the folder's change feed is dropped, since
/// nothing follows it.
fn spawn_kb_sync(state: &Arc<AppState>, bus: &Bus, cancel: CancellationToken) {
    let Some(kb) = state.kb().cloned() else {
        return;
    };
    let feed = kb.take_feed();
    if bus.kb_store().is_none() {
        return;
    }
    let bus = bus.clone();
    let limit = state.config.kb.max_doc_bytes;
    tokio::spawn(async move {
        if let Some(store) = bus.kb_store() {
            kb_sync::run(store, kb, feed, limit, cancel).await;
        }
    });
}

/// Load the engines (for the speech pipeline), bind, and serve until
/// `shutdown` resolves. Prints `listening: URL` once ready.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let config = Arc::new(config);
    // Before the models load: a server that must not start says so at once.
    let access = Access::new(&config).map_err(ServeError::Access)?;
    if !access.enabled() {
        tracing::warn!(bind = %config.bind, "auth is off (no auth key): anyone who can reach this address may use it");
    }
    let metrics = Arc::new(Metrics::default());
    // Before the engines: with workers, the pipeline needs the connection.
    let bus = Bus::connect(&config.nats_url, &config.bus, metrics.clone()).await?;
    let (speech, workers) = match config.pipeline {
        crate::config::PipelineKind::Speech => {
            let started = Instant::now();
            let (deps, workers) = match (config.inference.mode, bus.client()) {
                (InferenceMode::Nats, Some(client)) => {
                    let (deps, dir) = crate::remote::setup::speech_deps(
                        config.clone(),
                        metrics.clone(),
                        client.clone(),
                    )
                    .await?;
                    (deps, Some(dir))
                }
                (InferenceMode::Nats, None) => return Err(ServeError::NoNats),
                (InferenceMode::Local, _) => (
                    SpeechDeps::load(config.clone(), metrics.clone()).await?,
                    None,
                ),
            };
            tracing::info!(ms = started.elapsed().as_millis() as u64, profile = %config.models.profile,
                inference = ?config.inference.mode, "models loaded");
            (Some(deps), workers)
        }
        crate::config::PipelineKind::Echo => (None, None),
    };
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.bind,
            source,
        })?;
    let addr: SocketAddr = listener.local_addr()?;
    let state = AppState::new(
        config.clone(),
        metrics,
        speech,
        bus.clone(),
        access,
        workers,
    );
    let consumer_cancel = CancellationToken::new();
    bus.spawn_prompt_consumer(
        state.hub.prompt_handler(),
        config.prompts.max_chars,
        consumer_cancel.clone(),
    );
    state.hub.serve_broadcast_relay(consumer_cancel.clone());
    spawn_kb_sync(&state, &bus, consumer_cancel.clone());
    let app = router(state.clone());
    // A labelled stdout line: scripts and tests wait for it.
    println!("listening: http://{addr}");
    tracing::info!(%addr, "voxloop serving");
    let st = state.clone();
    let limits = listen::Limits {
        header_timeout: Duration::from_millis(config.http.header_timeout_ms),
        max_connections: config.http.max_connections,
    };
    let drain = Duration::from_millis(config.shutdown.drain_timeout_ms);
    listen::serve(listener, app, limits, async move {
        shutdown.await;
        let deadline = Instant::now() + drain;
        // No new prompts; those a session holds go back when it ends.
        consumer_cancel.cancel();
        st.drain(deadline).await;
        // What is left of the deadline, for the connections still open.
        deadline.max(Instant::now() + Duration::from_millis(500))
    })
    .await;
    Ok(())
}
