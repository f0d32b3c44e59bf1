//! ONNX Runtime loading (the `ort` crate with `load-dynamic`): the runtime
//! library comes from the models directory, fetched like the models, because
//! ort's own binary download cannot work offline.

use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionOutputs};

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Runtime { path: String, message: String },
    #[error("cannot load ONNX model {path}: {message}")]
    Model { path: String, message: String },
    #[error("ONNX inference failed: {0}")]
    Run(String),
}

static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Load the runtime library once per process. Later calls return the first result.
pub fn init(dylib: &Path) -> Result<&'static Environment, OnnxError> {
    ENV.get_or_init(|| {
        if !dylib.exists() {
            return Err(format!(
                "{} is missing; run `{}`",
                dylib.display(),
                crate::models::FETCH_HINT
            ));
        }
        let builder = ort::init_from(dylib).map_err(|e| e.to_string())?;
        builder
            .with_name("voxloop")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|message| OnnxError::Runtime {
        path: dylib.display().to_string(),
        message: message.clone(),
    })
}

fn build(env: &Environment, model: &Path, threads: usize) -> ort::Result<Session> {
    Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .with_intra_threads(threads)?
        .with_inter_threads(1)?
        .with_intra_op_spinning(false)?
        .commit_from_file(model)
}

/// Open a model with `threads` intra-op threads (spinning off: idle threads
/// must not burn the cores the other models need).
pub fn session(env: &Environment, model: &Path, threads: usize) -> Result<Session, OnnxError> {
    if !model.exists() {
        return Err(OnnxError::Model {
            path: model.display().to_string(),
            message: format!("missing; run `{}`", crate::models::FETCH_HINT),
        });
    }
    build(env, model, threads).map_err(|e| OnnxError::Model {
        path: model.display().to_string(),
        message: e.to_string(),
    })
}

pub(crate) fn run_err<E: std::fmt::Display>(e: E) -> OnnxError {
    OnnxError::Run(e.to_string())
}

/// The f32 data of output `name` of `model`'s run; a missing or ill-typed
/// output is an error naming both.
pub(crate) fn output<'a>(
    outputs: &'a SessionOutputs<'_>,
    model: &str,
    name: &str,
) -> Result<&'a [f32], OnnxError> {
    let value = outputs
        .get(name)
        .ok_or_else(|| OnnxError::Run(format!("{model} has no {name:?} output")))?;
    let (_, data) = value.try_extract_tensor::<f32>().map_err(run_err)?;
    Ok(data)
}

/// The first value of a scalar output (a probability), 0 if it is empty.
pub(crate) fn scalar(
    outputs: &SessionOutputs<'_>,
    model: &str,
    name: &str,
) -> Result<f32, OnnxError> {
    Ok(output(outputs, model, name)?
        .first()
        .copied()
        .unwrap_or(0.0))
}
