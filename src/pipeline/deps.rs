//! What a speech session needs that lives as long as the server: the
//! engines (each model loaded once per process), the config, the metrics
//! and the busy line, synthesized once at start-up. Loading the engines is
//! `crate::engines`' job (`SpeechDeps::load` is defined there): the
//! pipeline never imports its loader.

use std::sync::Arc;
use std::time::Instant;

use super::asr::AsrError;
use super::conversation::{Failure, Heard};
use super::llm::{ChatMessage, Generation};
use super::vad::VadState;
use crate::WIRE_RATE;
use crate::audio::resample_clip;
use crate::config::Config;
use crate::kb::Hit;
use crate::metrics::Metrics;
use crate::pipeline::Engines;
use crate::pipeline::retrieve::Retriever;
use crate::pipeline::tts::TtsError;

/// The inference a speech session asks for, as one small trait: the
/// models in production ([`Engines`]), fakes in the shell's tests. Every
/// method runs its work off the async runtime (the engines' own threads).
#[async_trait::async_trait]
pub trait Inference: Send + Sync {
    /// Silero's speech probability for each window, carrying `state` through.
    async fn vad(
        &self,
        state: VadState,
        windows: Vec<Vec<f32>>,
    ) -> Result<(Vec<f32>, VadState), String>;
    /// Smart Turn: is the turn so far complete?
    async fn turn_complete(&self, audio: Vec<f32>) -> Result<bool, String>;
    /// Transcribe; `alive` is held until the job has run or been skipped.
    async fn transcribe(&self, audio: Vec<f32>, alive: Arc<()>) -> Result<Heard, Failure>;
    /// Start a reply for conversation `key`; `Failure::Busy` when its queue
    /// is full (or, remote, when no worker takes it).
    async fn generate(&self, key: u64, messages: Vec<ChatMessage>) -> Result<Generation, Failure>;
    /// The conversation `key` is over (release its KV cells).
    fn forget(&self, key: u64);
    /// Prepare conversation `key`'s next prompt from its history and the
    /// question heard so far, if the LLM can (see
    /// [`crate::pipeline::llm::Llm::warm`]).
    fn warm(&self, _key: u64, _messages: Vec<ChatMessage>, _so_far: String) {}
    /// Speech for `text`, at the wire rate (48 kHz), needed by `due`
    /// (earlier first across sessions).
    async fn synthesize(&self, text: String, due: Instant) -> Result<Vec<f32>, String>;
    /// ASR and LLM jobs queued or running, for every session.
    fn pending(&self) -> usize;
    /// Knowledge-base chunks for `question`; `None` when there is no
    /// knowledge base (or it holds nothing), so the question goes as it is.
    async fn retrieve(&self, _question: String) -> Option<Result<Vec<Hit>, String>> {
        None
    }
}

#[async_trait::async_trait]
impl Inference for Engines {
    async fn vad(
        &self,
        state: VadState,
        windows: Vec<Vec<f32>>,
    ) -> Result<(Vec<f32>, VadState), String> {
        self.vad
            .probs(state, windows)
            .await
            .map_err(|e| e.to_string())
    }

    async fn turn_complete(&self, audio: Vec<f32>) -> Result<bool, String> {
        let p = self.turn.predict(audio).await.map_err(|e| e.to_string())?;
        tracing::debug!(probability = p.probability, "smart turn");
        Ok(p.complete())
    }

    async fn transcribe(&self, audio: Vec<f32>, alive: Arc<()>) -> Result<Heard, Failure> {
        match self.asr.transcribe_holding(audio, alive).await {
            Ok(t) => Ok(Heard {
                text: t.text,
                decode: t.elapsed,
            }),
            Err(AsrError::Busy(_)) => Err(Failure::Busy),
            Err(e) => Err(Failure::Failed(e.to_string())),
        }
    }

    async fn generate(&self, key: u64, messages: Vec<ChatMessage>) -> Result<Generation, Failure> {
        self.llm
            .generate(key, messages, None)
            .map_err(|_| Failure::Busy)
    }

    fn forget(&self, key: u64) {
        self.llm.forget(key);
    }

    fn warm(&self, key: u64, messages: Vec<ChatMessage>, so_far: String) {
        self.llm.warm(key, messages, so_far);
    }

    async fn synthesize(&self, text: String, due: Instant) -> Result<Vec<f32>, String> {
        let speech = self
            .tts
            .synthesize_by(text, due)
            .await
            .map_err(|e| e.to_string())?;
        resample_clip(&speech.pcm, speech.sample_rate, WIRE_RATE).map_err(|e| e.to_string())
    }

    fn pending(&self) -> usize {
        self.asr.pending() + self.llm.pending()
    }

    async fn retrieve(&self, question: String) -> Option<Result<Vec<Hit>, String>> {
        let r = self.kb.as_ref()?;
        if r.kb().is_empty() {
            return None;
        }
        Some(r.retrieve(question).await)
    }
}

/// Shared, long-lived things a speech session needs.
#[derive(Clone)]
pub struct SpeechDeps {
    pub engines: Arc<dyn Inference>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// "One moment, please" (48 kHz).
    pub busy_line: Arc<BusyLine>,
    /// The knowledge base (also in `engines`), for its HTTP API.
    pub kb: Option<Arc<Retriever>>,
}

impl SpeechDeps {
    /// Around loaded engines: synthesize the busy line.
    pub async fn new(
        engines: Engines,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, TtsError> {
        let speech = engines
            .tts
            .synthesize(config.conversation.busy_line.clone())
            .await?;
        let pcm = resample_clip(&speech.pcm, speech.sample_rate, WIRE_RATE).unwrap_or_default();
        Ok(Self {
            kb: engines.kb.clone(),
            engines: Arc::new(engines),
            config,
            metrics,
            busy_line: Arc::new(BusyLine::new(pcm)),
        })
    }
}

/// The busy line's audio at the wire rate. Synthesized once at start-up;
/// with remote inference it comes from the first worker that answers, and
/// until then a busy turn gets its `busy` event over silence.
#[derive(Debug, Default)]
pub struct BusyLine(std::sync::RwLock<Arc<Vec<f32>>>);

impl BusyLine {
    pub fn new(pcm: Vec<f32>) -> Self {
        Self(std::sync::RwLock::new(Arc::new(pcm)))
    }

    /// The line, or 100 ms of silence while there is none: a reply with
    /// no audio would never be heard to its end, and the turn would not end.
    pub fn get(&self) -> Arc<Vec<f32>> {
        let pcm = self.0.read().map(|p| p.clone()).unwrap_or_default();
        if pcm.is_empty() {
            return Arc::new(vec![0.0; WIRE_RATE as usize / 10]);
        }
        pcm
    }

    pub fn set(&self, pcm: Vec<f32>) {
        if let Ok(mut p) = self.0.write() {
            *p = Arc::new(pcm);
        }
    }
}
