//! Speech synthesis with a Piper (VITS) voice through ONNX Runtime.
//!
//! Text → phonemes (espeak-ng, see `phonemes`) → ids → 22,050 Hz audio, one
//! sentence per call, on a bounded pool of threads.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;

use super::onnx::{self, OnnxError, run_err};
use super::phonemes::{PhonemeError, phoneme_ids, phonemize};
use super::pool::{Busy, WorkerPool};

#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("cannot read voice config {path}: {message}")]
    Config { path: String, message: String },
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Phonemes(#[from] PhonemeError),
    #[error(transparent)]
    Busy(#[from] Busy),
}

#[derive(Debug, Clone, Deserialize)]
struct AudioSection {
    sample_rate: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct EspeakSection {
    voice: String,
}

#[derive(Debug, Clone, Deserialize)]
struct InferenceSection {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

/// The parts of a Piper `.onnx.json` that synthesis needs.
#[derive(Debug, Clone, Deserialize)]
pub struct VoiceConfig {
    audio: AudioSection,
    espeak: EspeakSection,
    inference: InferenceSection,
    phoneme_id_map: HashMap<String, Vec<i64>>,
}

impl VoiceConfig {
    pub fn load(path: &Path) -> Result<Self, TtsError> {
        let err = |message: String| TtsError::Config {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| err(e.to_string()))
    }

    pub fn sample_rate(&self) -> u32 {
        self.audio.sample_rate
    }
}

/// Synthesized audio for one piece of text.
#[derive(Debug, Clone)]
pub struct Speech {
    pub pcm: Vec<f32>,
    pub sample_rate: u32,
    pub elapsed: Duration,
}

impl Speech {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.pcm.len() as f64 / f64::from(self.sample_rate.max(1)))
    }
}

/// A Piper voice served by a pool of ONNX sessions.
pub struct Tts {
    pool: WorkerPool<Session>,
    voice: std::sync::Arc<VoiceConfig>,
}

impl Tts {
    /// Load `model` (`.onnx`) with its `config` (`.onnx.json`).
    ///
    /// `length_scale` overrides the voice's speaking rate (> 1 is slower).
    pub fn load(
        env: &'static ort::environment::Environment,
        model: &Path,
        config: &Path,
        workers: usize,
        threads: usize,
        queue: usize,
        length_scale: Option<f32>,
    ) -> Result<Self, TtsError> {
        let mut voice = VoiceConfig::load(config)?;
        if let Some(ls) = length_scale.filter(|v| v.is_finite() && *v > 0.0) {
            voice.inference.length_scale = ls;
        }
        let voice = std::sync::Arc::new(voice);
        let model = model.to_path_buf();
        let pool = WorkerPool::new("tts", workers, queue, move |_| {
            // Before the session: its threads inherit the priority.
            super::priority::bulk_thread();
            onnx::session(env, &model, threads)
        })?;
        Ok(Self { pool, voice })
    }

    pub fn sample_rate(&self) -> u32 {
        self.voice.sample_rate()
    }

    /// Synthesize one sentence (or a few). Empty text gives empty audio.
    pub async fn synthesize(&self, text: String) -> Result<Speech, TtsError> {
        self.synthesize_by(text, std::time::Instant::now()).await
    }

    /// Synthesize, needed by `due`: pieces due earlier are synthesized first
    /// (a reply's first piece before another session's later ones).
    pub async fn synthesize_by(
        &self,
        text: String,
        due: std::time::Instant,
    ) -> Result<Speech, TtsError> {
        let voice = self.voice.clone();
        self.pool
            .run_by(due, move |session| {
                synthesize_blocking(session, &voice, &text)
            })
            .await?
    }
}

fn synthesize_blocking(
    session: &mut Session,
    voice: &VoiceConfig,
    text: &str,
) -> Result<Speech, TtsError> {
    let started = Instant::now();
    let phonemes = phonemize(text, &voice.espeak.voice)?;
    let ids = phoneme_ids(&phonemes, &voice.phoneme_id_map);
    if ids.len() <= 2 {
        return Ok(Speech {
            pcm: Vec::new(),
            sample_rate: voice.sample_rate(),
            elapsed: started.elapsed(),
        });
    }
    let n = ids.len();
    let inf = &voice.inference;
    // One piece at a time with the other bulk inference (`gate`).
    let turn = super::gate::bulk().enter();
    let outputs = session
        .run(ort::inputs![
            "input" => Tensor::from_array(([1usize, n], ids)).map_err(run_err)?,
            "input_lengths" => Tensor::from_array(([1usize], vec![n as i64])).map_err(run_err)?,
            "scales" => Tensor::from_array(([3usize], vec![inf.noise_scale, inf.length_scale, inf.noise_w])).map_err(run_err)?,
        ])
        .map_err(run_err)?;
    drop(turn);
    let audio = onnx::output(&outputs, "voice", "output")?;
    let mut pcm: Vec<f32> = audio.iter().map(|x| x.clamp(-1.0, 1.0)).collect();
    trim_lead(&mut pcm, voice.sample_rate());
    Ok(Speech {
        pcm,
        sample_rate: voice.sample_rate(),
        elapsed: started.elapsed(),
    })
}

/// Under this a sample is Piper's lead-in, not speech (-50 dBFS).
const LEAD_LEVEL: f32 = 0.003;
/// Lead-in kept before the first sound, so no onset is clipped.
const LEAD_KEEP_MS: u32 = 10;

/// Drop Piper's near-silent lead-in (up to ~60 ms on every piece): on the
/// first piece it is latency the user hears as silence, and between pieces
/// the previous one's tail already makes the pause.
fn trim_lead(pcm: &mut Vec<f32>, sample_rate: u32) {
    let Some(first) = pcm.iter().position(|x| x.abs() > LEAD_LEVEL) else {
        return;
    };
    let keep = (sample_rate * LEAD_KEEP_MS / 1000) as usize;
    pcm.drain(..first.saturating_sub(keep));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lead_in_is_trimmed_to_ten_ms_before_the_first_sound() {
        let sr = 1000; // 1 sample per ms
        let cases: &[(usize, usize, usize)] = &[
            // (silent samples, sound samples, samples kept)
            (56, 5, 10 + 5),
            (4, 5, 4 + 5),
            (0, 5, 5),
        ];
        for &(silent, sound, kept) in cases {
            let mut pcm = vec![0.001; silent];
            pcm.extend(vec![0.5; sound]);
            trim_lead(&mut pcm, sr);
            assert_eq!(pcm.len(), kept, "{silent} silent");
            assert_eq!(pcm[kept - sound], 0.5);
        }
        let mut quiet = vec![0.0; 40];
        trim_lead(&mut quiet, sr);
        assert_eq!(quiet.len(), 40, "all-silent audio is left alone");
    }
}
