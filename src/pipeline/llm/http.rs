//! An OpenAI-compatible chat-completions backend (Ollama, llama.cpp's
//! server, vLLM, ...): the same streamed [`Generation`] as the embedded
//! engine, over HTTP with server-sent events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;

use super::chat::{ChatMessage, Completion, Finish, Generation, LlmEvent};
use crate::pipeline::pool::Busy;

/// Settings for an OpenAI-compatible server.
#[derive(Debug, Clone)]
pub struct HttpLlmOptions {
    /// Base URL up to `/v1`, e.g. `http://127.0.0.1:11434/v1`.
    pub url: String,
    pub model: String,
    /// Sent as a bearer token when set.
    pub api_key: Option<String>,
    /// Requests in flight at once; more wait in the queue.
    pub concurrency: usize,
    pub queue: usize,
    pub max_tokens: usize,
    pub temperature: f32,
    pub timeout: Duration,
}

pub struct HttpLlm {
    client: reqwest::Client,
    opts: HttpLlmOptions,
    permits: Arc<tokio::sync::Semaphore>,
    pending: Arc<AtomicUsize>,
}

impl HttpLlm {
    pub fn new(opts: HttpLlmOptions) -> Self {
        Self {
            client: reqwest::Client::new(),
            permits: Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1))),
            pending: Arc::new(AtomicUsize::new(0)),
            opts,
        }
    }

    /// Start a streamed reply. Fails at once with [`Busy`] when the queue is full.
    pub fn generate(
        &self,
        messages: Vec<ChatMessage>,
        max_tokens: Option<usize>,
    ) -> Result<Generation, Busy> {
        let capacity = self.opts.concurrency.max(1) + self.opts.queue;
        if self.pending.fetch_add(1, Ordering::SeqCst) >= capacity {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy("llm"));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let body = json!({
            "model": self.opts.model,
            "messages": messages,
            "stream": true,
            "max_tokens": max_tokens.unwrap_or(self.opts.max_tokens),
            "temperature": self.opts.temperature,
        });
        let mut req = self
            .client
            .post(format!(
                "{}/chat/completions",
                self.opts.url.trim_end_matches('/')
            ))
            .header("content-type", "application/json")
            .timeout(self.opts.timeout)
            .body(body.to_string());
        if let Some(key) = &self.opts.api_key {
            req = req.bearer_auth(key);
        }
        let permits = self.permits.clone();
        let pending = self.pending.clone();
        let c = cancel.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let _permit = permits.acquire_owned().await;
            let (text, finish, generated, first) = stream(req, &tx, &c, started).await;
            pending.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(LlmEvent::Done(Completion {
                text,
                finish,
                prompt_tokens: 0,
                reused_tokens: 0,
                generated,
                first_token: first,
                elapsed: started.elapsed(),
            }));
        });
        Ok(Generation::new(rx, cancel))
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

async fn stream(
    req: reqwest::RequestBuilder,
    tx: &mpsc::UnboundedSender<LlmEvent>,
    cancel: &AtomicBool,
    started: Instant,
) -> (String, Finish, usize, Option<Duration>) {
    let mut text = String::new();
    let mut generated = 0;
    let mut first = None;
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return (text, Finish::Error(format!("LLM server: {e}")), 0, None),
    };
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.chars().take(200).collect();
        return (
            text,
            Finish::Error(format!("LLM server answered {status}: {body}")),
            0,
            None,
        );
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut finish = Finish::Stop;
    'read: loop {
        if cancel.load(Ordering::SeqCst) {
            finish = Finish::Cancelled;
            break;
        }
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                finish = Finish::Error(format!("LLM stream: {e}"));
                break;
            }
        };
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                break 'read;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            let choice = &v["choices"][0];
            if let Some(piece) = choice["delta"]["content"].as_str()
                && !piece.is_empty()
            {
                if cancel.load(Ordering::SeqCst) {
                    finish = Finish::Cancelled;
                    break 'read;
                }
                first.get_or_insert(started.elapsed());
                generated += 1;
                text.push_str(piece);
                let _ = tx.send(LlmEvent::Token(piece.to_string()));
            }
            if choice["finish_reason"].as_str() == Some("length") {
                finish = Finish::Length;
            }
        }
    }
    (text, finish, generated, first)
}
