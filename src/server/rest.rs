//! The session REST API, for users without NATS:
//! `GET /sessions` lists live sessions; `POST /sessions/{id}/prompt` queues
//! a proactive prompt (the same payload as on NATS, `id` optional), and with
//! `?wait=true` answers only once it was spoken or dropped.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AppState, access, errors};
use crate::auth::Grant;
use crate::metrics::Metrics;
use crate::prompt::{DropReason, Prompt, PromptOutcome, parse_prompt};
use crate::rtc::{ErrorCode, SignalError};

pub async fn list_sessions(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = state.access.require(access::bearer(&headers), Grant::Admin) {
        return state.refuse(e);
    }
    Json(json!({ "sessions": state.hub.list() })).into_response()
}

#[derive(Debug, serde::Deserialize)]
pub struct PromptQuery {
    #[serde(default)]
    wait: bool,
}

pub async fn post_prompt(
    State(state): State<Arc<AppState>>,
    Path(session_id): Path<String>,
    Query(query): Query<PromptQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match state.access.caller(access::bearer(&headers)) {
        Ok(c) => c,
        Err(e) => return state.refuse(e),
    };
    let owner = state.hub.owner_of(&session_id).flatten();
    if !caller.may_act_on(&session_id, owner.as_deref(), Grant::Prompt) {
        return state.refuse(SignalError::new(
            ErrorCode::MissingGrant,
            format!(
                "prompting session {session_id:?} needs the prompt grant, admin, or its own token"
            ),
        ));
    }
    // JSON only: a cross-site HTML form can post text/plain without a
    // preflight, but not application/json.
    if let Err(e) = errors::require_content_type(&headers, "application/json") {
        return errors::error(e.code, e.message);
    }
    // The id is optional over HTTP: give one to a payload that has none.
    let mut body = body.to_vec();
    if let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&body)
        && !obj.contains_key("id")
    {
        obj.insert("id".into(), json!(Prompt::new(String::new()).id));
        body = Value::Object(obj).to_string().into_bytes();
    }
    let prompt = match parse_prompt(&body, state.config.prompts.max_chars) {
        Ok(p) => p,
        Err(r) => {
            Metrics::inc(&state.metrics.prompts_received);
            Metrics::inc(&state.metrics.prompts_dropped);
            tracing::warn!(reason = %r.reason, detail = %r.detail, "bad prompt over HTTP");
            let status = match r.reason {
                DropReason::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            return errors::error_with(status, r.reason.as_str(), r.detail);
        }
    };
    let prompt_id = prompt.id.clone();
    let Some(outcome) = state.hub.offer(&session_id, prompt).await else {
        return errors::error_with(
            StatusCode::NOT_FOUND,
            DropReason::NoSession.as_str(),
            format!("no live session {session_id:?}"),
        );
    };
    if !query.wait {
        return (
            StatusCode::ACCEPTED,
            Json(json!({"prompt_id": prompt_id, "session_id": session_id, "status": "queued"})),
        )
            .into_response();
    }
    // A waiting request holds a connection: bounded, then it says `queued`
    // (the prompt stays queued; its outcome still reaches NATS and /metrics).
    let max_wait = std::time::Duration::from_millis(state.config.limits.prompt_wait_max_ms);
    let Ok(outcome) = tokio::time::timeout(max_wait, outcome).await else {
        return (
            StatusCode::ACCEPTED,
            Json(json!({"prompt_id": prompt_id, "session_id": session_id, "status": "queued", "waited_ms": max_wait.as_millis() as u64})),
        )
            .into_response();
    };
    let outcome = outcome.unwrap_or(PromptOutcome::Dropped(DropReason::SessionEnded));
    let body = match outcome {
        PromptOutcome::Spoken { turn } => {
            json!({"prompt_id": prompt_id, "session_id": session_id, "status": "spoken", "turn": turn})
        }
        PromptOutcome::Dropped(reason) => {
            json!({"prompt_id": prompt_id, "session_id": session_id, "status": "dropped", "reason": reason.as_str()})
        }
    };
    (StatusCode::OK, Json(body)).into_response()
}
