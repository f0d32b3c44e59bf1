//! WHIP-style signaling: `POST /whip` with an SDP offer answers with the full
//! SDP (no trickle) and a `Location` to `DELETE` when done.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, run_session_events};
use crate::rtc::{ErrorCode, SignalError, wait_gathered};

/// How long to wait for ICE gathering before answering with what we have.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

fn error_response(state: &AppState, err: SignalError) -> Response {
    state.record_error(&err);
    let status = match err.code {
        ErrorCode::Busy => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::SessionInUse => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::BadMessage => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::BAD_REQUEST,
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&err.to_message()).unwrap_or_default(),
    )
        .into_response()
}

/// `?session=ID` resumes a session id (see `crate::hub`).
#[derive(Debug, serde::Deserialize)]
pub struct WhipQuery {
    session: Option<String>,
}

pub async fn post(
    State(state): State<Arc<AppState>>,
    Query(query): Query<WhipQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("application/sdp") {
        return error_response(
            &state,
            SignalError::new(
                ErrorCode::BadMessage,
                format!("Content-Type must be application/sdp, not {ctype:?}"),
            ),
        );
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return error_response(
            &state,
            SignalError::new(ErrorCode::BadSdp, "the offer is not UTF-8 text"),
        );
    };
    if !offer.trim_start().starts_with("v=0") {
        return error_response(
            &state,
            SignalError::new(ErrorCode::BadSdp, "the body is not an SDP offer"),
        );
    }
    let (id, cancel, bus_events) = match state.admit(query.session.as_deref()) {
        Ok(x) => x,
        Err(e) => return error_response(&state, e),
    };
    let (session, mut events, _) = match state.open_session(&id, bus_events, offer).await {
        Ok(x) => x,
        Err(e) => return error_response(&state, e),
    };
    // No trickle: wait for gathering so the answer carries every candidate.
    let (gathered, early) = wait_gathered(&mut events, GATHER_TIMEOUT).await;
    if !gathered {
        tracing::warn!(session = %id, "ICE gathering incomplete; answering with what we have");
    }
    let answer = session.peer.local_sdp().await.unwrap_or_default();
    for ev in &early {
        session.on_peer_event(ev).await;
    }
    tokio::spawn(run_session_events(state.clone(), session, events, cancel));
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, format!("/whip/{id}")),
        ],
        answer,
    )
        .into_response()
}

pub async fn delete(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> StatusCode {
    if state.hub.cancel_session(&id) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}
