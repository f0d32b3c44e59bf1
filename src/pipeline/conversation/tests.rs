//! Table-driven tests of the conversation state machine: each case is a
//! script of inputs (speech, silence, model answers, clock, prompts, typed
//! text) and of checks on the actions the last step returned. No models,
//! no runtime, no clock: a case runs in microseconds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::*;
use crate::events::BusyReason;

const WINDOW: Duration = Duration::from_millis(32);
const SAMPLES: usize = 512;

fn settings() -> Settings {
    Settings {
        turn: TurnConfig::default(),
        system_prompt: "Be brief.".into(),
        busy_line: "One moment.".into(),
        fallback_line: "Sorry, I have no answer to that.".into(),
        min_clause_words: 6,
        max_spoken_words: 25,
        start_deadline: Some(Duration::from_millis(3000)),
        speculative_reply: true,
        prompt_grace: Duration::from_millis(1500),
        max_queued_prompts: 4,
    }
}

type Pred = fn(&Action) -> bool;

/// One step of a script.
#[derive(Clone)]
enum Step {
    /// `n` windows of speech / of silence.
    Speak(usize),
    Quiet(usize),
    /// Smart Turn answers the last pause.
    Predict(bool),
    /// The ASR job the conversation asked for last answers.
    Asr(&'static str),
    AsrFails(Failure),
    Token(&'static str),
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

use Step::*;

/// Drives one conversation from a script and remembers what it asked for.
struct Harness {
    c: Conversation,
    now: Instant,
    last: Vec<Action>,
    all: Vec<Action>,
    asr_job: Option<u64>,
    pause: u64,
    llm_reply: u64,
    pending_tts: std::collections::VecDeque<(u64, usize)>,
    tickets: HashMap<u64, &'static str>,
    outcomes: HashMap<&'static str, PromptOutcome>,
}

impl Harness {
    fn new() -> Self {
        let now = Instant::now();
        let c = Conversation::new(settings(), now, OffsetDateTime::UNIX_EPOCH);
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

    fn since_start(&self) -> Duration {
        self.now.saturating_duration_since(self.c.start.0)
    }

    fn run(&mut self, name: &str, script: &[Step]) {
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
fn state(s: State) -> impl Fn(&Action) -> bool {
    move |a| matches!(a, Action::Emit(Event::State { state, .. }) if *state == s)
}
fn is_flush(a: &Action) -> bool {
    matches!(a, Action::Flush)
}
fn is_barge_in(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::BargeIn { .. }))
}
fn is_cut(a: &Action) -> bool {
    matches!(
        a,
        Action::Emit(Event::Reply {
            interrupted: true,
            ..
        })
    )
}
fn is_reply(a: &Action) -> bool {
    matches!(
        a,
        Action::Emit(Event::Reply {
            interrupted: false,
            ..
        })
    )
}
fn is_reply_delta(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::ReplyDelta { .. }))
}
fn is_transcript(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::Transcript { .. }))
}
fn is_start_asr(a: &Action) -> bool {
    matches!(a, Action::StartAsr { .. })
}
fn is_cancel_asr(a: &Action) -> bool {
    matches!(a, Action::CancelAsr { .. })
}
fn is_start_llm(a: &Action) -> bool {
    matches!(a, Action::StartLlm { .. })
}
fn is_cancel_llm(a: &Action) -> bool {
    matches!(a, Action::CancelLlm { .. })
}
fn is_synthesize(a: &Action) -> bool {
    matches!(a, Action::Synthesize { .. })
}
fn is_cancel_tts(a: &Action) -> bool {
    matches!(a, Action::CancelSynthesis { .. })
}
fn is_play(a: &Action) -> bool {
    matches!(a, Action::Play { .. })
}
fn is_prompt_event(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::Prompt { .. }))
}
fn is_busy_deadline(a: &Action) -> bool {
    matches!(
        a,
        Action::Emit(Event::Busy {
            reason: BusyReason::Deadline,
            ..
        })
    )
}
fn is_busy_queue(a: &Action) -> bool {
    matches!(
        a,
        Action::Emit(Event::Busy {
            reason: BusyReason::QueueFull,
            ..
        })
    )
}
fn is_busy_line(a: &Action) -> bool {
    matches!(a, Action::PlayBusyLine { .. })
}
fn is_timings(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::Timings(t)) if t.total_ms.is_some() && t.llm_first_token_ms.is_some())
}
fn is_listening(a: &Action) -> bool {
    state(State::Listening)(a)
}
fn is_speaking(a: &Action) -> bool {
    state(State::Speaking)(a)
}
fn is_thinking(a: &Action) -> bool {
    state(State::Thinking)(a)
}
fn is_user_speaking(a: &Action) -> bool {
    state(State::UserSpeaking)(a)
}
fn is_predict(a: &Action) -> bool {
    matches!(a, Action::PredictTurn { .. })
}
fn is_cancel_predict(a: &Action) -> bool {
    matches!(a, Action::CancelTurnPrediction)
}
fn counts_barge_in(a: &Action) -> bool {
    matches!(a, Action::Count(Count::BargeIn))
}
fn is_typed(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::Transcript { typed: true, .. }))
}
fn is_error(a: &Action) -> bool {
    matches!(a, Action::Emit(Event::Error { .. }))
}

