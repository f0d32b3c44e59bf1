//! Which workers are alive and how loaded: the NATS service `STATS` of
//! every `voxloop-worker`, for `voxloop workers` and the server's `/healthz`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;

use super::SERVICE;
use super::wire::Role;

/// How often a server refreshes its view of the workers.
const REFRESH: Duration = Duration::from_secs(2);
/// How long answers are collected.
const ANSWER_WAIT: Duration = Duration::from_millis(300);

/// One worker as its `STATS` describe it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    pub id: String,
    pub roles: Vec<Role>,
    pub endpoints: Vec<EndpointInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointInfo {
    pub name: String,
    /// Requests answered (taken or refused).
    pub requests: usize,
    /// Requests refused (busy, expired, invalid).
    pub refused: usize,
    pub average_ms: f64,
    /// The worker's own counts (`worker::Shared::stats`).
    pub load: serde_json::Value,
}

/// Ask every worker for its stats; the answers that come within
/// [`ANSWER_WAIT`], by worker id.
pub async fn collect(client: &async_nats::Client) -> Result<Vec<WorkerInfo>, String> {
    let inbox = client.new_inbox();
    let mut sub = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish_with_reply(format!("$SRV.STATS.{SERVICE}"), inbox, "".into())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let until = tokio::time::Instant::now() + ANSWER_WAIT;
    while let Ok(Some(msg)) = tokio::time::timeout_at(until, sub.next()).await {
        match serde_json::from_slice::<async_nats::service::Stats>(&msg.payload) {
            Ok(s) => out.push(info(s)),
            Err(e) => tracing::debug!(error = %e, "unreadable worker stats"),
        }
    }
    out.sort_by(|a: &WorkerInfo, b| a.id.cmp(&b.id));
    Ok(out)
}

fn info(s: async_nats::service::Stats) -> WorkerInfo {
    let mut roles: Vec<Role> = s
        .endpoints
        .iter()
        .filter_map(|e| e.name.parse().ok())
        .collect();
    roles.sort();
    roles.dedup();
    WorkerInfo {
        id: s.id,
        roles,
        endpoints: s
            .endpoints
            .into_iter()
            .map(|e| EndpointInfo {
                name: e.name,
                requests: e.requests,
                refused: e.errors,
                average_ms: e.average_processing_time.as_secs_f64() * 1000.0,
                load: e.data.unwrap_or_default(),
            })
            .collect(),
    }
}

/// The workers a server last saw, refreshed in the background.
#[derive(Default)]
pub struct Directory {
    seen: RwLock<Option<Vec<WorkerInfo>>>,
}

impl Directory {
    /// Refresh every [`REFRESH`] while the client lives.
    pub fn spawn(client: async_nats::Client) -> Arc<Self> {
        let dir = Arc::new(Self::default());
        let d = dir.clone();
        tokio::spawn(async move {
            loop {
                let seen = collect(&client).await.unwrap_or_default();
                if let Ok(mut s) = d.seen.write() {
                    *s = Some(seen);
                }
                tokio::time::sleep(REFRESH).await;
            }
        });
        dir
    }

    /// Workers per role; `None` before the first look.
    pub fn per_role(&self) -> Option<[(Role, usize); 4]> {
        let seen = self.seen.read().ok()?;
        let seen = seen.as_ref()?;
        Some(Role::ALL.map(|r| (r, seen.iter().filter(|w| w.roles.contains(&r)).count())))
    }
}
