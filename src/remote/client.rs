//! `serve --inference nats`: the speech pipeline's [`Inference`] with ASR,
//! LLM and TTS on workers and VAD, Smart Turn and the knowledge base in
//! this process (they run per 32 ms window and must not cross a network).
//!
//! Failures: a worker that goes silent for [`super::DEAD_AFTER`] is given
//! up; the job is asked once more of another worker if its deadline
//! allows (for a reply, only before its first token), else the turn gets
//! the busy line. No worker at all is `Busy` at once, never a wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::InferSubjects;
use super::call::{self, Ask, CallError, Stream};
use super::wire::{Control, Job, Part, Role};
use crate::kb::Hit;
use crate::metrics::Metrics;
use crate::pipeline::conversation::{Failure, Heard};
use crate::pipeline::deps::Inference;
use crate::pipeline::llm::{ChatMessage, Completion, Finish, Generation, LlmEvent};
use crate::pipeline::retrieve::Retriever;
use crate::pipeline::turn::TurnDetector;
use crate::pipeline::vad::{Vad, VadState};

/// How long a transcription, or a reply's first token, may take on a
/// worker before it is dropped there. Generous on purpose: the
/// conversation's own start deadline (`inference.start_deadline_ms`, only
/// while other sessions' work waits) decides when a turn gets the busy
/// line, and cancels what it no longer wants; this only keeps a worker
/// from working for nobody after a burst.
const BUDGET: Duration = Duration::from_secs(10);
/// A piece of speech may be synthesized this long after it is due.
const TTS_SLACK: Duration = Duration::from_secs(10);
/// How often a running reply checks whether it was cancelled.
const CANCEL_POLL: Duration = Duration::from_millis(10);

/// The engines that stay in the server.
pub struct LocalEngines {
    pub vad: Arc<Vad>,
    pub turn: Arc<TurnDetector>,
    pub kb: Option<Arc<Retriever>>,
}

pub struct RemoteInference {
    client: async_nats::Client,
    subjects: InferSubjects,
    local: LocalEngines,
    metrics: Arc<Metrics>,
    /// ASR and LLM jobs of this server not finished yet.
    pending: Arc<AtomicUsize>,
    /// Which worker holds each conversation's KV cells.
    affinity: Mutex<HashMap<u64, String>>,
    /// A turn's start deadline: workers that expect to start its
    /// transcription or reply later say busy at once.
    start_deadline: Option<Duration>,
}

/// Counts a job as pending while it lives.
struct PendingGuard(Arc<AtomicUsize>);

impl PendingGuard {
    fn new(p: &Arc<AtomicUsize>) -> Self {
        p.fetch_add(1, Ordering::SeqCst);
        Self(p.clone())
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RemoteInference {
    pub fn new(
        client: async_nats::Client,
        prefix: &str,
        local: LocalEngines,
        metrics: Arc<Metrics>,
        start_deadline: Option<Duration>,
    ) -> Self {
        Self {
            client,
            subjects: InferSubjects::new(prefix),
            local,
            metrics,
            pending: Arc::default(),
            affinity: Mutex::default(),
            start_deadline,
        }
    }

    /// What a worker is asked to start within: speech is paced by its
    /// own due times, so only transcriptions and replies are bounded.
    fn start_within(&self, role: Role) -> Option<Duration> {
        matches!(role, Role::Asr | Role::Llm)
            .then_some(self.start_deadline)
            .flatten()
    }

    fn failed(&self, role: Role, e: &CallError) -> Failure {
        tracing::warn!(role = role.as_str(), error = %e, "remote inference failed");
        self.metrics.remote.failure(role.index(), e.kind());
        match e {
            CallError::Failed(m) => Failure::Failed(m.clone()),
            _ => Failure::Busy,
        }
    }

    /// Start a job, and once more if the first worker took it and then
    /// went silent before its result, while `deadline` allows.
    async fn run_once_more<T, F, Fut>(
        &self,
        role: Role,
        job: Job,
        pcm: &[f32],
        deadline: Instant,
        read: F,
    ) -> Result<T, CallError>
    where
        F: Fn(Stream) -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            let ask = Ask {
                start_within: self.start_within(role),
                ..Ask::by(deadline)
            };
            let s = call::start(&self.client, &self.subjects, job.clone(), pcm, ask).await?;
            match read(s).await {
                Err(CallError::Lost) if tries < 2 && Instant::now() < deadline => {
                    tracing::warn!(role = role.as_str(), "worker lost mid-job; asking another");
                    self.metrics.remote.failure(role.index(), "retried");
                }
                r => return r,
            }
        }
    }
}

