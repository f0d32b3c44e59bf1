//! The knowledge base over HTTP:
//! `PUT /kb/docs/{name}` (the body is the document), `DELETE /kb/docs/{name}`,
//! `GET /kb/docs` (name, size, chunks, content hash, indexed at) and
//! `GET /kb/search?q=…&k=N` (hits `{doc, chunk, score, text}`).
//!
//! Changing documents needs the admin grant; listing and searching need any
//! valid token (none on a loopback server without keys). With a watched
//! folder, an upload is also written there (and a delete removes the file),
//! so the folder stays the source of truth and survives restarts. With NATS,
//! the shared bucket is the source of truth: a change is accepted only once
//! the bucket holds it (else 503 and nothing changed), and every server on
//! that NATS follows it (`kb_sync`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, access, errors, kb_sync};
use crate::auth::Grant;
use crate::bus::kb_store::KbStoreError;
use crate::kb::{Change, DocError, KbError, doc, folder};
use crate::pipeline::retrieve::KbJobError;

/// Most hits one search returns.
const MAX_K: usize = 50;

fn kb_off() -> Response {
    errors::error_with(
        StatusCode::SERVICE_UNAVAILABLE,
        "kb_off",
        "this server has no knowledge base (the speech pipeline with its embedding model is needed)",
    )
}

/// The status and code a failed job answers with; server faults are logged.
fn job_error(e: KbJobError) -> Response {
    let (status, code) = match &e {
        KbJobError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        KbJobError::Kb(KbError::NotFound(_)) => (StatusCode::NOT_FOUND, "not_found"),
        KbJobError::Kb(KbError::Doc(d)) => match d {
            DocError::BadName(_) => (StatusCode::BAD_REQUEST, "bad_name"),
            DocError::Unsupported(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported"),
            DocError::Empty(_) => (StatusCode::UNPROCESSABLE_ENTITY, "empty"),
            DocError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            DocError::NotUtf8(_) => (StatusCode::UNPROCESSABLE_ENTITY, "not_utf8"),
            DocError::Binary(_) => (StatusCode::UNPROCESSABLE_ENTITY, "binary"),
        },
        KbJobError::Kb(_) => {
            tracing::error!(error = %e, "kb: request failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "kb_failed")
        }
    };
    errors::error_with(status, code, e.to_string())
}

/// The shared bucket did not take a change: nothing changed, try again.
fn shared_error(e: KbStoreError) -> Response {
    tracing::warn!(error = %e, "kb: the shared bucket refused a change");
    errors::error_with(
        StatusCode::SERVICE_UNAVAILABLE,
        "kb_shared_unavailable",
        format!(
            "the shared knowledge base (NATS) did not take the change, so nothing changed; try again: {e}"
        ),
    )
}

pub async fn put_doc(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = state.access.require(access::bearer(&headers), Grant::Admin) {
        return state.refuse(e);
    }
    let Some(kb) = state.kb() else {
        return kb_off();
    };
    // What the document was before, so the answer says what this upload
    // changed even when the bucket's follower indexes it first.
    let before = {
        let n = name.clone();
        match kb.on_index(move |kb| Ok(kb.doc(&n))).await {
            Ok(d) => d.map(|d| d.hash),
            Err(e) => return job_error(e),
        }
    };
    if let Some(store) = state.hub.bus().kb_store() {
        // A bad document never reaches the bucket.
        let limit = state.config.kb.max_doc_bytes;
        if let Err(e) = doc::check_name(&name).and_then(|_| doc::check_content(&name, &body, limit))
        {
            return job_error(KbJobError::Kb(e.into()));
        }
        if let Err(e) = store.put(&name, &body, kb_sync::HTTP_ORIGIN).await {
            return shared_error(e);
        }
    }
    let dir = state.config.kb.dir.clone();
    let result = kb
        .on_index(move |kb| {
            // Checked and indexed first: a bad document never reaches the folder.
            let (info, _) = kb.put(&name, &body)?;
            let change = match before {
                None => Change::Added,
                Some(h) if h == info.hash => Change::Unchanged,
                Some(_) => Change::Updated,
            };
            if let Some(dir) = &dir
                && let Err(e) = folder::write(dir, &name, &body)
            {
                tracing::warn!(doc = %name, error = %e, "kb: indexed, but not written to the folder");
            }
            Ok((info, change))
        })
        .await;
    match result {
        Ok((info, change)) => {
            tracing::info!(doc = %info.name, chunks = info.chunks, ?change, "kb: document put over HTTP");
            let status = if change == Change::Added {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(json!({"doc": info, "change": change}))).into_response()
        }
        Err(e) => job_error(e),
    }
}

pub async fn delete_doc(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = state.access.require(access::bearer(&headers), Grant::Admin) {
        return state.refuse(e);
    }
    let Some(kb) = state.kb() else {
        return kb_off();
    };
    let checked = doc::check_name(&name).or_else(|e| match e {
        DocError::Unsupported(_) => Ok(doc::Kind::Text),
        e => Err(e),
    });
    if let Err(e) = checked {
        return job_error(KbJobError::Kb(e.into()));
    }
    // With NATS, this server's follower may see the deletion and remove the
    // document before the lines below do.
    let mut in_bucket = false;
    if let Some(store) = state.hub.bus().kb_store() {
        match store.delete(&name).await {
            Ok(was) => in_bucket = was,
            Err(e) => return shared_error(e),
        }
    }
    let dir = state.config.kb.dir.clone();
    let result = kb
        .on_index(move |kb| {
            // The file first: else the folder watcher would index it again.
            let mut file_removed = false;
            if let Some(dir) = &dir {
                match std::fs::remove_file(dir.join(&name)) {
                    Ok(()) => file_removed = true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(doc = %name, error = %e, "kb: cannot remove the file"),
                }
            }
            match kb.remove(&name) {
                // The folder watcher or the bucket's follower removed it first.
                Err(KbError::NotFound(_)) if file_removed || in_bucket => Ok(()),
                r => r,
            }
        })
        .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => job_error(e),
    }
}

pub async fn list_docs(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = state.access.caller(access::bearer(&headers)) {
        return state.refuse(e);
    }
    let Some(kb) = state.kb() else {
        return kb_off();
    };
    // Off the runtime: the read lock can wait behind a commit.
    match kb.on_index(|kb| Ok((kb.docs(), kb.stats()))).await {
        Ok((docs, stats)) => Json(json!({"docs": docs, "chunks": stats.chunks})).into_response(),
        Err(e) => job_error(e),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct SearchQuery {
    q: String,
    #[serde(default = "default_k")]
    k: usize,
}

fn default_k() -> usize {
    5
}

pub async fn search(
    State(state): State<Arc<AppState>>,
    Query(query): Query<SearchQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = state.access.caller(access::bearer(&headers)) {
        return state.refuse(e);
    }
    let Some(kb) = state.kb() else {
        return kb_off();
    };
    if query.q.trim().is_empty() || query.q.len() > state.config.max_message_bytes {
        return errors::error_with(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "q must be non-empty text",
        );
    }
    let t0 = std::time::Instant::now();
    match kb.search(query.q, query.k.clamp(1, MAX_K)).await {
        Ok(hits) => {
            let hits: Vec<_> = hits
                .into_iter()
                .map(|h| json!({"doc": h.doc, "chunk": h.chunk, "score": h.score, "similarity": h.similarity, "text": h.text}))
                .collect();
            Json(json!({"hits": hits, "took_ms": t0.elapsed().as_secs_f64() * 1e3})).into_response()
        }
        Err(e) => job_error(e),
    }
}
