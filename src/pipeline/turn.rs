//! End-of-turn detection with Smart Turn v3.2: given the user's audio so far,
//! the probability that they have finished their turn.

use std::path::Path;
use std::time::{Duration, Instant};

use ort::session::Session;
use ort::value::Tensor;

use super::mel::{MelExtractor, N_MELS};
use super::onnx::{self, OnnxError, run_err};
use super::pool::{Busy, WorkerPool};

/// The model looks at the last 8 s of 16 kHz audio.
pub const WINDOW_SAMPLES: usize = 8 * 16_000;
const FRAMES: usize = 800;

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Busy(#[from] Busy),
}

/// Smart Turn's input features for `audio`: the last 8 s, zero-padded at the
/// start, normalized to zero mean and unit variance, as Whisper log-mel.
pub fn features(mel: &MelExtractor, audio: &[f32]) -> Vec<f32> {
    let tail = &audio[audio.len().saturating_sub(WINDOW_SAMPLES)..];
    let mut buf = vec![0.0f32; WINDOW_SAMPLES - tail.len()];
    buf.extend_from_slice(tail);
    let n = buf.len() as f64;
    let mean = buf.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = buf
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    let scale = 1.0 / (var + 1e-7).sqrt();
    for x in &mut buf {
        *x = ((f64::from(*x) - mean) * scale) as f32;
    }
    let (feats, frames) = mel.log_mel(&buf);
    debug_assert_eq!(frames, FRAMES);
    feats
}

/// One prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnPrediction {
    /// Probability that the turn is complete (the model ends in a sigmoid).
    pub probability: f32,
    pub elapsed: Duration,
}

impl TurnPrediction {
    pub fn complete(&self) -> bool {
        self.probability > 0.5
    }
}

struct Worker {
    session: Session,
    mel: MelExtractor,
}

/// Smart Turn on its own inference thread (with `threads` ONNX threads).
pub struct TurnDetector {
    pool: WorkerPool<Worker>,
}

impl TurnDetector {
    pub fn load(
        env: &'static ort::environment::Environment,
        model: &Path,
        threads: usize,
        queue: usize,
    ) -> Result<Self, TurnError> {
        let model = model.to_path_buf();
        let pool = WorkerPool::new("turn", 1, queue, move |_| {
            Ok::<_, OnnxError>(Worker {
                session: onnx::session(env, &model, threads)?,
                mel: MelExtractor::new(),
            })
        })?;
        Ok(Self { pool })
    }

    /// Predict on the user's turn so far (16 kHz mono).
    pub async fn predict(&self, audio: Vec<f32>) -> Result<TurnPrediction, TurnError> {
        self.pool
            .run(move |w| {
                let started = Instant::now();
                let feats = features(&w.mel, &audio);
                let outputs = w
                    .session
                    .run(ort::inputs![
                        "input_features" => Tensor::from_array(([1usize, N_MELS, FRAMES], feats)).map_err(run_err)?,
                    ])
                    .map_err(run_err)?;
                let p = onnx::scalar(&outputs, "turn model", "logits")?;
                Ok(TurnPrediction {
                    probability: p,
                    elapsed: started.elapsed(),
                })
            })
            .await?
    }
}
