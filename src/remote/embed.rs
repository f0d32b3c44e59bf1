//! The knowledge base's document embedder over NATS: a worker's `embed`
//! role ([`EmbedEngine`]) and the server's side ([`RemoteEmbedder`]).
//!
//! Only documents go to workers: indexing a large upload is seconds of CPU
//! that a media server should not spend. A question is embedded in the
//! server (a few milliseconds on the reply's critical path, where a hop and
//! a queue would cost more than the work). When no worker embeds a
//! document, the server does it itself: a document is never lost or
//! delayed for want of a worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::InferSubjects;
use super::call::{self, Ask, CallError};
use super::wire::{Job, Part, Role};
use crate::config::Config;
use crate::engines::EngineError;
use crate::kb::{BulkEmbed, KbError, embed::Embedder};
use crate::metrics::Metrics;
use crate::pipeline::pool::WorkerPool;

/// Texts in one embed job: at most 64 chunks of at most 256 tokens each
/// go out (tens of KB), and 64 vectors come back as JSON (about 300 KB),
/// well inside NATS's 1 MB message.
pub const MAX_TEXTS: usize = 64;
/// How long an embed job may wait for and take on a worker. Indexing is
/// bulk work behind live turns: generous, since the server would only do
/// the same work itself afterwards.
const BUDGET: Duration = Duration::from_secs(60);
/// Jobs that may wait behind the running one on a worker.
const QUEUE: usize = 4;

/// A worker's embedder: the model, loaded once, on its own thread.
pub struct EmbedEngine {
    embedder: Arc<Embedder>,
    pool: WorkerPool<()>,
}

impl EmbedEngine {
    /// Jobs one worker holds (running + queued) before it says busy.
    pub const LIMIT: usize = 1 + QUEUE;

    /// Load the model from `cfg`'s models directory (blocking).
    pub fn load(cfg: &Config) -> Result<Self, EngineError> {
        let embedder = Embedder::load(&cfg.models.dir).map_err(KbError::from)?;
        let pool = WorkerPool::new(
            "embed",
            1,
            QUEUE,
            |_| Ok::<(), std::convert::Infallible>(()),
        )
        .unwrap_or_else(|e: std::convert::Infallible| match e {});
        Ok(Self {
            embedder: Arc::new(embedder),
            pool,
        })
    }

    /// The vectors of `texts`, in order, computed off the runtime.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        let e = self.embedder.clone();
        let r = self
            .pool
            .run(move |_| texts.iter().map(|t| e.embed(t)).collect::<Result<_, _>>())
            .await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(busy) => Err(busy.to_string()),
        }
    }
}

/// The server's side: a [`BulkEmbed`] that sends a document's chunks to
/// the `embed` workers in jobs of [`MAX_TEXTS`].
pub struct RemoteEmbedder {
    client: async_nats::Client,
    subjects: InferSubjects,
    metrics: Arc<Metrics>,
    runtime: tokio::runtime::Handle,
}

impl RemoteEmbedder {
    /// `runtime` runs the NATS calls for the indexing threads.
    pub fn new(
        client: async_nats::Client,
        prefix: &str,
        metrics: Arc<Metrics>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            client,
            subjects: InferSubjects::new(prefix),
            metrics,
            runtime,
        }
    }

    async fn job(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, CallError> {
        let deadline = Instant::now() + BUDGET;
        let job = Job::Embed { texts };
        let ask = Ask::by(deadline);
        let mut s = call::start(&self.client, &self.subjects, job, &[], ask).await?;
        match s.next().await? {
            (Part::Vectors { vectors }, _) => Ok(vectors),
            (other, _) => Err(CallError::Failed(format!("unexpected {other:?}"))),
        }
    }
}

impl BulkEmbed for RemoteEmbedder {
    fn embed_all(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        // The indexing threads are plain threads. A caller inside the
        // runtime's context would stall it by blocking (tokio panics on
        // a worker thread), so it embeds locally instead.
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err("called on the async runtime".into());
        }
        let role = Role::Embed.index();
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(MAX_TEXTS) {
            let t0 = Instant::now();
            match self.runtime.block_on(self.job(batch.to_vec())) {
                Ok(v) => {
                    self.metrics.remote.observe(role, t0.elapsed());
                    out.extend(v);
                }
                Err(e) => {
                    self.metrics.remote.failure(role, e.kind());
                    return Err(e.to_string());
                }
            }
        }
        Ok(out)
    }
}
