//! `voxloop worker`: the engines of its roles served over NATS.
//!
//! A NATS service (`$SRV.PING/INFO/STATS.voxloop-worker`) with one endpoint
//! per role on `<prefix>.infer.<role>` (queue group `q`: NATS spreads the
//! requests over the workers) and, for the LLM, a second one on
//! `<prefix>.infer.w.<id>.llm` that only this worker reads, so a
//! conversation can come back to the worker holding its KV cells.
//!
//! A request is answered at once: `Accepted` with a job number, or a
//! service error (`Refusal`): busy when the role's queue is full, expired
//! when its budget is spent. The results then stream to the request's
//! `stream_to` subject as numbered `Chunk`s, with a heartbeat every
//! [`HEARTBEAT`] while the engine works. `Control` messages on
//! `<prefix>.infer.w.<id>.control` cancel a job or forget a conversation.
//!
//! SIGTERM (the `shutdown` future) unsubscribes the endpoints, lets the
//! jobs in flight finish (bounded by `shutdown.drain_timeout_ms`; cancels
//! still work), and returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::service::ServiceExt;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::wire::{self, Accepted, Chunk, Control, Job, Part, Refusal, Request, Role, Summary};
use super::{HEARTBEAT, InferSubjects, RemoteError, SERVICE};
use crate::config::Config;
use crate::engines::{self, EngineError};
use crate::pipeline::asr::Asr;
use crate::pipeline::llm::{LlmBackend, LlmEvent};
use crate::pipeline::tts::Tts;

/// Audio sent back per chunk: one second at 48 kHz (96 KB).
const AUDIO_CHUNK: usize = crate::WIRE_RATE as usize;
/// Longest ASR input taken (the server caps a turn well below it).
const MAX_ASR_SECONDS: usize = 60;

/// The engines of the roles this worker serves, each loaded once.
#[derive(Default)]
pub struct RoleEngines {
    pub asr: Option<Arc<Asr>>,
    pub llm: Option<Arc<LlmBackend>>,
    pub tts: Option<Arc<Tts>>,
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
            })
            .collect()
    }
}

/// Per-role counts, shown in the service's `STATS` (`voxloop workers`).
#[derive(Default)]
struct RoleCounts {
    in_flight: AtomicUsize,
    completed: AtomicU64,
    failed: AtomicU64,
    refused_busy: AtomicU64,
}

struct Shared {
    client: async_nats::Client,
    engines: RoleEngines,
    jobs: Mutex<HashMap<u64, CancellationToken>>,
    next_job: AtomicU64,
    /// Jobs a role may hold (running + queued); more is `Busy`.
    limits: [usize; 3],
    counts: [RoleCounts; 3],
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
        let c = &self.counts[r.index()];
        serde_json::json!({
            "in_flight": c.in_flight.load(Ordering::Relaxed),
            "limit": self.limits[r.index()],
            "completed": c.completed.load(Ordering::Relaxed),
            "failed": c.failed.load(Ordering::Relaxed),
            "busy_refusals": c.refused_busy.load(Ordering::Relaxed),
            "draining": self.draining.load(Ordering::Relaxed),
        })
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
    let limits = [
        inf.asr_workers + inf.asr_queue,
        inf.llm_slots as usize + inf.llm_queue,
        inf.tts_workers + inf.tts_queue,
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
        limits,
        counts: Default::default(),
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
    if request.budget_ms == 0 {
        return refuse(&req, Refusal::Expired, "no budget left".into()).await;
    }
    if shared.draining.load(Ordering::SeqCst) {
        return refuse(&req, Refusal::Unavailable, "draining".into()).await;
    }
    let counts = &shared.counts[role.index()];
    let limit = shared.limits[role.index()];
    if counts.in_flight.fetch_add(1, Ordering::SeqCst) >= limit {
        counts.in_flight.fetch_sub(1, Ordering::SeqCst);
        counts.refused_busy.fetch_add(1, Ordering::Relaxed);
        return refuse(&req, Refusal::Busy, format!("{} queue full", role.as_str())).await;
    }
    let job = shared.next_job.fetch_add(1, Ordering::Relaxed);
    let cancel = CancellationToken::new();
    if let Ok(mut j) = shared.jobs.lock() {
        j.insert(job, cancel.clone());
    }
    let deadline = Instant::now() + Duration::from_millis(request.budget_ms);
    let accepted = Accepted {
        worker: shared.id.clone(),
        job,
    };
    let _ = req.respond(Ok(wire::encode(&accepted, &[]))).await;
    let shared = shared.clone();
    tokio::spawn(async move {
        let out = Out::new(shared.client.clone(), request.stream_to);
        let ok = match request.job {
            Job::Asr => asr_job(&shared, pcm, deadline, &cancel, out).await,
            Job::Llm {
                key,
                messages,
                max_tokens,
            } => llm_job(&shared, key, messages, max_tokens, deadline, &cancel, out).await,
            Job::Tts { text } => tts_job(&shared, text, deadline, &cancel, out).await,
        };
        let c = &shared.counts[role.index()];
        let counter = if ok { &c.completed } else { &c.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        c.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut j) = shared.jobs.lock() {
            j.remove(&job);
        }
    });
}

/// A job's result stream: numbered chunks to the server's subject.
struct Out {
    client: async_nats::Client,
    subject: String,
    seq: u32,
}

impl Out {
    fn new(client: async_nats::Client, subject: String) -> Self {
        Self {
            client,
            subject,
            seq: 0,
        }
    }

