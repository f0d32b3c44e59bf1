//! The llama.cpp engine thread: one model and one context serving every
//! conversation with continuous batching, KV prefix reuse, streaming and
//! cancellation (see [`super`]).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

mod kv;

use super::chat::{ChatMessage, Completion, Finish, LlmEvent, Role};
use super::llama::{Cmd, LlmOptions, Request};
use super::utf8::Utf8Stream;

struct Active {
    req: Request,
    sampler: LlamaSampler,
    /// Sampled, not yet decoded.
    next: Option<LlamaToken>,
    pos: i32,
    utf8: Utf8Stream,
    text: String,
    generated: usize,
    first_token: Option<Duration>,
    prompt_tokens: usize,
    reused: usize,
}

#[derive(Default)]
struct Slot {
    key: Option<u64>,
    /// Tokens whose KV cells this sequence holds, in order.
    cached: Vec<LlamaToken>,
    active: Option<Active>,
    last_used: u64,
}

/// The context is rebuilt for a new thread count at most this often, so a
/// load that comes and goes does not cost a system-prompt prefill each time.
const REBUILD_EVERY: Duration = Duration::from_secs(5);

pub(super) struct Engine {
    backend: &'static LlamaBackend,
    model: &'static LlamaModel,
    ctx: LlamaContext<'static>,
    /// Threads `ctx` was made with (see [`crate::pipeline::cpu_share`]).
    threads: i32,
    rebuilt: Instant,
    template: LlamaChatTemplate,
    slots: Vec<Slot>,
    waiting: VecDeque<Request>,
    /// Conversations whose next prompt to prefill while nothing waits
    /// (see [`kv`]): their key, history and question so far.
    warm: VecDeque<(u64, Vec<ChatMessage>, String)>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    opts: LlmOptions,
    clock: u64,
}

impl Engine {
    pub(super) fn new(
        backend: &'static LlamaBackend,
        model: &'static LlamaModel,
        opts: &LlmOptions,
    ) -> Result<Self, String> {
        let slots = opts.slots.max(1);
        let threads = crate::pipeline::cpu_share::threads(opts.threads);
        let ctx = context(backend, model, opts, threads)?;
        let template = model
            .chat_template(None)
            .or_else(|_| LlamaChatTemplate::new("chatml"))
            .map_err(|e| format!("no chat template: {e}"))?;
        Ok(Self {
            backend,
            model,
            ctx,
            threads,
            rebuilt: Instant::now(),
            template,
            slots: (0..slots).map(|_| Slot::default()).collect(),
            waiting: VecDeque::new(),
            warm: VecDeque::new(),
            batch: LlamaBatch::new(N_BATCH as usize, 1),
            n_batch: N_BATCH as usize,
            opts: opts.clone(),
            clock: 0,
        })
    }

    /// llama.cpp fixes a context's thread count when it is made, so when
    /// other programs take or give back cores the context is made again,
    /// between replies only (nothing is decoding), and not more often than
    /// `REBUILD_EVERY`. The cached prompts go with it: the next reply
    /// prefills its system prompt again.
    fn follow_load(&mut self) {
        let busy = self.slots.iter().any(|s| s.active.is_some());
        if busy || self.waiting.is_empty() || self.rebuilt.elapsed() < REBUILD_EVERY {
            return;
        }
        let want = crate::pipeline::cpu_share::threads(self.opts.threads);
        if want == self.threads {
            return;
        }
        match context(self.backend, self.model, &self.opts, want) {
            Ok(ctx) => {
                tracing::info!(
                    from = self.threads,
                    to = want,
                    others = format!("{:.2}", crate::pipeline::cpu_share::others()),
                    "LLM threads follow the cores other programs leave free"
                );
                self.ctx = ctx;
                self.threads = want;
                for s in &mut self.slots {
                    s.cached.clear();
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot remake the LLM context; keeping it"),
        }
        self.rebuilt = Instant::now();
    }

    pub(super) fn run(&mut self, rx: Receiver<Cmd>, pending: &AtomicUsize, warmed: &AtomicUsize) {
        loop {
            let busy = self.slots.iter().any(|s| s.active.is_some())
                || !self.waiting.is_empty()
                || !self.warm.is_empty();
            // Block only when there is nothing to do.
            let first = if busy {
                match rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return,
                }
            } else {
                match rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => return,
                }
            };
            let mut cmds: Vec<Cmd> = first.into_iter().collect();
            while let Ok(c) = rx.try_recv() {
                cmds.push(c);
            }
            for c in cmds {
                match c {
                    Cmd::Generate(r) => {
                        // The prompt itself is here: no need to prepare it.
                        self.warm.retain(|(k, ..)| *k != r.key);
                        self.waiting.push_back(r);
                    }
                    Cmd::Forget(key) => {
                        self.warm.retain(|(k, ..)| *k != key);
                        self.forget(key);
                    }
                    Cmd::Warm {
                        key,
                        messages,
                        so_far,
                    } => {
                        self.warm.retain(|(k, ..)| *k != key);
                        self.warm.push_back((key, messages, so_far));
                    }
                }
            }
            self.follow_load();
            self.admit(pending);
            self.step(pending);
            self.warm_one(warmed);
        }
    }