/// The user asks a question: speech, a pause, Smart Turn says complete,
/// the speculative transcript comes back.
fn ask() -> Vec<Step> {
    vec![
        Speak(20),
        Expect("user_speaking", is_user_speaking),
        Quiet(7),
        Expect("Smart Turn asked", is_predict),
        Expect("speculative ASR", is_start_asr),
        Predict(true),
        Expect("thinking", is_thinking),
        Never("a second ASR job", is_start_asr),
        Asr("What is the capital of France?"),
        Expect("LLM started", is_start_llm),
    ]
}

/// The assistant's answer: two clauses, the first synthesized and queued.
fn answer_first_piece() -> Vec<Step> {
    vec![
        Token("Paris is the capital of France, "),
        Token("a city on the Seine. "),
        Expect("first piece to synthesize", is_synthesize),
        Tts(48_000),
        Expect("audio queued", is_play),
        Expect("speaking", is_speaking),
    ]
}

fn cases() -> Vec<(&'static str, Vec<Step>)> {
    vec![
        (
            "a question is answered, clause by clause",
            [ask(), answer_first_piece(), vec![
                Token("It is large."),
                LlmDone,
                Expect("last piece", is_synthesize),
                Never("reply before its audio", is_reply),
                Tts(24_000),
                Never("reply before its last piece", is_reply),
                Tts(24_000),
                Expect("reply", is_reply),
                Expect("timings", is_timings),
                History(&[
                    "user: what is the capital of france?",
                    "assistant: paris is the capital of france, a city on the seine. it is large.",
                ]),
            ]].concat(),
        ),
        (
            "barge-in mid-piece cuts the history where playback stopped",
            [ask(), answer_first_piece(), vec![
                Played(24_000, false),
                Speak(9),
                Expect("flush", is_flush),
                Expect("barge_in event", is_barge_in),
                Expect("LLM cancelled", is_cancel_llm),
                Expect("interrupted reply", is_cut),
                Expect("counted", counts_barge_in),
                History(&[
                    "user: what is the capital of france?",
                    "assistant: paris is the…",
                ]),
                // Late results of the cut reply change nothing.
                Token("More words. "),
                Never("synthesis after the cut", is_synthesize),
            ]].concat(),
        ),
        (
            "barge-in during synthesis drops the pending piece",
            [ask(), vec![
                Token("Paris is the capital of France. "),
                Expect("piece to synthesize", is_synthesize),
                Speak(9),
                Expect("synthesis cancelled", is_cancel_tts),
                Expect("LLM cancelled", is_cancel_llm),
                Expect("barge_in event", is_barge_in),
                History(&["user: what is the capital of france?", "assistant: …"]),
            ]].concat(),
        ),
        (
            "barge-in while a finished reply is still playing",
            [ask(), answer_first_piece(), vec![
                LlmDone,
                Tts(24_000),
                Expect("reply", is_reply),
                Played(48_000, false),
                Speak(9),
                Expect("flush", is_flush),
                Never("nothing left to cancel", is_cancel_llm),
                History(&[
                    "user: what is the capital of france?",
                    "assistant: paris is the capital of france,…",
                ]),
            ]].concat(),
        ),
        (
            "no barge-in once the reply has played out",
            [ask(), answer_first_piece(), vec![
                LlmDone,
                Tts(24_000),
                Played(72_000, true),
                Speak(9),
                Never("flush", is_flush),
                Never("barge_in", is_barge_in),
            ]].concat(),
        ),
        (
            "speculative reply (hit): the LLM starts at the pause, its words wait for the end of turn",
            vec![
                Speak(20),
                Quiet(7),
                Expect("speculative ASR", is_start_asr),
                Predict(false),
                Asr("Tell me a joke."),
                Expect("LLM on the speculative transcript", is_start_llm),
                Token("Why did the chicken cross the road? "),
                Never("nothing said before the end of turn", is_reply_delta),
                Never("nothing synthesized before the end of turn", is_synthesize),
                Quiet(30),
                Expect("end of turn on silence", is_thinking),
                Expect("transcript", is_transcript),
                Expect("held words released", is_reply_delta),
                Expect("first piece synthesized at once", is_synthesize),
                Never("a second decode", is_start_asr),
                Never("a second LLM", is_start_llm),
                Token("To get to the other side."),
                LlmDone,
                Tts(20_000),
                Tts(20_000),
                Expect("reply", is_reply),
                Expect("timings", is_timings),
                History(&[
                    "user: tell me a joke.",
                    "assistant: why did the chicken cross the road? to get to the other side.",
                ]),
            ],
        ),
        (
            "speculative reply (miss): the user goes on, the early LLM is cancelled",
            vec![
                Speak(20),
                Quiet(7),
                Predict(false),
                Asr("Tell me a joke."),
                Expect("speculative LLM", is_start_llm),
                Speak(3),
                Expect("speculative LLM cancelled", is_cancel_llm),
                Quiet(7),
                Predict(true),
                Asr("Tell me a joke about cats."),
                Expect("LLM on the whole turn", is_start_llm),
                Token("Cats nap. "),
                Expect("spoken", is_synthesize),
            ],
        ),
        (
            "speech after the pause drops the speculation (miss)",
            vec![
                Speak(20),
                Quiet(7),
                Expect("speculative ASR", is_start_asr),
                Speak(2),
                Expect("speculative job dropped", is_cancel_asr),
                Expect("prediction dropped", is_cancel_predict),
                Quiet(7),
                Expect("new speculative ASR", is_start_asr),
                Predict(true),
                Asr("Tell me a joke."),
                Expect("LLM", is_start_llm),
            ],
        ),
        (
            "a turn cut while it is transcribed still reports its transcript",
            vec![
                Speak(20),
                Quiet(7),
                Predict(true),
                Expect("thinking", is_thinking),
                Speak(9),
                Expect("cut", is_cut),
                Never("the decode goes on", is_cancel_asr),
                Asr("A very long monologue."),
                Expect("transcript reported", is_transcript),
                Never("not answered", is_start_llm),
            ],
        ),
        (
            "a failed speculative decode is decoded again",
            vec![
                Speak(20),
                Quiet(7),
                Predict(true),
                AsrFails(Failure::Failed("whisper failed".into())),
                Expect("whole turn decoded", is_start_asr),
                Asr("Tell me a joke."),
                Expect("LLM", is_start_llm),
            ],
        ),
        (
            "nothing understood: back to listening",
            vec![
                Speak(20),
                Quiet(7),
                Predict(true),
                Asr("  "),
                Expect("listening", is_listening),
                Never("LLM", is_start_llm),
                History(&[]),
            ],
        ),
        (
            "an empty reply is replaced by the spoken fallback line",
            [ask(), vec![
                LlmDone,
                Expect("fallback synthesized", is_synthesize),
                Never("reply before the fallback is heard", is_reply),
                Tts(24_000),
                Expect("fallback played", is_play),
                Expect("reply", is_reply),
                History(&[
                    "user: what is the capital of france?",
                    "assistant: sorry, i have no answer to that.",
                ]),
            ]].concat(),
        ),
        (
            "an unspeakable reply whose fallback fails too says listening",
            [ask(), vec![
                Token("…"),
                LlmDone,
                Expect("the ellipsis goes to TTS", is_synthesize),
                Tts(0),
                Expect("then the fallback", is_synthesize),
                Tts(0),
                Expect("reply", is_reply),
                Expect("listening", is_listening),
                Never("audio", is_play),
            ]].concat(),
        ),
        (
            "a long reply stops at the spoken-length cap",
            [ask(), vec![
                Token("One two three four five six seven eight nine ten. "),
                Token("One two three four five six seven eight nine ten. "),
                Token("One two three four five six seven eight nine ten. "),
                Expect("LLM stopped at the cap", is_cancel_llm),
                Token("More words that nobody hears. "),
                Never("nothing past the cap", is_synthesize),
                Tts(10_000),
                Tts(10_000),
                Expect("reply", is_reply),
                History(&[
                    "user: what is the capital of france?",
                    "assistant: one two three four five six seven eight nine ten. one two three four five six seven eight nine ten.",
                ]),
            ]].concat(),
        ),
        (
            "no transcript by the start deadline while others wait: busy line",
            vec![
                Others(true),
                Speak(20),
                Quiet(7),
                Predict(true),
                Wait(2900),
                Never("busy too early", is_busy_line),
                Wait(200),
                Expect("busy line", is_busy_line),
                Expect("busy event (deadline)", is_busy_deadline),
                Expect("ASR dropped", is_cancel_asr),
                Asr("Too late."),
                Never("LLM after the busy line", is_start_llm),
            ],
        ),
        (
            "no first token by the start deadline while others wait: busy line, LLM cancelled",
            [vec![Others(true)], ask(), vec![
                Wait(3100),
                Expect("busy event (deadline)", is_busy_deadline),
                Expect("LLM cancelled", is_cancel_llm),
                Token("Paris. "),
                Never("late tokens", is_synthesize),
            ]].concat(),
        ),
        (
            "a lone turn past its deadline is answered, and shed once others queue",
            [ask(), vec![
                Wait(3100),
                Never("busy while nobody else waits", is_busy_line),
                Token("Paris is the capital of France. "),
                Expect("answered late", is_synthesize),
                Others(true),
                Wait(500),
                Never("busy after the first token", is_busy_line),
            ]].concat(),
        ),
        (
            "a lone late turn is shed when other work arrives",
            vec![
                Speak(20),
                Quiet(7),
                Predict(true),
                Wait(3100),
                Never("busy while nobody else waits", is_busy_line),
                Others(true),
                Wait(300),
                Expect("busy line", is_busy_deadline),
            ],
        ),
        (
            "the first token in time disarms the deadline",
            [ask(), vec![
                Token("Paris"),
                Wait(5000),
                Never("busy", is_busy_line),
            ]].concat(),
        ),
        (
            "a full ASR queue: busy line at once",
            vec![
                Speak(20),
                Quiet(7),
                Predict(true),
                AsrFails(Failure::Busy),
                Expect("fallback decode", is_start_asr),
                AsrFails(Failure::Busy),
                Expect("busy event (queue_full)", is_busy_queue),
            ],
        ),
        (
            "a full LLM queue: busy line at once",
            [ask(), vec![
                LlmFails(Failure::Busy),
                Expect("busy (queue_full)", is_busy_queue),
            ]].concat(),
        ),
        (
            "typed text during a reply cuts it without a barge-in and is answered",
            [ask(), answer_first_piece(), vec![
                Played(48_000, false),
                Text("Tell me a joke instead"),
                Expect("flush", is_flush),
                Expect("LLM cancelled", is_cancel_llm),
                Never("a barge_in event", is_barge_in),
                Never("a barge-in count", counts_barge_in),
                Expect("typed transcript", is_typed),
                Expect("new LLM", is_start_llm),
                History(&[
                    "user: what is the capital of france?",
                    "assistant: paris is the capital of france,…",
                ]),
            ]].concat(),
        ),
        (
            "a prompt waits for the grace, then is spoken and answered",
            vec![
                Prompt("news", false),
                Never("prompt at once", is_prompt_event),
                Wait(1600),
                Expect("prompt event", is_prompt_event),
                Expect("synthesis", is_synthesize),
                Tts(30_000),
                Tts(30_000),
                Expect("reply", is_reply),
                Outcome("news", Some(PromptOutcome::Spoken { turn: 1 })),
                History(&["assistant: would you like to hear about news? it is new."]),
            ],
        ),
        (
            "a prompt never starts over the user",
            vec![
                Speak(20),
                Prompt("news", false),
                Wait(3000),
                Never("prompt while the user speaks", is_prompt_event),
                Quiet(7),
                Predict(true),
                Asr(""),
                Wait(1000),
                Never("prompt before the grace", is_prompt_event),
                Wait(600),
                Expect("prompt", is_prompt_event),
            ],
        ),
        (
            "a prompt cut off before it was heard is requeued and spoken later",
            vec![
                Prompt("news", false),
                Wait(1600),
                Expect("prompt event", is_prompt_event),
                Speak(9),
                Expect("synthesis cancelled", is_cancel_tts),
                Outcome("news", None),
                Quiet(7),
                Predict(true),
                Asr(""),
                Wait(1600),
                Expect("spoken again", is_prompt_event),
                Tts(30_000),
                Tts(30_000),
                Outcome("news", Some(PromptOutcome::Spoken { turn: 3 })),
            ],
        ),
        (
            "an interrupt prompt cuts the assistant, not as a barge-in",
            [ask(), answer_first_piece(), vec![
                Prompt("alert", true),
                Expect("flush", is_flush),
                Expect("cut reply", is_cut),
                Never("barge_in", is_barge_in),
                Expect("prompt", is_prompt_event),
            ]].concat(),
        ),
        (
            "a prompt whose synthesis fails is dropped as tts_failed",
            vec![
                Prompt("news", false),
                Wait(1600),
                Tts(0),
                Tts(0),
                Expect("error event", is_error),
                Outcome("news", Some(PromptOutcome::Dropped(DropReason::TtsFailed))),
            ],
        ),
        (
            "expired and duplicate prompts are dropped with their reasons",
            vec![
                ExpiringPrompt("soon", 500),
                Prompt("soon", false),
                Outcome("soon", Some(PromptOutcome::Dropped(DropReason::Duplicate))),
            ],
        ),
        (
            "the end of the session answers every prompt",
            [vec![Prompt("first", false), Wait(1600), Prompt("second", false)],
                vec![
                    Close,
                    Outcome(
                        "first",
                        Some(PromptOutcome::Dropped(DropReason::SessionEnded)),
                    ),
                    Outcome(
                        "second",
                        Some(PromptOutcome::Dropped(DropReason::SessionEnded)),
                    ),
                    Expect("synthesis cancelled", is_cancel_tts),
                ]].concat(),
        ),
    ]
}

