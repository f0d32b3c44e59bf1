//! The script runner: steps, the harness that feeds a conversation and
//! remembers what it asked for, and named predicates on actions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::super::*;
use crate::config::TurnConfig;
use crate::events::BusyReason;

pub(super) const WINDOW: Duration = Duration::from_millis(32);
pub(super) const SAMPLES: usize = 512;

pub(super) fn settings() -> Settings {
    Settings {
        // The transcripts taken while the user speaks have cases of their
        // own (`turns::the_question_so_far_is_prefilled_while_the_user_speaks`).
        // So do the transcripts started at a lull (`turns::lull_cases`).
        turn: TurnConfig {
            prefill_every_ms: 0,
            lull_ms: 0,
            ..TurnConfig::default()
        },
        system_prompt: "Be brief.".into(),
        busy_line: "One moment.".into(),
        fallback_line: "Sorry, I have no answer to that.".into(),
        chunking: crate::text::ChunkRules {
            min_clause_words: 6,
            first_piece_words: 0,
        },
        max_spoken_words: 25,
        start_deadline: Some(Duration::from_millis(3000)),
        speculative_reply: true,
        prompt_grace: Duration::from_millis(1500),
        max_queued_prompts: 4,
        check_replies: true,
    }
}

pub(super) type Pred = fn(&Action) -> bool;

