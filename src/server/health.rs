//! `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, access};
use crate::auth::Grant;
use crate::config::InferenceMode;
use crate::pipeline::cpu_share;

/// What this server is and whether it can answer. With workers
/// (`--inference nats`): how many serve each role, and `"status":
/// "degraded"` while a role that turns need has none (they get the busy
/// line; without an embed worker the server embeds documents itself).
pub(super) async fn healthz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut body = json!({
        "status": "ok",
        "sessions": state.session_count(),
        "uptime_s": state.started.elapsed().as_secs(),
        "pipeline": state.config.pipeline,
        "inference": state.config.inference.mode,
        "nats": state.hub.bus().state(),
        "auth": state.access.enabled(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    if state.config.inference.mode == InferenceMode::Nats
        && let Some(dir) = &state.workers
    {
        let per_role = dir.per_role();
        let workers: serde_json::Map<String, serde_json::Value> = per_role
            .iter()
            .flatten()
            .map(|(r, n)| (r.as_str().to_string(), json!(n)))
            .collect();
        let missing =
            per_role.is_none_or(|p| p.iter().any(|(r, n)| r.needed_for_turns() && *n == 0));
        body["workers"] = serde_json::Value::Object(workers);
        if missing {
            body["status"] = json!("degraded");
            body["reason"] = json!("a role has no live worker: its turns get the busy line");
        }
    }
    axum::Json(body)
}

/// For a load balancer: 503 once the server drains (it still serves the
/// sessions it has).
pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.hub.draining() {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ready": false, "reason": "draining"})),
        )
            .into_response()
    } else {
        axum::Json(json!({"ready": true})).into_response()
    }
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if state.access.enabled()
        && let Err(e) = state.access.require(access::bearer(&headers), Grant::Admin)
    {
        return state.refuse(e);
    }
    let mut body = state.metrics.render();
    cpu_share_gauges(&mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// What inference thread counts follow (`inference.threads_follow_load`):
/// an operator who sees replies slow down or the LLM's context remade can
/// tell whether other programs took the cores.
fn cpu_share_gauges(out: &mut String) {
    use std::fmt::Write;
    if !cpu_share::following() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP voxloop_other_programs_cores Cores other programs on this machine used lately (smoothed over about a second), which inference thread counts follow.\n# TYPE voxloop_other_programs_cores gauge\nvoxloop_other_programs_cores {:.3}",
        cpu_share::others()
    );
    let _ = writeln!(
        out,
        "# HELP voxloop_inference_free_cores Cores other programs leave free: the most threads the next transcription or LLM step gets.\n# TYPE voxloop_inference_free_cores gauge\nvoxloop_inference_free_cores {}",
        cpu_share::free_cores()
    );
}
