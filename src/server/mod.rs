//! HTTP (axum): the web page, signaling (`/ws`, `/whip`), health and metrics.

mod whip;
mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
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

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::speech::SpeechDeps;
use crate::rtc::{ErrorCode, Peer, PeerEvent, PeerStreams, SignalError};
use crate::session::{Session, SessionContext, new_session_id};

struct SessionEntry {
    cancel: CancellationToken,
}

/// Shared state of the HTTP server.
pub struct AppState {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    speech: Option<SpeechDeps>,
    started: Instant,
    sessions: Mutex<HashMap<String, SessionEntry>>,
}

impl AppState {
    /// State for `config`; `speech` must be given for the speech pipeline.
    pub fn new(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        speech: Option<SpeechDeps>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            metrics,
            speech,
            started: Instant::now(),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    fn session_context(&self) -> SessionContext {
        SessionContext {
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            speech: self.speech.clone(),
        }
    }

    /// Reserve a slot for a new session, or refuse with `busy`.
    fn admit(&self) -> Result<(String, CancellationToken), SignalError> {
        let mut sessions = self
            .sessions
            .lock()
            .map_err(|_| SignalError::new(ErrorCode::Internal, "session table poisoned"))?;
        if sessions.len() >= self.config.max_sessions {
            return Err(SignalError::new(
                ErrorCode::Busy,
                format!(
                    "server is at its limit of {} sessions; try again later",
                    self.config.max_sessions
                ),
            ));
        }
        let id = new_session_id();
        let cancel = CancellationToken::new();
        sessions.insert(
            id.clone(),
            SessionEntry {
                cancel: cancel.clone(),
            },
        );
        Ok((id, cancel))
    }

    fn release(&self, id: &str) {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(id);
        }
    }

    fn cancel_session(&self, id: &str) -> bool {
        match self.sessions.lock() {
            Ok(s) => match s.get(id) {
                Some(e) => {
                    e.cancel.cancel();
                    true
                }
                None => false,
            },
            Err(_) => false,
        }
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Cancel every session (shutdown).
    pub fn cancel_all(&self) {
        if let Ok(s) = self.sessions.lock() {
            for e in s.values() {
                e.cancel.cancel();
            }
        }
    }

    /// Answer an offer and start its session. On failure the slot is released.
    async fn open_session(
        self: &Arc<Self>,
        id: &str,
        offer_sdp: &str,
    ) -> Result<(Session, mpsc::Receiver<PeerEvent>, String), SignalError> {
        let settings = self.config.rtc_settings();
        match Peer::answer(&settings, offer_sdp).await {
            Ok((peer, PeerStreams { events, audio }, answer)) => {
                let session = Session::start(
                    id.to_string(),
                    Arc::new(peer),
                    audio,
                    self.session_context(),
                );
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
    Speech(#[from] crate::pipeline::speech::LoadError),
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
    let state = AppState::new(config, metrics, speech);
    let app = router(state.clone());
    // A labelled stdout line: scripts and tests wait for it.
    println!("listening: http://{addr}");
    tracing::info!(%addr, "voxloop serving");
    let st = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            st.cancel_all();
        })
        .await?;
    Ok(())
}