#[test]
fn scripted_conversations() {
    for (name, script) in cases() {
        let mut h = Harness::new();
        h.run(name, &script);
    }
}

#[test]
fn expired_prompt_leaves_with_its_reason() {
    let mut h = Harness::new();
    h.run(
        "expiry",
        &[
            Speak(20),
            ExpiringPrompt("soon", 500),
            Wait(600),
            Outcome("soon", Some(PromptOutcome::Dropped(DropReason::Expired))),
        ],
    );
}

/// Every kind of action is produced by some case: a new kind needs a case.
#[test]
fn the_cases_cover_every_action_kind() {
    fn kind(a: &Action) -> &'static str {
        match a {
            Action::Emit(_) => "emit",
            Action::StartAsr { .. } => "start_asr",
            Action::CancelAsr { .. } => "cancel_asr",
            Action::PredictTurn { .. } => "predict_turn",
            Action::CancelTurnPrediction => "cancel_turn_prediction",
            Action::StartLlm { .. } => "start_llm",
            Action::CancelLlm { .. } => "cancel_llm",
            Action::Synthesize { .. } => "synthesize",
            Action::CancelSynthesis { .. } => "cancel_synthesis",
            Action::Play { .. } => "play",
            Action::PlayBusyLine { .. } => "play_busy_line",
            Action::Flush => "flush",
            Action::AnswerPrompt { .. } => "answer_prompt",
            Action::Count(_) => "count",
        }
    }
    const ALL: usize = 14;
    let mut seen = std::collections::BTreeSet::new();
    for (name, script) in cases() {
        let mut h = Harness::new();
        h.run(name, &script);
        seen.extend(h.all.iter().map(kind));
    }
    assert_eq!(seen.len(), ALL, "action kinds produced: {seen:?}");
}

#[test]
fn heard_text_cuts_where_playback_stopped() {
    let pieces = vec![
        ("The capital of France is Paris,".to_string(), 1000),
        ("a city of light.".to_string(), 400),
    ];
    assert_eq!(heard_text(&pieces, 0), "");
    assert_eq!(heard_text(&pieces, 1000), "The capital of France is Paris,");
    assert_eq!(
        heard_text(&pieces, 1200),
        "The capital of France is Paris, a city"
    );
    assert_eq!(
        heard_text(&pieces, 5000),
        "The capital of France is Paris, a city of light."
    );
}