async fn transcript(mut s: Stream) -> Result<Heard, CallError> {
    match s.next().await? {
        (Part::Transcript { text, decode_ms }, _) => Ok(Heard {
            text,
            decode: Duration::from_millis(decode_ms),
        }),
        (other, _) => Err(CallError::Failed(format!("unexpected {other:?}"))),
    }
}

async fn speech(mut s: Stream) -> Result<Vec<f32>, CallError> {
    let mut pcm = Vec::new();
    loop {
        match s.next().await? {
            (Part::Audio, more) => pcm.extend(more),
            (Part::Done { .. }, _) => return Ok(pcm),
            (other, _) => return Err(CallError::Failed(format!("unexpected {other:?}"))),
        }
    }
}

#[async_trait::async_trait]
impl Inference for RemoteInference {
    async fn vad(
        &self,
        state: VadState,
        windows: Vec<Vec<f32>>,
    ) -> Result<(Vec<f32>, VadState), String> {
        self.local
            .vad
            .probs(state, windows)
            .await
            .map_err(|e| e.to_string())
    }

    async fn turn_complete(&self, audio: Vec<f32>) -> Result<bool, String> {
        let p = self
            .local
            .turn
            .predict(audio)
            .await
            .map_err(|e| e.to_string())?;
        Ok(p.complete())
    }

    async fn transcribe(&self, audio: Vec<f32>, alive: Arc<()>) -> Result<Heard, Failure> {
        let _pending = PendingGuard::new(&self.pending);
        let _alive = alive;
        let t0 = Instant::now();
        let r = self
            .run_once_more(Role::Asr, Job::Asr, &audio, t0 + BUDGET, transcript)
            .await;
        match r {
            Ok(h) => {
                self.metrics.remote.observe(Role::Asr.index(), t0.elapsed());
                Ok(h)
            }
            Err(e) => Err(self.failed(Role::Asr, &e)),
        }
    }

    async fn generate(&self, key: u64, messages: Vec<ChatMessage>) -> Result<Generation, Failure> {
        let pending = PendingGuard::new(&self.pending);
        let t0 = Instant::now();
        let deadline = t0 + BUDGET;
        let prefer = self.affinity.lock().ok().and_then(|a| a.get(&key).cloned());
        let job = Job::Llm {
            key,
            messages,
            max_tokens: None,
        };
        let ask = Ask {
            start_within: self.start_within(Role::Llm),
            prefer: prefer.as_deref(),
            ..Ask::by(deadline)
        };
        let s = call::start(&self.client, &self.subjects, job.clone(), &[], ask)
            .await
            .map_err(|e| self.failed(Role::Llm, &e))?;
        self.remember(key, &s.worker);
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let reply = Reply {
            client: self.client.clone(),
            subjects: self.subjects.clone(),
            start_within: self.start_within(Role::Llm),
            metrics: self.metrics.clone(),
            job,
            deadline,
            t0,
            tx,
            cancel: cancel.clone(),
            _pending: pending,
        };
        tokio::spawn(reply.forward(s));
        Ok(Generation::new(rx, cancel))
    }

    fn forget(&self, key: u64) {
        let worker = self.affinity.lock().ok().and_then(|mut a| a.remove(&key));
        if let Some(w) = worker {
            self.control(&w, &Control::Forget { key });
        }
    }

    fn warm(&self, key: u64, messages: Vec<ChatMessage>, so_far: String) {
        // Only the worker holding the conversation's cells can use it; a
        // conversation no worker has answered yet goes wherever its first
        // question is taken.
        let worker = self.affinity.lock().ok().and_then(|a| a.get(&key).cloned());
        if let Some(w) = worker {
            self.control(
                &w,
                &Control::Warm {
                    key,
                    messages,
                    so_far,
                },
            );
        }
    }

