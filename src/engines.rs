//! Loading the inference engines from the configured model profile. Each
//! model is loaded once per process and shared by every session.
//!
//! This module sits above the pipeline: it imports the engine types from
//! `crate::pipeline` and the pipeline never imports it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::config::Config;
use crate::config::LlmBackendKind;
use crate::kb::{KbError, KnowledgeBase, folder};
use crate::metrics::Metrics;
use crate::models::{ModelError, ModelSet};
use crate::pipeline::asr::{Asr, AsrError, AsrOptions};
use crate::pipeline::llm::{HttpLlm, HttpLlmOptions, Llm, LlmBackend, LlmError, LlmOptions};
use crate::pipeline::onnx::{self, OnnxError};
use crate::pipeline::retrieve::Retriever;
use crate::pipeline::speech::SpeechDeps;
use crate::pipeline::tts::{Tts, TtsError};
use crate::pipeline::turn::{TurnDetector, TurnError};
use crate::pipeline::vad::{Vad, VadError};

/// The speech pipeline's engines could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading models: {0}")]
    Engines(#[from] EngineError),
    #[error("preparing the busy line: {0}")]
    BusyLine(#[from] TtsError),
    #[error("model loading thread failed: {0}")]
    Join(String),
}

impl SpeechDeps {
    /// Load every engine of `config`'s profile (off the async workers) and
    /// synthesize the busy line.
    pub async fn load(config: Arc<Config>, metrics: Arc<Metrics>) -> Result<Self, LoadError> {
        let cfg = config.clone();
        let engines = tokio::task::spawn_blocking(move || Engines::load(&cfg))
            .await
            .map_err(|e| LoadError::Join(e.to_string()))??;
        Ok(Self::new(engines, config, metrics).await?)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Asr(#[from] AsrError),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    Tts(#[from] TtsError),
    #[error(transparent)]
    Vad(#[from] VadError),
    #[error(transparent)]
    Turn(#[from] TurnError),
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Kb(#[from] KbError),
    #[error("kb.dir {0} is not a folder")]
    KbDir(PathBuf),
    #[error("cannot read {0}: {1}")]
    KbRead(PathBuf, std::io::Error),
}

fn models(cfg: &Config) -> Result<ModelSet, EngineError> {
    Ok(ModelSet::open(&cfg.models.dir, &cfg.models.profile)?)
}

fn ort_env(set: &ModelSet) -> Result<&'static ort::environment::Environment, EngineError> {
    Ok(onnx::init(&set.path("runtime", "")?)?)
}

/// Bulk inference threads (ASR, LLM, TTS) started from now on run this much
/// nicer than the real-time path (`pipeline::priority`), and ggml's thread
/// counts follow other programs' CPU use if so configured.
fn bulk_priority(cfg: &Config) {
    crate::pipeline::priority::set_bulk_nice(cfg.inference.bulk_nice);
    crate::pipeline::cpu_share::follow_load(cfg.inference.threads_follow_load);
}

pub fn load_asr(cfg: &Config) -> Result<Asr, EngineError> {
    bulk_priority(cfg);
    let set = models(cfg)?;
    let inf = &cfg.inference;
    Ok(Asr::load(
        &set.path("asr", "")?,
        AsrOptions {
            threads: inf.asr_threads,
            workers: inf.asr_workers,
            queue: inf.asr_queue,
            fit_audio_ctx: inf.asr_fit_audio_ctx,
        },
    )?)
}

/// The configured LLM backend: the embedded engine or an OpenAI-compatible server.
pub fn load_llm_backend(cfg: &Config) -> Result<LlmBackend, EngineError> {
    match cfg.llm.backend {
        LlmBackendKind::Embedded => Ok(LlmBackend::Embedded(load_llm(cfg)?)),
        LlmBackendKind::Openai => Ok(LlmBackend::Http(HttpLlm::new(HttpLlmOptions {
            url: cfg.llm.url.clone(),
            model: cfg.llm.model.clone(),
            api_key: cfg
                .llm
                .api_key_env
                .as_ref()
                .and_then(|v| std::env::var(v).ok()),
            concurrency: cfg.llm.concurrency,
            queue: cfg.inference.llm_queue,
            max_tokens: cfg.inference.llm_max_tokens,
            temperature: cfg.inference.llm_temperature,
            timeout: std::time::Duration::from_secs(120),
        }))),
    }
}

/// The embedded llama.cpp engine with the profile's model.
pub fn load_llm(cfg: &Config) -> Result<Llm, EngineError> {
    bulk_priority(cfg);
    let set = models(cfg)?;
    let inf = &cfg.inference;
    Ok(Llm::load(
        &set.path("llm", "")?,
        LlmOptions {
            threads: inf.llm_threads,
            slots: inf.llm_slots,
            queue: inf.llm_queue,
            max_prompt_tokens: inf.llm_max_prompt_tokens,
            max_tokens: inf.llm_max_tokens,
            temperature: inf.llm_temperature,
            repeat_penalty: inf.llm_repeat_penalty,
            repeat_last_n: inf.llm_repeat_last_n,
        },
    )?)
}

pub fn load_tts(cfg: &Config) -> Result<Tts, EngineError> {
    bulk_priority(cfg);
    let set = models(cfg)?;
    let env = ort_env(&set)?;
    Ok(Tts::load(
        env,
        &set.path("tts", ".onnx")?,
        &set.path("tts", ".onnx.json")?,
        cfg.inference.tts_workers,
        cfg.inference.tts_threads.max(1),
        cfg.inference.tts_queue,
        cfg.inference.tts_length_scale,
    )?)
}

pub fn load_vad(cfg: &Config) -> Result<Vad, EngineError> {
    let set = models(cfg)?;
    let env = ort_env(&set)?;
    Ok(Vad::load(env, &set.path("vad", "")?, 256)?)
}

pub fn load_turn(cfg: &Config) -> Result<TurnDetector, EngineError> {
    let set = models(cfg)?;
    let env = ort_env(&set)?;
    Ok(TurnDetector::load(
        env,
        &set.path("turn", "")?,
        cfg.inference.turn_threads.max(1),
        64,
    )?)
}

/// The knowledge base, its folder indexed and watched. Without a folder a
/// missing embedding model only turns the knowledge base off (with a
/// warning); with one it is an error, since the folder would be ignored.
pub fn load_kb(cfg: &Config) -> Result<Option<Retriever>, EngineError> {
    let kb = match KnowledgeBase::open(
        cfg.kb.index_path().as_deref(),
        &cfg.models.dir,
        cfg.kb.max_doc_bytes,
    ) {
        Ok(kb) => Arc::new(kb),
        Err(e @ KbError::Embed(_)) if cfg.kb.dir.is_none() => {
            tracing::warn!(error = %e, "no knowledge base: replies are not grounded on documents");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let Some(dir) = cfg.kb.dir.clone() else {
        return Ok(Some(Retriever::new(kb, &cfg.kb)));
    };
    if !dir.is_dir() {
        return Err(EngineError::KbDir(dir));
    }
    // Indexed before the first session, so the first answer can use it.
    let r = folder::sync(&kb, &dir).map_err(|e| EngineError::KbRead(dir.clone(), e))?;
    tracing::info!(dir = %dir.display(), added = r.added, updated = r.updated, unchanged = r.unchanged,
        removed = r.removed, skipped = r.skipped.len(), failed = r.failed.len(), "kb: folder indexed");
    bulk_priority(cfg);
    // Names only, one per change. Whoever does not follow a shared bucket
    // (no NATS, `converse`) drops the feed, so sends fail and nothing piles up.
    let (tx, changes) = tokio::sync::mpsc::unbounded_channel();
    let feed = folder::Feed {
        dir: dir.clone(),
        changes,
    };
    let watched = kb.clone();
    std::thread::Builder::new()
        .name("kb-folder".into())
        .spawn(move || {
            // Indexing is bulk work: live turns come first.
            crate::pipeline::priority::bulk_thread();
            folder::watch(watched, &dir, Arc::new(AtomicBool::new(false)), |name| {
                let _ = tx.send(name.to_string());
            });
        })
        .map_err(|e| EngineError::KbRead(PathBuf::from("kb-folder thread"), e))?;
    Ok(Some(Retriever::new(kb, &cfg.kb).with_feed(feed)))
}

/// The bundle the speech pipeline takes (defined there, loaded here: the
/// arrow points from the loader to the pipeline, never back).
pub use crate::pipeline::Engines;

impl Engines {
    pub fn load(cfg: &Config) -> Result<Self, EngineError> {
        Ok(Self {
            asr: Arc::new(load_asr(cfg)?),
            llm: Arc::new(load_llm_backend(cfg)?),
            tts: Arc::new(load_tts(cfg)?),
            vad: Arc::new(load_vad(cfg)?),
            turn: Arc::new(load_turn(cfg)?),
            kb: load_kb(cfg)?.map(Arc::new),
        })
    }
}
