//! `voxloop worker`: the engines of its roles served over NATS.
//!
//! A NATS service (`$SRV.PING/INFO/STATS.voxloop-worker`) with one endpoint
//! per role on `<prefix>.infer.<role>` (queue group `q`: NATS spreads the
//! requests over the workers) and, for the LLM, a second one on
//! `<prefix>.infer.w.<id>.llm` that only this worker reads, so a
//! conversation can come back to the worker holding its KV cells.
//!
//! A request is answered at once: `Accepted` with a job number, or a
//! service error (`Refusal`): busy when the role's queue is full or the
//! job would start later than asked ([`super::load`]), expired when its
//! budget is spent. The results then stream to the request's
//! `stream_to` subject as numbered `Chunk`s, with a heartbeat every
//! [`super::HEARTBEAT`] while the engine works. `Control` messages on
//! `<prefix>.infer.w.<id>.control` cancel a job, forget a conversation or
//! prefill its next prompt.
//!
//! SIGTERM (the `shutdown` future) unsubscribes the endpoints, lets the
//! jobs in flight finish (bounded by `shutdown.drain_timeout_ms`; cancels
//! still work), and returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::service::ServiceExt;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::embed::{EmbedEngine, MAX_TEXTS};
use super::jobs::{self, Out};
use super::load::{Admit, RoleLoad};
use super::wire::{self, Accepted, Control, Job, Refusal, Request, Role};
use super::{InferSubjects, RemoteError, SERVICE};
use crate::config::Config;
use crate::engines::{self, EngineError};
use crate::pipeline::asr::Asr;
use crate::pipeline::llm::LlmBackend;
use crate::pipeline::tts::Tts;

/// Longest ASR input taken (the server caps a turn well below it).
const MAX_ASR_SECONDS: usize = 60;

/// The engines of the roles this worker serves, each loaded once.
#[derive(Default)]
pub struct RoleEngines {
    pub asr: Option<Arc<Asr>>,
    pub llm: Option<Arc<LlmBackend>>,
    pub tts: Option<Arc<Tts>>,
    pub embed: Option<Arc<EmbedEngine>>,
}

impl RoleEngines {
    /// Load `roles` from `cfg`'s profile (blocking: call off the runtime).
    pub fn load(cfg: &Config, roles: &[Role]) -> Result<Self, EngineError> {
        let mut e = Self::default();
        for r in roles {
            match r {
                Role::Asr => e.asr = Some(Arc::new(engines::load_asr(cfg)?)),
                Role::Llm => e.llm = Some(Arc::new(engines::load_llm_backend(cfg)?)),
                Role::Tts => e.tts = Some(Arc::new(engines::load_tts(cfg)?)),
                Role::Embed => e.embed = Some(Arc::new(EmbedEngine::load(cfg)?)),
            }
        }
        Ok(e)
    }

    fn roles(&self) -> Vec<Role> {
        Role::ALL
            .into_iter()
            .filter(|r| match r {
                Role::Asr => self.asr.is_some(),
                Role::Llm => self.llm.is_some(),
                Role::Tts => self.tts.is_some(),
                Role::Embed => self.embed.is_some(),
            })
            .collect()
    }
}

struct Shared {
    client: async_nats::Client,
    engines: RoleEngines,
    jobs: Mutex<HashMap<u64, CancellationToken>>,
    next_job: AtomicU64,
    /// Each role's jobs, by `Role::index`.
    loads: [RoleLoad; 4],
    draining: AtomicBool,
    id: String,
}

impl Shared {
    fn stats(&self, endpoint: &str) -> serde_json::Value {
        let role = Role::ALL
            .into_iter()
            .find(|r| endpoint.starts_with(r.as_str()));
        let Some(r) = role else {
            return serde_json::Value::Null;
        };
        let mut stats = self.loads[r.index()].stats();
        stats["draining"] = self.draining.load(Ordering::Relaxed).into();
        if let (Role::Llm, Some(llm)) = (r, &self.engines.llm) {
            stats["warmed_tokens"] = llm.warmed_tokens().into();
        }
        stats
    }
}

