//! HTTP (axum): the web page, signaling (`/ws`, `/whip`), the session REST
//! API (`/sessions`), health and metrics.

mod rest;
mod whip;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;

use crate::bus::Bus;
use crate::config::Config;
use crate::hub::{Hub, SessionEvents};
use crate::metrics::Metrics;
use crate::pipeline::speech::SpeechDeps;
use crate::rtc::{ErrorCode, Peer, PeerEvent, PeerStreams, RtcSettings, SignalError};
use crate::session::{Session, SessionContext};

/// Shared state of the HTTP server.
pub struct AppState {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub hub: Arc<Hub>,
    speech: Option<SpeechDeps>,
    started: Instant,
}

impl AppState {
    /// State for `config`; `speech` must be given for the speech pipeline.
    pub fn new(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        speech: Option<SpeechDeps>,
        bus: Bus,
    ) -> Arc<Self> {
        let hub = Hub::new(config.clone(), metrics.clone(), bus);
        Arc::new(Self {
            config,
            metrics,
            hub,
            speech,
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

    /// Reserve a slot for a new session (with the client's id to resume, if
    /// given), or refuse with `busy` / `session_in_use`.
    fn admit(
        &self,
        requested: Option<&str>,
    ) -> Result<(String, CancellationToken, Arc<SessionEvents>), SignalError> {
        self.hub.admit(requested)
    }

    fn release(&self, id: &str) {
        self.hub.release(id);
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.hub.count()
    }

    /// Cancel every session (shutdown).
    pub fn cancel_all(&self) {
        self.hub.cancel_all();
    }

    /// Answer an offer and start its session. On failure the slot is released.
    async fn open_session(
        self: &Arc<Self>,
        id: &str,
        bus_events: Arc<SessionEvents>,
        offer_sdp: &str,
    ) -> Result<(Session, mpsc::Receiver<PeerEvent>, String), SignalError> {
        let settings = RtcSettings::from(&self.config.rtc);
        match Peer::answer(&settings, offer_sdp).await {
            Ok((peer, PeerStreams { events, audio }, answer)) => {
                let session = Session::start(
                    id.to_string(),
                    Arc::new(peer),
                    audio,
                    self.session_context(),
                    bus_events,
                );
                self.hub.attach(id, session.control());
                self.metrics.sessions_total.fetch_add(1, Ordering::Relaxed);
                self.metrics.active_sessions.fetch_add(1, Ordering::Relaxed);
                tracing::info!(session = %id, "session started");
                Ok((session, events, answer))
            }
            Err(e) => {
                self.release(id);
                let code = match e {
                    crate::rtc::PeerError::Sdp(_) => ErrorCode::BadSdp,
                    _ => ErrorCode::Internal,
                };
                Err(SignalError::new(code, e.to_string()))
            }
        }
    }

    /// Stop a session and free its slot.
    async fn close_session(&self, session: Session, reason: &str) {
        let id = session.id.clone();
        session.stop().await;
        self.release(&id);
        self.metrics.active_sessions.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(session = %id, reason, "session ended");
    }

    fn record_error(&self, err: &SignalError) {
        self.metrics.signaling_error(err.code);
        tracing::warn!(code = err.code.as_str(), message = %err.message, "signaling error");
    }
}

/// Drive a session's peer events until it ends or is cancelled; used by WHIP
/// (the WebSocket handler has its own loop that also reads the socket).
async fn run_session_events(
    state: Arc<AppState>,
    session: Session,
    mut events: mpsc::Receiver<PeerEvent>,
    cancel: CancellationToken,
) {
    let reason = loop {
        tokio::select! {
            _ = cancel.cancelled() => break "deleted",
            ev = events.recv() => match ev {
                Some(PeerEvent::Ended(why)) => {
                    tracing::debug!(%why, "peer ended");
                    break "peer ended";
                }
                Some(ev) => session.on_peer_event(&ev).await,
                None => break "peer gone",
            },
        }
    };
    state.close_session(session, reason).await;
}

/// The axum router for `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let static_files = ServeDir::new(&state.config.web_dir);
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
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback_service(static_files)
        .with_state(state)
}

async fn healthz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(json!({
        "status": "ok",
        "sessions": state.session_count(),
        "uptime_s": state.started.elapsed().as_secs(),
        "pipeline": state.config.pipeline,
        "nats": state.hub.bus().state(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Speech(#[from] crate::engines::LoadError),
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Load the engines (for the speech pipeline), bind, and serve until
/// `shutdown` resolves. Prints `listening: URL` once ready.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::default());
    let speech = match config.pipeline {
        crate::config::PipelineKind::Speech => {
            let started = Instant::now();
            let deps = SpeechDeps::load(config.clone(), metrics.clone()).await?;
            tracing::info!(ms = started.elapsed().as_millis() as u64, profile = %config.models.profile, "models loaded");
            Some(deps)
        }
        crate::config::PipelineKind::Echo => None,
    };
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.bind,
            source,
        })?;
    let addr: SocketAddr = listener.local_addr()?;
    let bus = Bus::connect(&config.nats_url, &config.bus, metrics.clone()).await?;
    let state = AppState::new(config.clone(), metrics, speech, bus.clone());
    let consumer_cancel = CancellationToken::new();
    bus.spawn_prompt_consumer(
        state.hub.prompt_handler(),
        config.prompts.max_chars,
        consumer_cancel.clone(),
    );
    let app = router(state.clone());
    // A labelled stdout line: scripts and tests wait for it.
    println!("listening: http://{addr}");
    tracing::info!(%addr, "voxloop serving");
    let st = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            consumer_cancel.cancel();
            st.cancel_all();
        })
        .await?;
    Ok(())
}
