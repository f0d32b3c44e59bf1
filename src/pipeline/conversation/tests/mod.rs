//! Table-driven tests of the conversation state machine: each case is a
//! script of inputs (speech, silence, model answers, clock, prompts, typed
//! text) and of checks on the actions the last step returned. No models,
//! no runtime, no clock: a case runs in microseconds.

mod harness;

/// Windows of speech that reach `turn.barge_in_ms` (400 ms).
const BARGE_IN: usize = 13;

use super::*;
use harness::*;

/// The user asks a question: speech, a pause, Smart Turn says complete,
/// the speculative transcript comes back.
fn ask() -> Vec<Step> {
    vec![
        Speak(20),
        Expect("user_speaking", is_user_speaking),
        Quiet(7),
        Expect("Smart Turn asked", is_predict),
        Never("ASR before Smart Turn answers", is_start_asr),
        Predict(true),
        Expect("thinking", is_thinking),
        Expect("the turn decoded", is_start_asr),
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
            "the next prompt is prepared before the question and while the reply plays",
            [vec![
                Speak(1),
                Expect("the system prompt, before the first question", warms_the_system_prompt),
                Speak(19),
                Never("nothing to prepare while the user speaks", is_warm),
            ], ask()[2..].to_vec(), answer_first_piece(), vec![
                Never("not while generating", is_warm),
                Token("It is large."),
                LlmDone,
                Never("not before the text is complete", is_warm),
                Tts(24_000),
                Never("not before every piece is back", is_warm),
                Tts(24_000),
                Expect("the history with the reply", warms_after_a_reply),
                Expect("reply", is_reply),
            ]].concat(),
        ),
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
                Never("sources without a knowledge base", is_reply_with_sources),
                Expect("timings", is_timings),
                History(&[
                    "user: what is the capital of france?",
                    "assistant: paris is the capital of france, a city on the seine. it is large.",
                ]),
            ]].concat(),
        ),
        (
            "a grounded speculative reply keeps its sources and kb time through adoption",
            vec![
                Speak(20),
                Quiet(7),
                Predict(false),
                Asr("When do you open?"),
                Expect("LLM on the speculative transcript", is_start_llm),
                Retrieved("hours.md"),
                Token("We open at six forty-five. "),
                Quiet(30),
                Expect("end of turn on silence", is_thinking),
                LlmDone,
                Tts(20_000),
                Expect("reply with its sources", is_reply_with_sources),
                Expect("timings with kb_ms", is_timings_with_kb),
                // The notes went to the LLM only: the history keeps the question.
                History(&[
                    "user: when do you open?",
                    "assistant: we open at six forty-five.",
                ]),
            ],
        ),
        (
            "a grounded reply that states a number its notes lack says it does not know instead",
            [ask(), vec![
                Grounded("hours.md", "Notes:\n- Opening hours: open from 6:45 to 2.\n\nQuestion: What is your phone number?"),
                Token("You can call us at 555-0142. "),
                Expect("'I don't know' to synthesize", is_dont_know),
                Expect("the LLM stopped", is_cancel_llm),
                Expect("counted", counts_unsupported),
                Token("Ask for Pierre. "),
                Never("anything after it", is_synthesize),
                LlmDone,
                Tts(24_000),
                Expect("reply", is_reply),
                History(&[
                    "user: what is the capital of france?",
                    "assistant: sorry, i don't know that.",
                ]),
            ]].concat(),
        ),
        (
            "a grounded reply that stays within its notes is spoken; an invented name later ends it there",
            [ask(), vec![
                Grounded("hours.md", "Notes:\n- Opening hours: Harbor Lane Bakery is open from 6:45 to 2.\n\nQuestion: When do you open?"),
                Token("Harbor Lane Bakery opens at six forty-five, "),
                Token("and closes at 2 PM. "),
                Expect("a piece to synthesize", is_synthesize),
                Never("not counted", counts_unsupported),
                Tts(24_000),
                Tts(24_000),
                Token("Ask for Pierre at the counter. "),
                Expect("the LLM stopped", is_cancel_llm),
                Never("the invented name", is_synthesize),
                Expect("counted", counts_unsupported),
                Expect("reply", is_reply),
                History(&[
                    "user: what is the capital of france?",
                    "assistant: harbor lane bakery opens at six forty-five, and closes at 2 pm.",
                ]),
            ]].concat(),
        ),
        (
            "barge-in mid-piece cuts the history where playback stopped",
            [ask(), answer_first_piece(), vec![
                Played(24_000, false),
                Speak(BARGE_IN),
                Expect("flush", is_flush),
                Expect("barge_in event", is_barge_in),
                Expect("LLM cancelled", is_cancel_llm),
                Expect("interrupted reply", is_cut),
                Expect("counted", counts_barge_in),
                Expect("the history as heard, ready for the next prompt", warms_after_a_cut_reply),
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
            "speech over the reply holds it at once; once it lasts, it is a barge-in",
            [ask(), answer_first_piece(), vec![
                Played(24_000, false),
                Speak(3),
                Expect("playout held", is_hold),
                Never("not flushed yet", is_flush),
                Never("no barge-in yet", is_barge_in),
                Speak(BARGE_IN - 3),
                Expect("flush", is_flush),
                Expect("barge_in event", is_barge_in),
                Expect("counted", counts_barge_in),
                History(&[
                    "user: what is the capital of france?",
                    "assistant: paris is the…",
                ]),
                // The user's own turn is answered and heard.
                Quiet(7),
                Predict(true),
                Asr("Stop."),
                Token("Okay, I will stop talking now then. "),
                Tts(24_000),
                Expect("its audio queued", is_play),
                Never("and not held", is_hold),
            ]].concat(),
        ),
        (
            "a cough over the reply holds it, then it goes on where it paused",
            [ask(), answer_first_piece(), vec![
                Played(24_000, false),
                Speak(5),
                Expect("playout held", is_hold),
                Quiet(7),
                Expect("released", is_release),
                Expect("counted", counts_hold_resumed),
                Expect("speaking again", is_speaking),
                Never("no flush", is_flush),
                Never("no barge-in", is_barge_in),
                Never("no Smart Turn: it was no turn", is_predict),
                Never("no ASR", is_start_asr),
                Quiet(40),
                Never("no end of turn", is_thinking),
                LlmDone,
                Tts(24_000),
                Expect("the whole reply, not interrupted", is_reply),
                Played(72_000, true),
                History(&[
                    "user: what is the capital of france?",
                    "assistant: paris is the capital of france, a city on the seine.",
                ]),
            ]].concat(),
        ),
        (
            "a cough while the assistant thinks holds nothing for long: its reply plays",
            [ask(), vec![
                // Past the silence fallback's time: not the turn going on.
                Wait(1000),
                Speak(4),
                Expect("held", is_hold),
                Quiet(7),
                Expect("released", is_release),
                Expect("thinking still", is_thinking),
                Never("the LLM goes on", is_cancel_llm),
            ], answer_first_piece(), vec![
                Never("not held", is_hold),
            ]].concat(),
        ),
        (
            "barge-in during synthesis drops the pending piece",
            [ask(), vec![
                Token("Paris is the capital of France. "),
                Expect("piece to synthesize", is_synthesize),
                // Past the silence fallback's time: a new turn, not the old
                // one going on.
                Wait(1000),
                Speak(BARGE_IN),
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
                Speak(BARGE_IN),
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
                Speak(BARGE_IN),
                Never("flush", is_flush),
                Never("barge_in", is_barge_in),
            ]].concat(),
        ),
        (
            "speculative reply (hit): the LLM starts at the pause, its words wait for the end of turn",
            vec![
                Speak(20),
                Quiet(7),
                Never("ASR before Smart Turn answers", is_start_asr),
                Predict(false),
                Expect("speculative ASR once Smart Turn says not yet", is_start_asr),
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
                Predict(false),
                Expect("speculative ASR", is_start_asr),
                Speak(2),
                Expect("speculative job dropped", is_cancel_asr),
                Quiet(7),
                Expect("Smart Turn asked again", is_predict),
                Predict(true),
                Expect("whole turn decoded", is_start_asr),
                Asr("Tell me a joke."),
                Expect("LLM", is_start_llm),
            ],
        ),
        (
            "speech before Smart Turn answers drops the prediction and starts no decode",
            vec![
                Speak(20),
                Quiet(7),
                Expect("Smart Turn asked", is_predict),
                Speak(2),
                Expect("prediction dropped", is_cancel_predict),
                Never("no decode", is_start_asr),
                // A late answer for the dropped pause changes nothing.
                Predict(false),
                Never("no decode on a stale answer", is_start_asr),
                Never("no end of turn on a stale answer", is_thinking),
            ],
        ),
        (
            "a turn cut while it is transcribed still reports its transcript",
            vec![
                Speak(20),
                Quiet(7),
                Predict(true),
                Expect("thinking", is_thinking),
                Wait(1000),
                Speak(BARGE_IN),
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
                Predict(false),
                Expect("speculative ASR", is_start_asr),
                Quiet(30),
                Expect("end of turn on silence, the decode still running", is_thinking),
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
                Token("Eleven twelve thirteen fourteen fifteen sixteen seventeen. "),
                Token("Eighteen nineteen twenty and more words past the cap. "),
                Expect("LLM stopped at the cap", is_cancel_llm),
                Token("More words that nobody hears. "),
                Never("nothing past the cap", is_synthesize),
                Tts(10_000),
                Tts(10_000),
                Expect("reply", is_reply),
                History(&[
                    "user: what is the capital of france?",
                    "assistant: one two three four five six seven eight nine ten. eleven twelve thirteen fourteen fifteen sixteen seventeen.",
                ]),
            ]].concat(),
        ),
        (
            "speech soon after an early end of turn continues the turn: one transcript, one user message",
            vec![
                Speak(20),
                Quiet(7),
                Predict(true),
                Asr("Thank you."),
                Expect("LLM started on the early turn", is_start_llm),
                Expect("its transcript", is_transcript),
                Speak(5),
                Expect("its reply dropped", is_cancel_llm),
                Never("not a barge-in", is_barge_in),
                Never("not counted as one", counts_barge_in),
                Speak(15),
                Quiet(7),
                Predict(true),
                Asr("Thank you, that is all for today."),
                Expect("the whole turn's transcript", is_transcript_of_turn_1),
                Token("You're welcome. "),
                LlmDone,
                Tts(10_000),
                Expect("reply", is_reply),
                History(&[
                    "user: thank you, that is all for today.",
                    "assistant: you're welcome.",
                ]),
            ],
        ),
        (
            "speech after the silence fallback's time is a new turn",
            vec![
                Speak(20),
                Quiet(7),
                Predict(true),
                Asr("Thank you."),
                Wait(1200),
                Speak(BARGE_IN),
                Expect("a barge-in, as over any reply", is_barge_in),
            ],
        ),
        (
            "a reply that repeats a piece is looping: it ends before the repeat",
            [ask(), vec![
                Token("Mix the flour and the milk. "),
                Token("Add half a cup of maple syrup, "),
                Token("add half a cup of maple syrup. "),
                Expect("LLM stopped at the repeat", is_cancel_llm),
                Expect("the sentence up to the repeat", is_synthesize),
                Tts(10_000),
                Tts(10_000),
                Expect("reply", is_reply),
                History(&[
                    "user: what is the capital of france?",
                    "assistant: mix the flour and the milk. add half a cup of maple syrup,",
                ]),
                Token("Add half a cup of maple syrup. "),
                Never("nothing after the loop", is_synthesize),
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
                Expect("the turn decoded", is_start_asr),
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
                Played(30_000, false),
                Outcome("news", None),
                Played(60_000, true),
                Outcome("news", Some(PromptOutcome::Spoken { turn: 1 })),
                History(&["assistant: would you like to hear about news? it is new."]),
            ],
        ),
        (
            "a prompt whose last piece fails is answered once what was queued played",
            vec![
                Prompt("news", false),
                Wait(1600),
                Tts(30_000),
                Played(30_000, true),
                Outcome("news", None),
                Tts(0),
                Outcome("news", Some(PromptOutcome::Spoken { turn: 1 })),
            ],
        ),
        (
            "a prompt cut while it plays was heard in part: spoken, not requeued",
            vec![
                Prompt("news", false),
                Wait(1600),
                Tts(30_000),
                Tts(30_000),
                Played(20_000, false),
                Outcome("news", None),
                Speak(BARGE_IN),
                Expect("flush", is_flush),
                Outcome("news", Some(PromptOutcome::Spoken { turn: 1 })),
                History(&["assistant: would you like to…"]),
            ],
        ),
        (
            "a session that ends before a queued prompt plays hands it back",
            vec![
                Prompt("news", false),
                Wait(1600),
                Tts(30_000),
                Tts(30_000),
                Close,
                Outcome("news", Some(PromptOutcome::Dropped(DropReason::SessionEnded))),
            ],
        ),
        (
            "a session that ends before the first piece of a prompt still being synthesized plays hands it back",
            vec![
                Prompt("news", false),
                Wait(1600),
                Tts(30_000),
                Close,
                Outcome("news", Some(PromptOutcome::Dropped(DropReason::SessionEnded))),
            ],
        ),
        (
            "a session that ends while a prompt still being synthesized plays counts it as spoken",
            vec![
                Prompt("news", false),
                Wait(1600),
                Tts(30_000),
                Played(10_000, false),
                Close,
                Outcome("news", Some(PromptOutcome::Spoken { turn: 1 })),
            ],
        ),
        (
            "a prompt cut off after its first piece was queued but before it played is requeued",
            vec![
                Prompt("news", false),
                Wait(1600),
                Tts(30_000),
                Speak(BARGE_IN),
                Expect("flush", is_flush),
                Outcome("news", None),
                Quiet(7),
                Predict(true),
                Asr(""),
                Wait(1600),
                Expect("spoken again", is_prompt_event),
            ],
        ),
        (
            "a session that ends while a prompt plays counts it as spoken",
            vec![
                Prompt("news", false),
                Wait(1600),
                Tts(30_000),
                Tts(30_000),
                Played(10_000, false),
                Close,
                Outcome("news", Some(PromptOutcome::Spoken { turn: 1 })),
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
                Speak(BARGE_IN),
                Expect("synthesis cancelled", is_cancel_tts),
                Outcome("news", None),
                Quiet(7),
                Predict(true),
                Asr(""),
                Wait(1600),
                Expect("spoken again", is_prompt_event),
                Tts(30_000),
                Tts(30_000),
                Played(60_000, true),
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

/// With no other input (a client without a microphone), the conversation
/// still asks for ticks while its audio plays, so the end of playback is
/// seen when it happens and a prompt waits the grace from there, not from
/// its own arrival.
#[test]
fn the_prompt_grace_counts_from_the_end_of_playback() {
    let mut h = Harness::new();
    h.run(
        "reply",
        &[
            ask(),
            answer_first_piece(),
            vec![
                Token("It is large."),
                LlmDone,
                Tts(24_000),
                Tts(24_000),
                Expect("reply", is_reply),
            ],
        ]
        .concat(),
    );
    let tick = h.wake_in().expect("a tick while the audio plays");
    assert!(tick <= Duration::from_millis(100), "tick in {tick:?}");
    h.run(
        "playback ends, then a prompt comes later",
        &[
            Wait(2000),
            Played(96_000, true),
            Wait(1600),
            Prompt("news", false),
            Expect(
                "prompt at once: the quiet began at the end of playback",
                is_prompt_event,
            ),
        ],
    );
    h.run("spoken", &[Tts(30_000), Tts(30_000), Played(60_000, true)]);
    assert_eq!(h.wake_in(), None, "no ticks once everything has played");
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
            Action::WarmLlm { .. } => "warm_llm",
            Action::Synthesize { .. } => "synthesize",
            Action::CancelSynthesis { .. } => "cancel_synthesis",
            Action::Play { .. } => "play",
            Action::PlayBusyLine { .. } => "play_busy_line",
            Action::Flush => "flush",
            Action::Hold(_) => "hold",
            Action::AnswerPrompt { .. } => "answer_prompt",
            Action::Count(_) => "count",
        }
    }
    const ALL: usize = 16;
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

/// A first piece cut after a few words is spoken at once, but not in a
/// reply checked against its notes: the rest of the sentence could hold
/// the invented number, after its start was already said.
#[test]
fn a_checked_reply_gets_no_early_first_piece() {
    let mut cfg = harness::settings();
    cfg.chunking.first_piece_words = 3;
    let reply = Token("You can call us at 555-0142. ");
    Harness::with(cfg.clone()).run(
        "unchecked",
        &[
            ask(),
            vec![
                reply.clone(),
                Expect("the first words at once", is_early_first_piece),
            ],
        ]
        .concat(),
    );
    Harness::with(cfg).run(
        "checked",
        &[ask(), vec![
            Grounded("hours.md", "Notes:\n- Opening hours: open from 6:45 to 2.\n\nQuestion: What is your phone number?"),
            reply,
            Never("the first words", is_early_first_piece),
            Expect("'I don't know' instead", is_dont_know),
        ]]
        .concat(),
    );
}
