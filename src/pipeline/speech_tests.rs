//! The shell with fake engines behind [`Inference`]: that what the
//! conversation decides really happens to the playout queue, the LLM
//! generation and the events, in real (tokio) time, without models.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::Config;
use crate::events::{BusyReason, State};
use crate::pipeline::conversation::{Failure, Heard};
use crate::pipeline::llm::{ChatMessage, Completion, Finish, Generation, LlmEvent};

/// Speech is loud, silence is zero: the fake VAD tells them apart by level.
struct Fake {
    tokens: Vec<String>,
    token_gap: Duration,
    llm_busy: bool,
    generations: Mutex<Vec<Arc<AtomicBool>>>,
    prompts_seen: Mutex<Vec<Vec<ChatMessage>>>,
    /// Windows the VAD was asked about.
    scored: std::sync::atomic::AtomicUsize,
}

impl Fake {
    fn new(reply: &str, token_gap: Duration) -> Self {
        Self {
            tokens: reply.split_inclusive(' ').map(String::from).collect(),
            token_gap,
            llm_busy: false,
            generations: Mutex::new(Vec::new()),
            prompts_seen: Mutex::new(Vec::new()),
            scored: Default::default(),
        }
    }
}

#[async_trait::async_trait]
impl Inference for Fake {
    async fn vad(
        &self,
        state: VadState,
        windows: Vec<Vec<f32>>,
    ) -> Result<(Vec<f32>, VadState), String> {
        self.scored.fetch_add(windows.len(), Ordering::SeqCst);
        let probs = windows
            .iter()
            .map(|w| {
                if w.iter().any(|x| x.abs() > 0.05) {
                    0.95
                } else {
                    0.0
                }
            })
            .collect();
        Ok((probs, state))
    }

    async fn turn_complete(&self, _audio: Vec<f32>) -> Result<bool, String> {
        Ok(true)
    }

    async fn transcribe(&self, audio: Vec<f32>, _alive: Arc<()>) -> Result<Heard, Failure> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        Ok(Heard {
            text: format!("question of {} ms", audio.len() / 16),
            decode: Duration::from_millis(30),
        })
    }

    async fn generate(&self, _key: u64, messages: Vec<ChatMessage>) -> Result<Generation, Failure> {
        if self.llm_busy {
            return Err(Failure::Busy);
        }
        self.prompts_seen.lock().unwrap().push(messages);
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        self.generations.lock().unwrap().push(stop.clone());
        let (tokens, gap) = (self.tokens.clone(), self.token_gap);
        tokio::spawn(async move {
            let mut text = String::new();
            for t in tokens {
                tokio::time::sleep(gap).await;
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                text.push_str(&t);
                let _ = tx.send(LlmEvent::Token(t));
            }
            let _ = tx.send(LlmEvent::Done(Completion {
                text,
                finish: Finish::Stop,
                prompt_tokens: 0,
                reused_tokens: 0,
                generated: 0,
                first_token: None,
                elapsed: Duration::ZERO,
            }));
        });
        Ok(Generation::new(
            rx,
            self.generations.lock().unwrap().last().unwrap().clone(),
        ))
    }

    fn forget(&self, _key: u64) {}

    fn pending(&self) -> usize {
        0
    }

    async fn synthesize(&self, text: String, _due: Instant) -> Result<Vec<f32>, String> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        // 100 ms of audio per word.
        Ok(vec![0.3; 4800 * text.split_whitespace().count()])
    }
}

struct Session {
    audio: mpsc::Sender<Vec<f32>>,
    events: mpsc::Receiver<Event>,
    out: Arc<Mutex<OutQueue>>,
    played: Arc<std::sync::atomic::AtomicUsize>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
}

