//! Making a server's speech pipeline use workers: load what stays local,
//! send document embedding to the `embed` workers, and get the busy line
//! from the first worker that answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{LocalEngines, RemoteInference};
use super::directory::Directory;
use super::embed::RemoteEmbedder;
use crate::config::Config;
use crate::engines::{self, EngineError, LoadError};
use crate::metrics::Metrics;
use crate::pipeline::deps::{BusyLine, Inference, SpeechDeps};

/// The first pause before the busy line is asked for again (it doubles, up to 10 s).
const BUSY_LINE_RETRY: Duration = Duration::from_secs(1);

impl LocalEngines {
    /// VAD, Smart Turn and the knowledge base (blocking: call off the runtime).
    pub fn load(cfg: &Config) -> Result<Self, EngineError> {
        Ok(Self {
            vad: Arc::new(engines::load_vad(cfg)?),
            turn: Arc::new(engines::load_turn(cfg)?),
            kb: engines::load_kb(cfg)?.map(Arc::new),
        })
    }
}

/// The speech pipeline's dependencies with ASR, LLM and TTS on the
/// workers behind `client`, and the directory of those workers.
pub async fn speech_deps(
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    client: async_nats::Client,
) -> Result<(SpeechDeps, Arc<Directory>), LoadError> {
    let cfg = config.clone();
    let local = tokio::task::spawn_blocking(move || LocalEngines::load(&cfg))
        .await
        .map_err(|e| LoadError::Join(e.to_string()))??;
    let kb = local.kb.clone();
    if let Some(r) = &kb {
        r.kb().embed_documents_with(Arc::new(RemoteEmbedder::new(
            client.clone(),
            &config.bus.prefix,
            metrics.clone(),
            tokio::runtime::Handle::current(),
        )));
    }
    let remote = Arc::new(RemoteInference::new(
        client.clone(),
        &config.bus.prefix,
        local,
        metrics.clone(),
        Some(config.inference.start_deadline_ms)
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis),
    ));
    let busy_line = Arc::new(BusyLine::default());
    tokio::spawn(fetch_busy_line(
        remote.clone(),
        busy_line.clone(),
        config.conversation.busy_line.clone(),
    ));
    let deps = SpeechDeps {
        engines: remote,
        config,
        metrics,
        busy_line,
        kb,
    };
    Ok((deps, Directory::spawn(client)))
}

/// Until a TTS worker answers, a busy turn gets its `busy` event over
/// silence; then the line is spoken.
async fn fetch_busy_line(remote: Arc<RemoteInference>, line: Arc<BusyLine>, text: String) {
    let mut warned = false;
    let mut pause = BUSY_LINE_RETRY;
    loop {
        match remote.synthesize(text.clone(), Instant::now()).await {
            Ok(pcm) if !pcm.is_empty() => {
                tracing::info!(ms = pcm.len() / 48, "busy line synthesized by a worker");
                line.set(pcm);
                return;
            }
            other => {
                if !warned {
                    tracing::warn!(result = ?other.err(), "no TTS worker for the busy line yet; retrying");
                    warned = true;
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(BUSY_LINE_RETRY * 10);
    }
}