    /// Prefill one conversation's next prompt, only when no request waits:
    /// a warm-up must never delay a reply that could start.
    fn warm_one(&mut self, warmed: &AtomicUsize) {
        if !self.waiting.is_empty() {
            return;
        }
        let Some((key, messages, so_far)) = self.warm.pop_front() else {
            return;
        };
        let started = Instant::now();
        match self.warm(key, &messages, &so_far) {
            kv::Warmed::Tokens(n) => {
                warmed.fetch_add(n, Ordering::Relaxed);
                tracing::debug!(
                    key,
                    tokens = n,
                    ms = started.elapsed().as_millis() as u64,
                    "LLM warmed"
                );
            }
            kv::Warmed::Later => self.warm.push_back((key, messages, so_far)),
        }
    }

    /// Free the conversation's slot. Its cells stay: the next conversation
    /// placed there reuses whatever prefix it shares (the system prompt).
    fn forget(&mut self, key: u64) {
        for s in self.slots.iter_mut() {
            if s.key == Some(key) && s.active.is_none() {
                s.key = None;
            }
        }
    }

    /// Give waiting requests a slot: their own, a free one, or the least recently used idle one.
    fn admit(&mut self, pending: &AtomicUsize) {
        while let Some(req) = self.waiting.front() {
            let key = req.key;
            let idle = |s: &Slot| s.active.is_none();
            let choice = self
                .slots
                .iter()
                .position(|s| idle(s) && s.key == Some(key))
                .or_else(|| self.slots.iter().position(|s| idle(s) && s.key.is_none()))
                .or_else(|| {
                    self.slots
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| idle(s))
                        .min_by_key(|(_, s)| s.last_used)
                        .map(|(i, _)| i)
                });
            let Some(i) = choice else { break };
            let Some(req) = self.waiting.pop_front() else {
                break;
            };
            if req.cancel.load(Ordering::SeqCst) {
                end_unstarted(req, Finish::Cancelled, pending);
                continue;
            }
            if let Err(e) = self.start(i, req, pending) {
                tracing::warn!(error = %e, "LLM request failed");
            }
        }
    }

    fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<LlamaToken>, String> {
        let mut msgs: Vec<&ChatMessage> = messages.iter().collect();
        loop {
            let prompt = self.render(&msgs)?;
            let toks = self.model.vocab().tokenize(prompt.as_bytes(), true, true);
            if toks.len() <= self.opts.max_prompt_tokens {
                return Ok(toks);
            }
            // Too long: drop the oldest turn after the system prompt.
            let first_turn = usize::from(msgs.first().is_some_and(|m| m.role == Role::System));
            if msgs.len() <= first_turn + 1 {
                return Err(format!(
                    "prompt of {} tokens is over the {}-token limit",
                    toks.len(),
                    self.opts.max_prompt_tokens
                ));
            }
            msgs.remove(first_turn);
        }
    }

    /// The chat template applied to `msgs`, ending with the assistant's header.
    fn render(&self, msgs: &[&ChatMessage]) -> Result<String, String> {
        let chat: Result<Vec<LlamaChatMessage>, _> = msgs
            .iter()
            .map(|m| LlamaChatMessage::new(m.role.as_str().into(), m.content.clone()))
            .collect();
        let chat = chat.map_err(|e| format!("bad message: {e}"))?;
        self.model
            .apply_chat_template(&self.template, &chat, true)
            .map_err(|e| format!("chat template: {e}"))
    }

    fn start(&mut self, i: usize, req: Request, pending: &AtomicUsize) -> Result<(), String> {
        let toks = match self.prompt_tokens(&req.messages) {
            Ok(t) if !t.is_empty() => t,
            Ok(_) => {
                end_unstarted(req, Finish::Error("empty prompt".into()), pending);
                return Err("empty prompt".into());
            }
            Err(e) => {
                end_unstarted(req, Finish::Error(e.clone()), pending);
                return Err(e);
            }
        };
        self.clock += 1;
        // At least the last token is decoded again: its logits start the reply.
        let keep = self.reuse(i, &toks, toks.len() - 1);
        let slot = &mut self.slots[i];
        slot.key = Some(req.key);
        slot.last_used = self.clock;
        let (pos, last_idx) = match self.prefill(i, &toks, keep, true) {
            Ok(at) => at,
            Err(e) => return self.fail_start(i, req, &e, pending),
        };
        // Penalties first: they reshape the logits the choice is made from.
        // Each sampled token is accepted into the chain by `sample`, so the
        // penalty window follows the reply as it grows.
        let penalties = LlamaSampler::penalties(
            self.model.n_vocab(),
            self.opts.repeat_last_n.max(0),
            self.opts.repeat_penalty,
            0.0,
            0.0,
        );
        let sampler = if self.opts.temperature > 0.0 {
            LlamaSampler::chain_simple([
                penalties,
                LlamaSampler::top_p(0.9, 1),
                LlamaSampler::temp(self.opts.temperature),
                LlamaSampler::dist(rand::random::<u32>()),
            ])
        } else {
            LlamaSampler::chain_simple([penalties, LlamaSampler::greedy()])
        };
        let mut active = Active {
            req,
            sampler,
            next: None,
            pos,
            utf8: Utf8Stream::default(),
            text: String::new(),
            generated: 0,
            first_token: None,
            prompt_tokens: toks.len(),
            reused: keep,
        };
        active.next = Some(active.sampler.sample(&self.ctx, last_idx));
        self.slots[i].active = Some(active);
        Ok(())
    }

    fn fail_start(
        &mut self,
        i: usize,
        req: Request,
        why: &str,
        pending: &AtomicUsize,
    ) -> Result<(), String> {
        self.drop_cells(i);
        end_unstarted(req, Finish::Error(why.into()), pending);
        Err(why.into())
    }

    /// Emit each active sequence's sampled token, then decode them all in one batch.
    fn step(&mut self, pending: &AtomicUsize) {
        self.batch.clear();
        let mut in_batch: Vec<(usize, i32)> = Vec::new();
        let vocab = self.model.vocab();
        for i in 0..self.slots.len() {
            let Some(mut a) = self.slots[i].active.take() else {
                continue;
            };
            let Some(tok) = a.next.take() else {
                continue;
            };
            let finish = if a.req.cancel.load(Ordering::SeqCst) {
                Some(Finish::Cancelled)
            } else if vocab.is_eog(tok) {
                Some(Finish::Stop)
            } else {
                let piece = a.utf8.push(&vocab.token_to_piece(tok, false, None));
                if a.first_token.is_none() {
                    a.first_token = Some(a.req.submitted.elapsed());
                }
                a.generated += 1;
                if !piece.is_empty() {
                    a.text.push_str(&piece);
                    let _ = a.req.events.send(LlmEvent::Token(piece));
                }
                if a.generated >= a.req.max_tokens {
                    Some(Finish::Length)
                } else if self.batch.add(tok, a.pos, &[i as i32], true).is_err() {
                    Some(Finish::Error("batch overflow".into()))
                } else {
                    in_batch.push((i, self.batch.n_tokens() - 1));
                    a.pos += 1;
                    self.slots[i].cached.push(tok);
                    None
                }
            };
            match finish {
                Some(f) => {
                    end_active(a, f, pending);
                }
                None => self.slots[i].active = Some(a),
            }
        }
        if in_batch.is_empty() {
            return;
        }
        let decoded = {
            let _turn = crate::pipeline::gate::bulk().enter();
            self.ctx.decode(&mut self.batch)
        };
        if let Err(e) = decoded {
            let why = format!("decode: {e}");
            for (i, _) in in_batch {
                if let Some(a) = self.slots[i].active.take() {
                    end_active(a, Finish::Error(why.clone()), pending);
                }
                self.drop_cells(i);
            }
            return;
        }
        for (i, idx) in in_batch {
            if let Some(a) = self.slots[i].active.as_mut() {
                a.next = Some(a.sampler.sample(&self.ctx, idx));
            }
        }
    }
}

