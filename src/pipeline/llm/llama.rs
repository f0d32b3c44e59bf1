//! The handle to the embedded llama.cpp engine: loads the model, starts the
//! engine thread ([`super::engine`]) and queues requests to it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use tokio::sync::mpsc;

use super::chat::{ChatMessage, Generation, LlmEvent};
use super::engine::Engine;
use crate::pipeline::pool::Busy;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("cannot load LLM {path}: {message}")]
    Load { path: String, message: String },
    #[error("the LLM engine thread is gone")]
    Gone,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct LlmOptions {
    pub threads: i32,
    /// Conversations that can hold KV cells at once (llama.cpp sequence ids).
    pub slots: u32,
    /// Requests that may wait for a slot beyond those running.
    pub queue: usize,
    /// Longest prompt; older turns are dropped to fit.
    pub max_prompt_tokens: usize,
    /// Default cap on a reply's tokens.
    pub max_tokens: usize,
    /// 0 = greedy (deterministic).
    pub temperature: f32,
    /// Repetition penalty over the last `repeat_last_n` tokens; 1 = off.
    pub repeat_penalty: f32,
    pub repeat_last_n: i32,
}

impl Default for LlmOptions {
    fn default() -> Self {
        Self {
            threads: 2,
            slots: 4,
            queue: 8,
            max_prompt_tokens: 1536,
            max_tokens: 200,
            temperature: 0.0,
            repeat_penalty: 1.15,
            repeat_last_n: 64,
        }
    }
}

pub(super) struct Request {
    pub(super) key: u64,
    pub(super) messages: Vec<ChatMessage>,
    pub(super) max_tokens: usize,
    pub(super) events: mpsc::UnboundedSender<LlmEvent>,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) submitted: Instant,
}

pub(super) enum Cmd {
    Generate(Request),
    Forget(u64),
    /// Prefill conversation `key`'s next prompt up to its next user
    /// message, or up to `so_far`, the part of it heard while the user
    /// still speaks.
    Warm {
        key: u64,
        messages: Vec<ChatMessage>,
        so_far: String,
    },
}

/// Handle to the engine thread.
pub struct Llm {
    tx: Sender<Cmd>,
    pending: Arc<AtomicUsize>,
    warmed: Arc<AtomicUsize>,
    capacity: usize,
    default_max_tokens: usize,
}

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

fn backend() -> Result<&'static LlamaBackend, String> {
    BACKEND
        .get_or_init(|| {
            let mut b = LlamaBackend::init().map_err(|e| e.to_string())?;
            b.void_logs();
            Ok(b)
        })
        .as_ref()
        .map_err(|e| e.clone())
}

impl Llm {
    /// Load the GGUF model and start the engine thread.
    pub fn load(path: &Path, options: LlmOptions) -> Result<Self, LlmError> {
        let load_err = |message: String| LlmError::Load {
            path: path.display().to_string(),
            message,
        };
        let backend = backend().map_err(load_err)?;
        let params = LlamaModelParams::default().with_n_gpu_layers(0);
        let model = LlamaModel::load_from_file(backend, path, &params)
            .map_err(|e| load_err(e.to_string()))?;
        // The engine lives as long as the process; leaking gives the context a 'static model.
        let model: &'static LlamaModel = Box::leak(Box::new(model));
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let pending = Arc::new(AtomicUsize::new(0));
        let p = pending.clone();
        let warmed = Arc::new(AtomicUsize::new(0));
        let w = warmed.clone();
        let opts = options.clone();
        std::thread::Builder::new()
            .name("llm".into())
            .spawn(move || {
                crate::pipeline::priority::bulk_thread();
                match Engine::new(backend, model, &opts) {
                    Ok(mut engine) => {
                        let _ = ready_tx.send(Ok(()));
                        engine.run(rx, &p, &w);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| load_err(e.to_string()))?;
        ready_rx
            .recv()
            .map_err(|_| load_err("engine thread died".into()))?
            .map_err(load_err)?;
        Ok(Self {
            tx,
            pending,
            warmed,
            capacity: options.slots as usize + options.queue,
            default_max_tokens: options.max_tokens,
        })
    }

    /// Start a reply to `messages` for conversation `key` (its KV cells are
    /// reused next turn). Fails at once with [`Busy`] when the queue is full.
    pub fn generate(
        &self,
        key: u64,
        messages: Vec<ChatMessage>,
        max_tokens: Option<usize>,
    ) -> Result<Generation, Busy> {
        if self.pending.fetch_add(1, Ordering::SeqCst) >= self.capacity {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy("llm"));
        }
        let (etx, erx) = mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let req = Request {
            key,
            messages,
            max_tokens: max_tokens.unwrap_or(self.default_max_tokens),
            events: etx,
            cancel: cancel.clone(),
            submitted: Instant::now(),
        };
        if self.tx.send(Cmd::Generate(req)).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy("llm"));
        }
        Ok(Generation::new(erx, cancel))
    }

    /// Release a finished conversation's KV cells.
    pub fn forget(&self, key: u64) {
        let _ = self.tx.send(Cmd::Forget(key));
    }

    /// While conversation `key`'s user listens to its last reply, prefill
    /// the prompt of the next one (`messages`, its history) up to where the
    /// next question goes, so that question is all the next reply decodes.
    /// Done only when no generation waits, and dropped when one for `key`
    /// comes first. While the user speaks, `so_far` is the question heard
    /// so far (see `turn.prefill_every_ms`): it is prefilled too, so the
    /// reply decodes only the rest.
    pub fn warm(&self, key: u64, messages: Vec<ChatMessage>, so_far: String) {
        let _ = self.tx.send(Cmd::Warm {
            key,
            messages,
            so_far,
        });
    }

    /// Prompt tokens prefilled by warm-ups so far.
    pub fn warmed_tokens(&self) -> usize {
        self.warmed.load(Ordering::Relaxed)
    }

    /// Generations queued or running.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}