    async fn send(&mut self, part: Part, pcm: &[f32]) {
        let chunk = Chunk {
            seq: self.seq,
            part,
        };
        self.seq += 1;
        let _ = self
            .client
            .publish(self.subject.clone(), wire::encode(&chunk, pcm))
            .await;
    }

    /// Ends the stream with a failure; the job did not complete.
    async fn fail(mut self, message: String) -> bool {
        self.send(Part::Failed { message }, &[]).await;
        false
    }

    /// Ends the stream of a job that was stopped before its result.
    async fn stop(mut self, why: Stop) -> bool {
        match why {
            Stop::Expired => self.send(Part::Expired, &[]).await,
            Stop::Cancelled => {
                let message = "cancelled".into();
                self.send(Part::Failed { message }, &[]).await
            }
        }
        false
    }
}

/// Why a job stopped before its result.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Cancelled,
    Expired,
}

/// Wait for `work`, heartbeating; `None` when cancelled or past `deadline`
/// (the work future is dropped: queued work is skipped).
async fn beating<T>(
    out: &mut Out,
    work: impl std::future::Future<Output = T>,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<T, Stop> {
    tokio::pin!(work);
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    loop {
        tokio::select! {
            r = &mut work => return Ok(r),
            _ = cancel.cancelled() => return Err(Stop::Cancelled),
            _ = tokio::time::sleep_until(deadline.into()) => return Err(Stop::Expired),
            _ = beat.tick() => out.send(Part::Heartbeat, &[]).await,
        }
    }
}

async fn asr_job(
    shared: &Shared,
    pcm: Vec<f32>,
    deadline: Instant,
    cancel: &CancellationToken,
    mut out: Out,
) -> bool {
    let Some(asr) = &shared.engines.asr else {
        return out.fail("no asr engine".into()).await;
    };
    match beating(&mut out, asr.transcribe(pcm), deadline, cancel).await {
        Ok(Ok(t)) => {
            let part = Part::Transcript {
                text: t.text,
                decode_ms: t.elapsed.as_millis() as u64,
            };
            out.send(part, &[]).await;
            true
        }
        Ok(Err(e)) => out.fail(e.to_string()).await,
        Err(why) => out.stop(why).await,
    }
}

async fn tts_job(
    shared: &Shared,
    text: String,
    deadline: Instant,
    cancel: &CancellationToken,
    mut out: Out,
) -> bool {
    let Some(tts) = &shared.engines.tts else {
        return out.fail("no tts engine".into()).await;
    };
    let speech = match beating(
        &mut out,
        tts.synthesize_by(text, deadline),
        deadline,
        cancel,
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return out.fail(e.to_string()).await,
        Err(why) => return out.stop(why).await,
    };
    let pcm = match crate::audio::resample_clip(&speech.pcm, speech.sample_rate, crate::WIRE_RATE) {
        Ok(p) => p,
        Err(e) => return out.fail(e.to_string()).await,
    };
    for piece in pcm.chunks(AUDIO_CHUNK) {
        if cancel.is_cancelled() {
            return out.stop(Stop::Cancelled).await;
        }
        out.send(Part::Audio, piece).await;
    }
    out.send(Part::Done { summary: None }, &[]).await;
    true
}

async fn llm_job(
    shared: &Shared,
    key: u64,
    messages: Vec<crate::pipeline::llm::ChatMessage>,
    max_tokens: Option<usize>,
    deadline: Instant,
    cancel: &CancellationToken,
    mut out: Out,
) -> bool {
    let Some(llm) = &shared.engines.llm else {
        return out.fail("no llm engine".into()).await;
    };
    let mut g = match llm.generate(key, messages, max_tokens) {
        Ok(g) => g,
        Err(e) => return out.fail(e.to_string()).await,
    };
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    let mut started = false;
    loop {
        tokio::select! {
            ev = g.events.recv() => match ev {
                Some(LlmEvent::Token(text)) => {
                    started = true;
                    out.send(Part::Token { text }, &[]).await;
                }
                Some(LlmEvent::Done(c)) => {
                    let summary = Some(Summary::of(&c));
                    out.send(Part::Done { summary }, &[]).await;
                    return true;
                }
                None => return out.fail("the engine dropped the generation".into()).await,
            },
            _ = cancel.cancelled() => {
                // Stops before the next token is decoded.
                g.cancel();
                return out.stop(Stop::Cancelled).await;
            }
            _ = tokio::time::sleep_until(deadline.into()), if !started => {
                g.cancel();
                return out.stop(Stop::Expired).await;
            }
            _ = beat.tick() => out.send(Part::Heartbeat, &[]).await,
        }
    }
}