    async fn synthesize(&self, text: String, due: Instant) -> Result<Vec<f32>, String> {
        let t0 = Instant::now();
        let deadline = due.max(t0) + TTS_SLACK;
        let r = self
            .run_once_more(Role::Tts, Job::Tts { text }, &[], deadline, speech)
            .await;
        match r {
            Ok(pcm) => {
                self.metrics.remote.observe(Role::Tts.index(), t0.elapsed());
                Ok(pcm)
            }
            Err(e) => {
                self.failed(Role::Tts, &e);
                Err(e.to_string())
            }
        }
    }

    fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    async fn retrieve(&self, question: String) -> Option<Result<Vec<Hit>, String>> {
        let r = self.local.kb.as_ref()?;
        if r.kb().is_empty() {
            return None;
        }
        Some(r.retrieve(question).await)
    }
}

impl RemoteInference {
    fn remember(&self, key: u64, worker: &str) {
        if let Ok(mut a) = self.affinity.lock() {
            a.insert(key, worker.to_string());
        }
    }

    /// Tell worker `w` something; best effort (a lost message costs a
    /// prefill or some KV cells, never a reply).
    fn control(&self, w: &str, msg: &Control) {
        let client = self.client.clone();
        let subject = self.subjects.control(w);
        let body = super::wire::encode(msg, &[]);
        tokio::spawn(async move {
            let _ = client.publish(subject, body).await;
        });
    }
}

/// One remote reply: forwards its tokens into a [`Generation`].
struct Reply {
    client: async_nats::Client,
    subjects: InferSubjects,
    start_within: Option<Duration>,
    metrics: Arc<Metrics>,
    job: Job,
    deadline: Instant,
    t0: Instant,
    tx: mpsc::UnboundedSender<LlmEvent>,
    cancel: Arc<AtomicBool>,
    _pending: PendingGuard,
}

impl Reply {
    async fn forward(self, mut s: Stream) {
        let mut text = String::new();
        let mut tokens = 0usize;
        let mut retried = false;
        let mut poll = tokio::time::interval(CANCEL_POLL);
        let finish = loop {
            let next = tokio::select! {
                r = s.next() => r,
                // Barge-in: dropping the stream cancels the job on the worker.
                _ = self.tx.closed() => break Finish::Cancelled,
                _ = poll.tick() => {
                    if self.cancel.load(Ordering::SeqCst) {
                        break Finish::Cancelled;
                    }
                    continue;
                }
            };
            match next {
                Ok((Part::Token { text: t }, _)) => {
                    if tokens == 0 {
                        self.metrics
                            .remote
                            .observe(Role::Llm.index(), self.t0.elapsed());
                    }
                    tokens += 1;
                    text.push_str(&t);
                    let _ = self.tx.send(LlmEvent::Token(t));
                }
                Ok((Part::Done { summary }, _)) => {
                    break summary.map_or(Finish::Stop, |s| s.finish());
                }
                Ok((other, _)) => break Finish::Error(format!("unexpected {other:?}")),
                // Before the first token another worker may still answer in time.
                Err(CallError::Lost)
                    if tokens == 0 && !retried && Instant::now() < self.deadline =>
                {
                    retried = true;
                    tracing::warn!("LLM worker lost before the first token; asking another");
                    self.metrics.remote.failure(Role::Llm.index(), "retried");
                    let ask = Ask {
                        start_within: self.start_within,
                        ..Ask::by(self.deadline)
                    };
                    match call::start(&self.client, &self.subjects, self.job.clone(), &[], ask)
                        .await
                    {
                        Ok(again) => s = again,
                        Err(e) => {
                            self.metrics.remote.failure(Role::Llm.index(), e.kind());
                            break Finish::Error(e.to_string());
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, tokens, "remote reply ended early");
                    self.metrics.remote.failure(Role::Llm.index(), e.kind());
                    break Finish::Error(e.to_string());
                }
            }
        };
        let _ = self.tx.send(LlmEvent::Done(Completion {
            text,
            finish,
            prompt_tokens: 0,
            reused_tokens: 0,
            generated: tokens,
            first_token: None,
            elapsed: self.t0.elapsed(),
        }));
    }
}
