//! One remote job from the server's side: find a worker that takes it,
//! then read its numbered result stream, noticing a worker that went
//! silent ([`DEAD_AFTER`]) and cancelling the job if the reader gives up.

use std::time::{Duration, Instant};

use async_nats::client::RequestErrorKind;
use futures::StreamExt;

use super::wire::{self, Accepted, Chunk, Control, Job, Part, Refusal, Request};
use super::{DEAD_AFTER, InferSubjects};

/// How long a worker may take to say whether it takes a request. It
/// answers before doing any work, so this is network time only.
const ACCEPT_TIMEOUT: Duration = Duration::from_millis(500);
/// Workers asked in turn when each says busy.
const BUSY_ATTEMPTS: usize = 3;

/// Why a remote job did not give its result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("no worker serves {0}")]
    NoWorkers(&'static str),
    #[error("every worker asked was busy")]
    Busy,
    #[error("the worker went silent (no heartbeat for {} ms)", DEAD_AFTER.as_millis())]
    Lost,
    #[error("the budget was spent before a worker could do it")]
    Expired,
    #[error("the worker failed: {0}")]
    Failed(String),
    #[error("NATS: {0}")]
    Nats(String),
}

impl CallError {
    /// The `kind` label of `voxloop_remote_failures_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::NoWorkers(_) => "no_workers",
            CallError::Busy => "busy",
            CallError::Lost => "lost",
            CallError::Expired => "expired",
            CallError::Failed(_) | CallError::Nats(_) => "failed",
        }
    }
}

/// A job a worker accepted: its results, in order.
pub struct Stream {
    sub: async_nats::Subscriber,
    next_seq: u32,
    pub worker: String,
    job: u64,
    client: async_nats::Client,
    control: String,
    finished: bool,
    /// When the worker was last heard from: a deadline, not a timeout per
    /// call, so a caller that polls `next` in a `select!` loop still
    /// notices the silence.
    heard: Instant,
}

impl Stream {
    /// The next result (heartbeats are read and skipped). Cancel-safe.
    pub async fn next(&mut self) -> Result<(Part, Vec<f32>), CallError> {
        loop {
            let msg = tokio::time::timeout_at((self.heard + DEAD_AFTER).into(), self.sub.next())
                .await
                .map_err(|_| CallError::Lost)?
                .ok_or(CallError::Lost)?;
            self.heard = Instant::now();
            let (chunk, pcm) = wire::decode::<Chunk>(&msg.payload)
                .map_err(|e| CallError::Failed(format!("unreadable result: {e}")))?;
            if chunk.seq != self.next_seq {
                return Err(CallError::Failed(format!(
                    "result {} lost (got {})",
                    self.next_seq, chunk.seq
                )));
            }
            self.next_seq += 1;
            match chunk.part {
                Part::Heartbeat => continue,
                Part::Failed { message } => {
                    self.finished = true;
                    return Err(CallError::Failed(message));
                }
                Part::Expired => {
                    self.finished = true;
                    return Err(CallError::Expired);
                }
                part => {
                    self.finished |= part.is_last();
                    return Ok((part, pcm));
                }
            }
        }
    }

    /// Ask the worker to stop this job; its stream then ends with a
    /// `cancelled` failure (read on to see when).
    pub async fn cancel(&self) -> Result<(), CallError> {
        let body = wire::encode(&Control::Cancel { job: self.job }, &[]);
        self.client
            .publish(self.control.clone(), body)
            .await
            .map_err(|e| CallError::Nats(e.to_string()))
    }
}

impl Drop for Stream {
    /// A reader that stops before the end (barge-in, hang-up, a lost
    /// worker) cancels the job, so the worker does no more of it.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let client = self.client.clone();
        let subject = self.control.clone();
        let body = wire::encode(&Control::Cancel { job: self.job }, &[]);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client.publish(subject, body).await;
            });
        }
    }
}

/// Where and by when a job should run.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// Not taken by then: `Expired`; the worker stops it there too.
    pub deadline: Instant,
    /// Workers that do not expect to start it this soon say busy.
    pub start_within: Option<Duration>,
    /// The worker to ask first (the one holding the conversation).
    pub prefer: Option<&'a str>,
}

impl Ask<'_> {
    pub fn by(deadline: Instant) -> Self {
        Ask {
            deadline,
            start_within: None,
            prefer: None,
        }
    }
}

/// Start `job` on a worker: on `ask.prefer`'s own subject first, then on
/// the role's queue group, asking again while workers say busy.
pub async fn start(
    client: &async_nats::Client,
    subjects: &InferSubjects,
    job: Job,
    pcm: &[f32],
    ask: Ask<'_>,
) -> Result<Stream, CallError> {
    let Ask {
        deadline,
        start_within,
        prefer,
    } = ask;
    let role = job.role();
    let max = client.server_info().max_payload;
    let mut subjects_to_try: Vec<String> = prefer
        .map(|w| subjects.direct(w, role))
        .into_iter()
        .collect();
    subjects_to_try.extend(std::iter::repeat_n(subjects.role(role), BUSY_ATTEMPTS));
    let mut last = CallError::NoWorkers(role.as_str());
    for subject in subjects_to_try {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CallError::Expired);
        }
        let inbox = client.new_inbox();
        let sub = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| CallError::Nats(e.to_string()))?;
        let request = Request {
            job: job.clone(),
            budget_ms: left.as_millis().max(1) as u64,
            start_within_ms: start_within.map(|d| d.as_millis() as u64),
            stream_to: inbox,
        };
        let body = wire::encode(&request, pcm);
        if max > 0 && body.len() > max {
            return Err(CallError::Failed(format!(
                "request of {} bytes over the NATS limit of {max}",
                body.len()
            )));
        }
        let answer = tokio::time::timeout(ACCEPT_TIMEOUT, client.request(subject, body)).await;
        let msg = match answer {
            Err(_) => {
                last = CallError::Lost;
                continue;
            }
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {
                last = CallError::NoWorkers(role.as_str());
                continue;
            }
            Ok(Err(e)) => {
                last = CallError::Nats(e.to_string());
                continue;
            }
            Ok(Ok(m)) => m,
        };
        if let Some(code) = refusal(&msg) {
            last = match Refusal::from_code(code) {
                Refusal::Busy | Refusal::Unavailable => CallError::Busy,
                Refusal::Expired => return Err(CallError::Expired),
                Refusal::Invalid => return Err(CallError::Failed(error_text(&msg))),
            };
            continue;
        }
        let (accepted, _) = wire::decode::<Accepted>(&msg.payload)
            .map_err(|e| CallError::Failed(format!("unreadable answer: {e}")))?;
        return Ok(Stream {
            sub,
            next_seq: 0,
            control: subjects.control(&accepted.worker),
            worker: accepted.worker,
            job: accepted.job,
            client: client.clone(),
            finished: false,
            heard: Instant::now(),
        });
    }
    Err(last)
}

/// The NATS service error code of an answer, if it is a refusal.
fn refusal(msg: &async_nats::Message) -> Option<usize> {
    let h = msg.headers.as_ref()?;
    h.get(async_nats::service::NATS_SERVICE_ERROR_CODE)?
        .as_str()
        .parse()
        .ok()
}

fn error_text(msg: &async_nats::Message) -> String {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR))
        .map(|v| v.as_str().to_string())
        .unwrap_or_else(|| "refused".into())
}
