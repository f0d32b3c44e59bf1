//! WHIP-style signaling: `POST /whip` with an SDP offer answers with the full
//! SDP (no trickle) and a `Location` to `DELETE` when done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

use super::access::{self, Caller};
use super::listen::ClientAddr;
use super::{AppState, errors, run_session_events};
use crate::auth::Grant;
use crate::rtc::{ErrorCode, SignalError, wait_gathered};

/// How long to wait for ICE gathering before answering with what we have.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// WHIP refusals carry the signaling protocol's `error` message as their
/// body, so one client parser reads both.
fn error_response(state: &AppState, err: SignalError) -> Response {
    state.record_error(&err);
    (
        errors::status_of(err.code),
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
    ClientAddr(client): ClientAddr,
    Query(query): Query<WhipQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match state
        .access
        .check_origin(&headers)
        .and_then(|()| state.access.require(access::bearer(&headers), Grant::Join))
    {
        Ok(c) => c,
        Err(e) => return error_response(&state, e),
    };
    if let Err(e) = errors::require_content_type(&headers, "application/sdp") {
        return error_response(&state, e);
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
    // The session is opened in its own task: if the client hangs up while
    // we gather candidates, hyper drops this handler, and the session must
    // still have an owner that frees it (at once, as nobody reads the answer).
    let (answered, answer) = oneshot::channel();
    tokio::spawn(open_and_run(
        state.clone(),
        caller,
        client,
        query.session,
        offer.to_string(),
        answered,
    ));
    match answer.await {
        Ok(Ok((id, answer))) => (
            StatusCode::CREATED,
            [
                (header::CONTENT_TYPE, "application/sdp".to_string()),
                (header::LOCATION, format!("/whip/{id}")),
            ],
            answer,
        )
            .into_response(),
        Ok(Err(e)) => error_response(&state, e),
        Err(_) => error_response(
            &state,
            SignalError::new(ErrorCode::Internal, "the session failed while starting"),
        ),
    }
}

/// Admit, answer, gather, hand the answer to the request, then own the
/// session until it ends.
async fn open_and_run(
    state: Arc<AppState>,
    caller: Caller,
    client: Option<SocketAddr>,
    requested: Option<String>,
    offer: String,
    answered: oneshot::Sender<Result<(String, String), SignalError>>,
) {
    let opened = match state.admit(&caller, requested.as_deref(), client) {
        Ok(slot) => state.open_session(slot, &offer).await,
        Err(e) => Err(e),
    };
    let mut opened = match opened {
        Ok(o) => o,
        Err(e) => {
            let _ = answered.send(Err(e));
            return;
        }
    };
    // No trickle: wait for gathering so the answer carries every candidate.
    let (gathered, early) = wait_gathered(&mut opened.events, GATHER_TIMEOUT).await;
    if !gathered {
        tracing::warn!(session = %opened.slot.id, "ICE gathering incomplete; answering with what we have");
    }
    let answer = opened.session.peer.local_sdp().await.unwrap_or_default();
    for ev in &early {
        opened.liveness.on_event(ev, std::time::Instant::now());
        opened.session.on_peer_event(ev).await;
    }
    if answered.send(Ok((opened.slot.id.clone(), answer))).is_err() {
        state
            .close_session(opened.session, opened.slot, "client left before the answer")
            .await;
        return;
    }
    run_session_events(state, opened).await;
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let caller = match state.access.caller(access::bearer(&headers)) {
        Ok(c) => c,
        Err(e) => return error_response(&state, e),
    };
    let Some(owner) = state.hub.owner_of(&id) else {
        return errors::error(ErrorCode::NotFound, format!("no live session {id:?}"));
    };
    if !caller.may_act_on(&id, owner.as_deref(), Grant::Join) {
        return error_response(
            &state,
            SignalError::new(
                ErrorCode::WrongSession,
                format!("this token may not end session {id:?} (its own token or admin)"),
            ),
        );
    }
    state.hub.cancel_session(&id);
    StatusCode::OK.into_response()
}
