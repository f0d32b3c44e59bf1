//! Voice activity detection with Silero VAD (v6) through ONNX Runtime.
//!
//! The model itself is stateless: its recurrent state and the 64-sample
//! context travel with each call, so one ONNX session on one thread serves
//! every conversation, and each conversation keeps a small [`VadState`].

use std::path::Path;

use ort::session::Session;
use ort::value::Tensor;

use super::onnx::{self, OnnxError, run_err};
use super::pool::{Busy, WorkerPool};

/// Samples per VAD window at 16 kHz (32 ms).
pub const WINDOW: usize = 512;
const CONTEXT: usize = 64;
const STATE: usize = 2 * 128;

#[derive(Debug, thiserror::Error)]
pub enum VadError {
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error("VAD needs {WINDOW}-sample windows, got {0}")]
    Window(usize),
}

/// One conversation's recurrent state.
#[derive(Debug, Clone)]
pub struct VadState {
    state: Vec<f32>,
    context: [f32; CONTEXT],
}

impl Default for VadState {
    fn default() -> Self {
        Self {
            state: vec![0.0; STATE],
            context: [0.0; CONTEXT],
        }
    }
}

impl VadState {
    /// Carry the state past a window Silero was not asked about (one under
    /// the level floor): the next window's context is this one's tail, the
    /// recurrent state stays as the last scored window left it.
    pub fn skip(&mut self, window: &[f32]) {
        if let Some(tail) = window.len().checked_sub(CONTEXT).map(|i| &window[i..]) {
            self.context.copy_from_slice(tail);
        }
    }
}

/// Is `window` under the level floor (RMS below `floor_dbfs`)?
pub fn under_floor(window: &[f32], floor_dbfs: f32) -> bool {
    crate::audio::dbfs(crate::audio::rms(window)) < floor_dbfs
}

/// Speech probability of one window, updating `st`.
pub fn speech_prob(
    session: &mut Session,
    st: &mut VadState,
    window: &[f32],
) -> Result<f32, VadError> {
    if window.len() != WINDOW {
        return Err(VadError::Window(window.len()));
    }
    let mut x = Vec::with_capacity(CONTEXT + WINDOW);
    x.extend_from_slice(&st.context);
    x.extend_from_slice(window);
    let outputs = session
        .run(ort::inputs![
            "input" => Tensor::from_array(([1usize, CONTEXT + WINDOW], x.clone())).map_err(run_err)?,
            "state" => Tensor::from_array(([2usize, 1, 128], st.state.clone())).map_err(run_err)?,
            "sr" => Tensor::from_array(((), vec![16_000i64])).map_err(run_err)?,
        ])
        .map_err(run_err)?;
    let prob = onnx::scalar(&outputs, "VAD", "output")?;
    let new_state = onnx::output(&outputs, "VAD", "stateN")?;
    if new_state.len() == STATE {
        st.state.copy_from_slice(new_state);
    }
    st.context.copy_from_slice(&x[x.len() - CONTEXT..]);
    Ok(prob)
}

/// Silero on its own inference thread.
pub struct Vad {
    pool: WorkerPool<Session>,
}

impl Vad {
    pub fn load(
        env: &'static ort::environment::Environment,
        model: &Path,
        queue: usize,
    ) -> Result<Self, VadError> {
        let model = model.to_path_buf();
        let pool = WorkerPool::new("vad", 1, queue, move |_| onnx::session(env, &model, 1))?;
        Ok(Self { pool })
    }

    /// Speech probabilities of consecutive windows, carrying `st` through them.
    pub async fn probs(
        &self,
        mut st: VadState,
        windows: Vec<Vec<f32>>,
    ) -> Result<(Vec<f32>, VadState), VadError> {
        self.pool
            .run(move |session| {
                let mut out = Vec::with_capacity(windows.len());
                for w in &windows {
                    out.push(speech_prob(session, &mut st, w)?);
                }
                Ok((out, st))
            })
            .await?
    }
}