/// End a request that never generated anything.
fn end_unstarted(req: Request, finish: Finish, pending: &AtomicUsize) {
    finish_request(req, finish, String::new(), 0, 0, 0, None, pending);
}

/// End a running generation with what it has so far.
fn end_active(a: Active, finish: Finish, pending: &AtomicUsize) {
    finish_request(
        a.req,
        finish,
        a.text,
        a.prompt_tokens,
        a.reused,
        a.generated,
        a.first_token,
        pending,
    );
}

#[allow(clippy::too_many_arguments)]
fn finish_request(
    req: Request,
    finish: Finish,
    text: String,
    prompt_tokens: usize,
    reused_tokens: usize,
    generated: usize,
    first_token: Option<Duration>,
    pending: &AtomicUsize,
) {
    pending.fetch_sub(1, Ordering::SeqCst);
    let _ = req.events.send(LlmEvent::Done(Completion {
        text,
        finish,
        prompt_tokens,
        reused_tokens,
        generated,
        first_token,
        elapsed: req.submitted.elapsed(),
    }));
}

const N_BATCH: u32 = 512;

/// A context holding every slot's sequence, computing on `threads` threads.
fn context(
    backend: &'static LlamaBackend,
    model: &'static LlamaModel,
    opts: &LlmOptions,
    threads: i32,
) -> Result<LlamaContext<'static>, String> {
    let slots = opts.slots.max(1);
    let per_seq = (opts.max_prompt_tokens + opts.max_tokens + 64) as u32;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(per_seq * slots))
        .with_n_batch(N_BATCH)
        .with_n_ubatch(N_BATCH)
        .with_n_seq_max(slots)
        .with_kv_unified(true)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    model
        .new_context(backend, params)
        .map_err(|e| format!("cannot create context: {e}"))
}
