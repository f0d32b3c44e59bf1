//! What a speech session needs that lives as long as the server: the
//! engines (each model loaded once per process), the config, the metrics
//! and the busy line, synthesized once at start-up.

use std::sync::Arc;

use crate::WIRE_RATE;
use crate::audio::resample_clip;
use crate::config::Config;
use crate::engines::Engines;
use crate::metrics::Metrics;

/// Shared, long-lived things a speech session needs.
#[derive(Clone)]
pub struct SpeechDeps {
    pub engines: Arc<Engines>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// "One moment, please", synthesized once at start-up (48 kHz).
    pub busy_line: Arc<Vec<f32>>,
}

/// The speech pipeline's engines could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading models: {0}")]
    Engines(#[from] crate::engines::EngineError),
    #[error("preparing the busy line: {0}")]
    BusyLine(#[from] super::tts::TtsError),
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
        Self::new(Arc::new(engines), config, metrics).await
    }

    async fn new(
        engines: Arc<Engines>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, LoadError> {
        let speech = engines
            .tts
            .synthesize(config.conversation.busy_line.clone())
            .await?;
        let pcm = resample_clip(&speech.pcm, speech.sample_rate, WIRE_RATE).unwrap_or_default();
        Ok(Self {
            engines,
            config,
            metrics,
            busy_line: Arc::new(pcm),
        })
    }
}