/// One step of a script.
#[derive(Clone)]
pub(super) enum Step {
    /// `n` windows of speech / of silence.
    Speak(usize),
    Quiet(usize),
    /// Smart Turn answers the last pause.
    Predict(bool),
    /// The ASR job the conversation asked for last answers.
    Asr(&'static str),
    AsrFails(Failure),
    Token(&'static str),
    /// The knowledge base gave the last LLM reply this document's chunk 0.
    Retrieved(&'static str),
    /// Like `Retrieved`, with the words the LLM was given (notes and
    /// question): the reply's numbers and names are checked against them.
    Grounded(&'static str, &'static str),
    LlmDone,
    LlmFails(Failure),
    /// The oldest piece waiting for synthesis comes back with `n` samples
    /// (0: synthesis failed).
    Tts(usize),
    /// The reply playing last has played `n` samples; `idle`: nothing queued.
    Played(usize, bool),
    /// Other sessions' work is queued (or not).
    Others(bool),
    Prompt(&'static str, bool),
    ExpiringPrompt(&'static str, u64),
    Text(&'static str),
    /// Time passes (ms), then a tick.
    Wait(u64),
    Close,
    /// Some action of the last step matches.
    Expect(&'static str, Pred),
    /// No action of the last step matches.
    Never(&'static str, Pred),
    /// The history, as `role: content` lines, matches exactly.
    History(&'static [&'static str]),
    /// Prompt outcomes answered so far, by prompt id.
    Outcome(&'static str, Option<PromptOutcome>),
}

pub(super) use Step::*;

/// Drives one conversation from a script and remembers what it asked for.
pub(super) struct Harness {
    c: Conversation,
    now: Instant,
    last: Vec<Action>,
    pub(super) all: Vec<Action>,
    asr_job: Option<u64>,
    pause: u64,
    llm_reply: u64,
    pending_tts: std::collections::VecDeque<(u64, usize)>,
    tickets: HashMap<u64, &'static str>,
    outcomes: HashMap<&'static str, PromptOutcome>,
}

impl Harness {
    pub(super) fn new() -> Self {
        Self::with(settings())
    }

    pub(super) fn with(settings: Settings) -> Self {
        let now = Instant::now();
        let c = Conversation::new(settings, now, OffsetDateTime::UNIX_EPOCH);
        Self {
            c,
            now,
            last: Vec::new(),
            all: Vec::new(),
            asr_job: None,
            pause: 0,
            llm_reply: 0,
            pending_tts: Default::default(),
            tickets: HashMap::new(),
            outcomes: HashMap::new(),
        }
    }

    fn feed(&mut self, input: Input) {
        let actions = self.c.handle(input, self.now);
        self.record(actions);
    }

    fn record(&mut self, actions: Vec<Action>) {
        for a in &actions {
            match a {
                Action::StartAsr { job, .. } => self.asr_job = Some(*job),
                Action::PredictTurn { pause, .. } => self.pause = *pause,
                Action::StartLlm { reply, .. } => self.llm_reply = *reply,
                Action::Synthesize { reply, piece, .. } => {
                    self.pending_tts.push_back((*reply, *piece))
                }
                Action::CancelSynthesis { reply } => self.pending_tts.retain(|(r, _)| r != reply),
                Action::AnswerPrompt { ticket, outcome } => {
                    let id = self.tickets[ticket];
                    assert!(
                        self.outcomes.insert(id, outcome.clone()).is_none(),
                        "prompt {id} answered twice"
                    );
                }
                _ => {}
            }
        }
        self.last.extend(actions.iter().cloned());
        self.all.extend(actions);
    }

    fn windows(&mut self, n: usize, prob: f32) {
        for _ in 0..n {
            self.now += WINDOW;
            self.feed(Input::Window {
                pcm: vec![0.1; SAMPLES],
                prob,
            });
        }
    }

    fn prompt(&mut self, id: &'static str, interrupt: bool, expires_in: Option<u64>) {
        let ticket = self.tickets.len() as u64 + 100;
        self.tickets.insert(ticket, id);
        let mut p =
            crate::prompt::Prompt::new(format!("Would you like to hear about {id}? It is new."));
        p.id = id.into();
        p.interrupt = interrupt;
        // The conversation's wall clock started at the epoch.
        p.expires_at = expires_in
            .map(|ms| OffsetDateTime::UNIX_EPOCH + self.since_start() + Duration::from_millis(ms));
        self.feed(Input::Prompt { prompt: p, ticket });
    }

    /// How long until the conversation wants a tick.
    pub(super) fn wake_in(&self) -> Option<Duration> {
        self.c
            .poll_timeout()
            .map(|t| t.saturating_duration_since(self.now))
    }

    fn since_start(&self) -> Duration {
        self.now.saturating_duration_since(self.c.start.0)
    }

    pub(super) fn run(&mut self, name: &str, script: &[Step]) {
        for (i, step) in script.iter().enumerate() {
            let at = format!("{name}, step {i}");
            match step.clone() {
                Expect(what, p) => assert!(
                    self.last.iter().any(p),
                    "{at}: expected {what} in {:#?}",
                    self.last
                ),
                Never(what, p) => assert!(
                    !self.last.iter().any(p),
                    "{at}: unexpected {what} in {:#?}",
                    self.last
                ),
                History(want) => {
                    let got: Vec<String> = self.c.history()[1..]
                        .iter()
                        .map(|m| format!("{:?}: {}", m.role, m.content).to_lowercase())
                        .collect();
                    assert_eq!(got, want, "{at}: history");
                }
                Outcome(id, want) => {
                    assert_eq!(
                        self.outcomes.get(id).cloned(),
                        want,
                        "{at}: outcome of {id}"
                    )
                }
                step => {
                    self.last.clear();
                    self.step(step);
                }
            }
        }
    }

    fn step(&mut self, step: Step) {
        match step {
            Speak(n) => self.windows(n, 0.9),
            Quiet(n) => self.windows(n, 0.0),
            Predict(complete) => self.feed(Input::TurnPredicted {
                pause: self.pause,
                complete,
            }),
            Asr(text) => self.asr(Ok(Heard {
                text: text.into(),
                decode: Duration::from_millis(120),
            })),
            AsrFails(f) => self.asr(Err(f)),
            Token(text) => self.feed(Input::LlmToken {
                reply: self.llm_reply,
                text: text.into(),
            }),
            Retrieved(doc) => self.feed(Input::Retrieved {
                reply: self.llm_reply,
                sources: vec![crate::events::Source {
                    doc: doc.into(),
                    chunk: 0,
                }],
                kb: Duration::from_millis(14),
                vocabulary: None,
            }),
            Grounded(doc, given) => self.feed(Input::Retrieved {
                reply: self.llm_reply,
                sources: vec![crate::events::Source {
                    doc: doc.into(),
                    chunk: 0,
                }],
                kb: Duration::from_millis(14),
                vocabulary: Some(std::sync::Arc::new(crate::kb::support::Vocabulary::of(
                    given,
                ))),
            }),
            LlmDone => self.feed(Input::LlmDone {
                reply: self.llm_reply,
            }),
            LlmFails(failure) => self.feed(Input::LlmFailed {
                reply: self.llm_reply,
                failure,
            }),
            Tts(n) => {
                let (reply, piece) = self
                    .pending_tts
                    .pop_front()
                    .expect("no piece to synthesize");
                let pcm = (n > 0).then(|| vec![0.2; n]);
                self.feed(Input::Synthesized { reply, piece, pcm });
            }
            Played(played, idle) => {
                let reply = self.all.iter().rev().find_map(|a| match a {
                    Action::Play { reply, .. } | Action::PlayBusyLine { reply } => Some(*reply),
                    _ => None,
                });
                self.feed(Input::Playout(Playout {
                    reply: reply.unwrap_or(0),
                    played,
                    idle,
                }));
            }
            Others(others_waiting) => self.feed(Input::Load { others_waiting }),
            Prompt(id, interrupt) => self.prompt(id, interrupt, None),
            ExpiringPrompt(id, ms) => self.prompt(id, false, Some(ms)),
            Text(t) => self.feed(Input::Text(t.into())),
            Wait(ms) => {
                self.now += Duration::from_millis(ms);
                self.feed(Input::Tick);
            }
            Close => {
                let actions = self.c.close();
                self.record(actions);
            }
            Expect(..) | Never(..) | History(..) | Outcome(..) => unreachable!(),
        }
    }

    fn asr(&mut self, result: Result<Heard, Failure>) {
        let job = self.asr_job.expect("no ASR job started");
        self.feed(Input::Transcript { job, result });
    }
}

// Predicates on actions, named for the failure messages.
pub(super) fn state(s: State) -> impl Fn(&Action) -> bool {
    move |a| matches!(a, Action::Emit(Event::State { state, .. }) if *state == s)
}
pub(super) fn is_flush(a: &Action) -> bool {
    matches!(a, Action::Flush)
}
pub(super) fn is_hold(a: &Action) -> bool {
    matches!(a, Action::Hold(true))
}
pub(super) fn is_release(a: &Action) -> bool {
    matches!(a, Action::Hold(false))
}
pub(super) fn counts_hold_resumed(a: &Action) -> bool {
    matches!(a, Action::Count(Count::HoldResumed))
}
pub(super) fn is_barge_in(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::BargeIn { .. }))
}
pub(super) fn is_cut(a: &Action) -> bool {
    matches!(
        a,
        Action::Emit(Event::Reply {
            interrupted: true,
            ..
        })
    )
}
pub(super) fn is_reply(a: &Action) -> bool {
    matches!(
        a,
        Action::Emit(Event::Reply {
            interrupted: false,
            ..
        })
    )
}
pub(super) fn is_reply_delta(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::ReplyDelta { .. }))
}
pub(super) fn is_transcript(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::Transcript { .. }))
}
pub(super) fn is_transcript_of_turn_1(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::Transcript { turn: 1, .. }))
}
pub(super) fn is_start_asr(a: &Action) -> bool {
    matches!(a, Action::StartAsr { .. })
}
pub(super) fn is_cancel_asr(a: &Action) -> bool {
    matches!(a, Action::CancelAsr { .. })
}
pub(super) fn is_start_llm(a: &Action) -> bool {
    matches!(a, Action::StartLlm { .. })
}
/// The LLM may prefill the system prompt alone (a new conversation).
pub(super) fn warms_the_system_prompt(a: &Action) -> bool {
    matches!(a, Action::WarmLlm { messages, so_far } if messages.len() == 1 && messages[0].role == Role::System && so_far.is_empty())
}
/// The LLM may prefill a history that ends with the assistant's reply.
pub(super) fn warms_after_a_reply(a: &Action) -> bool {
    matches!(a, Action::WarmLlm { messages, so_far } if messages.last().is_some_and(|m| m.role == Role::Assistant) && so_far.is_empty())
}
/// ... with a reply cut off where the user stopped hearing it.
pub(super) fn warms_after_a_cut_reply(a: &Action) -> bool {
    matches!(a, Action::WarmLlm { messages, .. } if messages.last().is_some_and(|m| m.role == Role::Assistant && m.content.ends_with('…')))
}
pub(super) fn is_warm(a: &Action) -> bool {
    matches!(a, Action::WarmLlm { .. })
}
/// The LLM may prefill the question heard so far.
pub(super) fn warms_the_question_so_far(a: &Action) -> bool {
    matches!(a, Action::WarmLlm { so_far, .. } if !so_far.is_empty())
}
pub(super) fn is_cancel_llm(a: &Action) -> bool {
    matches!(a, Action::CancelLlm { .. })
}
pub(super) fn is_synthesize(a: &Action) -> bool {
    matches!(a, Action::Synthesize { .. })
}
pub(super) fn is_cancel_tts(a: &Action) -> bool {
    matches!(a, Action::CancelSynthesis { .. })
}
pub(super) fn is_play(a: &Action) -> bool {
    matches!(a, Action::Play { .. })
}
pub(super) fn is_prompt_event(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::Prompt { .. }))
}
pub(super) fn is_busy_deadline(a: &Action) -> bool {
    matches!(
        a,
        Action::Emit(Event::Busy {
            reason: BusyReason::Deadline,
            ..
        })
    )
}
pub(super) fn is_busy_queue(a: &Action) -> bool {
    matches!(
        a,
        Action::Emit(Event::Busy {
            reason: BusyReason::QueueFull,
            ..
        })
    )
}
pub(super) fn is_busy_line(a: &Action) -> bool {
    matches!(a, Action::PlayBusyLine { .. })
}
pub(super) fn is_timings(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::Timings(t)) if t.total_ms.is_some() && t.llm_first_token_ms.is_some())
}
pub(super) fn is_listening(a: &Action) -> bool {
    state(State::Listening)(a)
}
pub(super) fn is_speaking(a: &Action) -> bool {
    state(State::Speaking)(a)
}
pub(super) fn is_thinking(a: &Action) -> bool {
    state(State::Thinking)(a)
}
pub(super) fn is_user_speaking(a: &Action) -> bool {
    state(State::UserSpeaking)(a)
}
pub(super) fn is_predict(a: &Action) -> bool {
    matches!(a, Action::PredictTurn { .. })
}
pub(super) fn is_cancel_predict(a: &Action) -> bool {
    matches!(a, Action::CancelTurnPrediction)
}
pub(super) fn counts_barge_in(a: &Action) -> bool {
    matches!(a, Action::Count(Count::BargeIn))
}
pub(super) fn counts_turn_continued(a: &Action) -> bool {
    matches!(a, Action::Count(Count::TurnContinued))
}
pub(super) fn is_typed(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::Transcript { typed: true, .. }))
}
pub(super) fn is_error(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::Error { .. }))
}
pub(super) fn is_reply_with_sources(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::Reply { sources, .. }) if !sources.is_empty())
}
pub(super) fn is_early_first_piece(a: &Action) -> bool {
    matches!(a, Action::Synthesize { text, .. } if text == "You can call us")
}
pub(super) fn is_dont_know(a: &Action) -> bool {
    matches!(a, Action::Synthesize { text, .. } if text == crate::kb::support::DONT_KNOW)
}
pub(super) fn counts_unsupported(a: &Action) -> bool {
    matches!(a, Action::Count(Count::Unsupported))
}
pub(super) fn is_timings_with_kb(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::Timings(t)) if t.kb_ms == Some(14))
}