/// Serve `engines` until `shutdown`, then drain. Returns once every job
/// has finished or the drain deadline passed.
pub async fn run(
    client: async_nats::Client,
    config: &Config,
    engines: RoleEngines,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RemoteError> {
    let roles = engines.roles();
    if roles.is_empty() {
        return Err(RemoteError::Setup("no roles to serve".into()));
    }
    let inf = &config.inference;
    let llm_slots = inf.llm_slots as usize;
    let loads = [
        RoleLoad::new(inf.asr_workers, inf.asr_workers + inf.asr_queue),
        RoleLoad::new(llm_slots, llm_slots + inf.llm_queue),
        RoleLoad::new(inf.tts_workers, inf.tts_workers + inf.tts_queue),
        RoleLoad::new(1, EmbedEngine::LIMIT),
    ];
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    let shared_slot: Arc<Mutex<Option<Arc<Shared>>>> = Arc::default();
    let for_stats = shared_slot.clone();
    let service = client
        .service_builder()
        .description("voxloop inference worker")
        .metadata(HashMap::from([("roles".to_string(), names.join(","))]))
        .stats_handler(move |endpoint, _| {
            let shared = for_stats.lock().ok().and_then(|s| s.clone());
            shared.map_or(serde_json::Value::Null, |s| s.stats(&endpoint))
        })
        .start(SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| RemoteError::Setup(format!("starting the NATS service: {e}")))?;
    let id = service.info().await.id;
    let shared = Arc::new(Shared {
        client: client.clone(),
        engines,
        jobs: Mutex::default(),
        next_job: AtomicU64::new(1),
        loads,
        draining: AtomicBool::new(false),
        id: id.clone(),
    });
    if let Ok(mut s) = shared_slot.lock() {
        *s = Some(shared.clone());
    }
    let subjects = InferSubjects::new(&config.bus.prefix);
    let mut endpoints = Vec::new();
    for r in &roles {
        let ep = service
            .endpoint_builder()
            .name(r.as_str())
            .add(subjects.role(*r))
            .await
            .map_err(|e| RemoteError::Setup(format!("endpoint {}: {e}", r.as_str())))?;
        endpoints.push(ep.map(move |req| (*r, req)).boxed());
        if *r == Role::Llm {
            // Only this worker reads it: conversations come back to their KV cells.
            let ep = service
                .endpoint_builder()
                .name("llm-direct")
                .queue_group(&id)
                .add(subjects.direct(&id, *r))
                .await
                .map_err(|e| RemoteError::Setup(format!("endpoint llm-direct: {e}")))?;
            endpoints.push(ep.map(move |req| (*r, req)).boxed());
        }
    }
    let mut requests = futures::stream::select_all(endpoints);
    let mut control = client
        .subscribe(subjects.control(&id))
        .await
        .map_err(|e| RemoteError::Setup(format!("control subject: {e}")))?;
    // A labelled stdout line: scripts and tests wait for it.
    println!("worker: {id} roles={}", names.join(","));
    tracing::info!(worker = %id, roles = %names.join(","), "worker serving");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some((role, req)) = requests.next() => take(&shared, role, req).await,
            Some(msg) = control.next() => on_control(&shared, &msg.payload),
        }
    }
    // Drain: no new requests (the endpoints are unsubscribed), cancels still heard.
    shared.draining.store(true, Ordering::SeqCst);
    drop(requests);
    let deadline = Instant::now() + Duration::from_millis(config.shutdown.drain_timeout_ms);
    let left = || shared.jobs.lock().map_or(0, |j| j.len());
    tracing::info!(jobs = left(), "worker draining");
    while left() > 0 && Instant::now() < deadline {
        tokio::select! {
            Some(msg) = control.next() => on_control(&shared, &msg.payload),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    if left() > 0 {
        tracing::warn!(
            jobs = left(),
            "worker drain deadline: leaving jobs unfinished"
        );
    }
    let _ = client.flush().await;
    let _ = service.stop().await;
    Ok(())
}

fn on_control(shared: &Shared, payload: &[u8]) {
    match wire::decode::<Control>(payload) {
        Ok((Control::Cancel { job }, _)) => {
            if let Some(c) = shared.jobs.lock().ok().and_then(|j| j.get(&job).cloned()) {
                tracing::debug!(job, "cancelled by the server");
                c.cancel();
            }
        }
        Ok((Control::Forget { key }, _)) => {
            if let Some(llm) = &shared.engines.llm {
                llm.forget(key);
            }
        }
        Ok((
            Control::Warm {
                key,
                messages,
                so_far,
            },
            _,
        )) => {
            if let Some(llm) = &shared.engines.llm {
                llm.warm(key, messages, so_far);
            }
        }
        Err(e) => tracing::warn!(error = %e, "worker: unreadable control message"),
    }
}

async fn refuse(req: &async_nats::service::Request, why: Refusal, message: String) {
    let _ = req
        .respond(Err(async_nats::service::error::Error {
            code: why.code(),
            status: message,
        }))
        .await;
}

/// Take one request, or refuse it at once.
async fn take(shared: &Arc<Shared>, role: Role, req: async_nats::service::Request) {
    let (request, pcm) = match wire::decode::<Request>(&req.message.payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "worker: unreadable request");
            return refuse(&req, Refusal::Invalid, e.to_string()).await;
        }
    };
    if request.job.role() != role {
        let msg = format!(
            "a {:?} job on the {} endpoint",
            request.job.role(),
            role.as_str()
        );
        return refuse(&req, Refusal::Invalid, msg).await;
    }
    if role == Role::Asr && pcm.len() > MAX_ASR_SECONDS * crate::PIPELINE_RATE as usize {
        let msg = format!("audio over {MAX_ASR_SECONDS} s");
        return refuse(&req, Refusal::Invalid, msg).await;
    }
    if let Job::Embed { texts } = &request.job
        && texts.len() > MAX_TEXTS
    {
        let msg = format!(
            "{} texts in one embed job (at most {MAX_TEXTS})",
            texts.len()
        );
        return refuse(&req, Refusal::Invalid, msg).await;
    }
    if request.budget_ms == 0 {
        return refuse(&req, Refusal::Expired, "no budget left".into()).await;
    }
    if shared.draining.load(Ordering::SeqCst) {
        return refuse(&req, Refusal::Unavailable, "draining".into()).await;
    }
    let start_by = request
        .start_within_ms
        .map_or(request.budget_ms, |s| s.min(request.budget_ms));
    let at_once = match shared.loads[role.index()].admit(start_by) {
        Admit::Take { at_once } => at_once,
        Admit::Full => {
            let msg = format!("{} queue full", role.as_str());
            return refuse(&req, Refusal::Busy, msg).await;
        }
        Admit::TooLate { wait_ms } => {
            let msg = format!(
                "{} would start in about {wait_ms} ms, later than the {start_by} ms asked",
                role.as_str()
            );
            return refuse(&req, Refusal::Busy, msg).await;
        }
    };
    let taken = Instant::now();
    let job = shared.next_job.fetch_add(1, Ordering::Relaxed);
    let cancel = CancellationToken::new();
    if let Ok(mut j) = shared.jobs.lock() {
        j.insert(job, cancel.clone());
    }
    let deadline = taken + Duration::from_millis(request.budget_ms);
    let accepted = Accepted {
        worker: shared.id.clone(),
        job,
    };
    let _ = req.respond(Ok(wire::encode(&accepted, &[]))).await;
    let shared = shared.clone();
    tokio::spawn(async move {
        let out = Out::new(shared.client.clone(), request.stream_to);
        let e = &shared.engines;
        let ok = match request.job {
            Job::Asr => jobs::asr_job(e, pcm, deadline, &cancel, out).await,
            Job::Llm {
                key,
                messages,
                max_tokens,
            } => jobs::llm_job(e, key, messages, max_tokens, deadline, &cancel, out).await,
            Job::Tts { text } => jobs::tts_job(e, text, deadline, &cancel, out).await,
            Job::Embed { texts } => jobs::embed_job(e, texts, deadline, &cancel, out).await,
        };
        shared.loads[role.index()].finish(ok, at_once, taken.elapsed());
        if let Ok(mut j) = shared.jobs.lock() {
            j.remove(&job);
        }
    });
}