/// A session on `fake`, with a 20 ms pacer draining its playout queue.
fn start(fake: Arc<Fake>) -> Session {
    let (audio, input) = mpsc::channel(1024);
    let (_control, control_rx) = mpsc::channel(8);
    let (ev_tx, events) = mpsc::channel(1024);
    let out = Arc::new(Mutex::new(OutQueue::default()));
    let metrics = Arc::new(Metrics::default());
    let deps = SpeechDeps {
        engines: fake,
        config: Arc::new(Config::default()),
        metrics: metrics.clone(),
        busy_line: Arc::new(crate::pipeline::deps::BusyLine::new(vec![0.1; 4800])),
        kb: None,
    };
    let cancel = CancellationToken::new();
    tokio::spawn(run(
        input,
        control_rx,
        out.clone(),
        ev_tx,
        deps,
        cancel.clone(),
    ));
    let played = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (q, p, c) = (out.clone(), played.clone(), cancel.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while !c.is_cancelled() {
            tick.tick().await;
            if q.lock().unwrap().pop_frame().is_some() {
                p.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    Session {
        audio,
        events,
        out,
        played,
        metrics,
        cancel,
    }
}

impl Session {
    /// `ms` of speech (or silence), in real-time 20 ms chunks.
    async fn say(&self, ms: usize, speech: bool) {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0..ms / 20 {
            tick.tick().await;
            let level = if speech {
                0.3 * if i % 2 == 0 { 1.0 } else { -1.0 }
            } else {
                0.0
            };
            let _ = self.audio.send(vec![level; 320]).await;
        }
    }

    async fn played_at_least(&self, frames: usize) {
        for _ in 0..250 {
            if self.played.load(Ordering::SeqCst) >= frames {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "played {} frames, expected {frames}",
            self.played.load(Ordering::SeqCst)
        );
    }

    /// Events until one matches `want` (or the time is up).
    async fn until(&mut self, secs: u64, want: impl Fn(&Event) -> bool) -> Vec<Event> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            let done = want(&ev);
            seen.push(ev);
            if done {
                return seen;
            }
        }
        panic!("no matching event within {secs} s; saw {seen:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoken_turn_is_answered_and_played() {
    let fake = Arc::new(Fake::new(
        "Paris is the capital of France. It is big.",
        Duration::from_millis(5),
    ));
    let mut s = start(fake);
    s.say(600, true).await;
    s.say(1200, false).await;
    let seen = s.until(10, |e| matches!(e, Event::Timings(_))).await;
    let transcript = seen.iter().find_map(|e| match e {
        Event::Transcript { text, .. } => Some(text.clone()),
        _ => None,
    });
    assert!(
        transcript.is_some_and(|t| t.starts_with("question of")),
        "{seen:#?}"
    );
    let reply = seen.iter().find_map(|e| match e {
        Event::Reply {
            text,
            interrupted: false,
            ..
        } => Some(text.clone()),
        _ => None,
    });
    assert_eq!(
        reply.as_deref(),
        Some("Paris is the capital of France. It is big.")
    );
    assert!(seen.iter().any(|e| *e == Event::state(State::Speaking)));
    // 9 words at 100 ms each = 45 frames of 20 ms go out.
    s.played_at_least(45).await;
    assert_eq!(s.metrics.utterances.load(Ordering::SeqCst), 1);
    s.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_under_the_level_floor_skips_the_vad_model() {
    let fake = Arc::new(Fake::new("Yes.", Duration::from_millis(5)));
    let mut s = start(fake.clone());
    s.say(1000, false).await;
    let skipped = s.metrics.vad_windows_skipped.load(Ordering::SeqCst);
    assert_eq!(fake.scored.load(Ordering::SeqCst), 0, "silence was scored");
    // 1 s is 31 windows of 32 ms; the last may still be filling.
    assert!(skipped >= 29, "skipped {skipped} windows of 1 s of silence");
    // Speech is still scored, and the turn still ends and is answered.
    s.say(600, true).await;
    s.say(1200, false).await;
    s.until(10, |e| matches!(e, Event::Reply { .. })).await;
    let scored = fake.scored.load(Ordering::SeqCst);
    assert!(
        (17..=22).contains(&scored),
        "600 ms of speech is 18-19 windows; scored {scored}"
    );
    s.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_flushes_playout_and_cancels_the_llm() {
    // A long, slow reply: still generating when the user speaks again.
    // Distinct sentences: a repeated one would end the reply as a loop.
    let long: String = (0..20)
        .map(|i| format!("This is part {i} of a long answer that goes on. "))
        .collect();
    let fake = Arc::new(Fake::new(&long, Duration::from_millis(40)));
    let mut s = start(fake.clone());
    s.say(600, true).await;
    s.say(1200, false).await;
    s.until(10, |e| *e == Event::state(State::Speaking)).await;
    // Past `turn.barge_in_ms` (400).
    s.say(600, true).await;
    let seen = s.until(10, |e| matches!(e, Event::BargeIn { .. })).await;
    assert!(!seen.iter().any(|e| matches!(
        e,
        Event::Reply {
            interrupted: false,
            ..
        }
    )));
    assert!(
        s.out.lock().unwrap().is_empty(),
        "playout not flushed at the barge-in"
    );
    let cut = s
        .until(5, |e| {
            matches!(
                e,
                Event::Reply {
                    interrupted: true,
                    ..
                }
            )
        })
        .await;
    let Some(Event::Reply { text: heard, .. }) = cut.last() else {
        unreachable!()
    };
    assert!(
        long.starts_with(heard.as_str()),
        "heard {heard:?} is not a prefix of the reply"
    );
    let stopped = fake.generations.lock().unwrap()[0].load(Ordering::SeqCst);
    assert!(stopped, "the LLM generation was not cancelled");
    assert_eq!(s.metrics.barge_ins.load(Ordering::SeqCst), 1);
    s.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_llm_queue_plays_the_busy_line() {
    let mut fake = Fake::new("unused", Duration::from_millis(5));
    fake.llm_busy = true;
    let mut s = start(Arc::new(fake));
    s.say(600, true).await;
    s.say(1200, false).await;
    let seen = s.until(10, |e| matches!(e, Event::Busy { .. })).await;
    assert!(matches!(
        seen.last(),
        Some(Event::Busy {
            reason: BusyReason::QueueFull,
            ..
        })
    ));
    // The busy line is 100 ms: 5 frames.
    s.played_at_least(5).await;
    assert_eq!(s.metrics.busy_replies.load(Ordering::SeqCst), 1);
    s.cancel.cancel();
}
