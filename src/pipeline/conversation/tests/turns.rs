//! Cases of turns: Smart Turn, the speculative transcript and reply, continued turns, failed or empty decodes.

use super::*;

pub(super) fn cases() -> Vec<(&'static str, Vec<Step>)> {
    vec![
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
                Expect(
                    "end of turn on silence, the decode still running",
                    is_thinking,
                ),
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
            "a speculative transcript that reads finished ends the turn at transcript_pause_ms",
            vec![
                Speak(20),
                Quiet(7),
                Predict(false),
                Asr("What is the capital of France?"),
                Expect("speculative LLM", is_start_llm),
                Never("not over on the transcript alone", is_thinking),
                Quiet(8),
                Never("not before 512 ms of silence", is_thinking),
                Quiet(1),
                Expect("end of turn at 512 ms", is_thinking),
                Expect("its transcript", is_transcript),
                Never("the speculative reply is kept", is_start_llm),
            ],
        ),
        (
            "a transcript that stops mid-phrase waits for the long silence",
            vec![
                Speak(20),
                Quiet(7),
                Predict(false),
                Asr("I am planning a trip to the"),
                Quiet(24),
                Never("not over at 992 ms", is_thinking),
                Quiet(1),
                Expect("end of turn on the 1 s fallback", is_thinking),
            ],
        ),
        (
            "speech soon after a turn ended on its transcript continues the turn",
            vec![
                Speak(20),
                Quiet(7),
                Predict(false),
                Asr("Thank you."),
                Quiet(9),
                Expect("ended on the transcript", is_thinking),
                Speak(5),
                Expect("its reply dropped", is_cancel_llm),
                Expect("counted as continued", counts_turn_continued),
                Never("not a barge-in", is_barge_in),
                Speak(15),
                Quiet(7),
                Predict(true),
                Asr("Thank you, that is all for today."),
                Expect("the whole turn's transcript", is_transcript_of_turn_1),
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
    ]
}

/// With `turn.prefill_every_ms`, the turn so far is transcribed while the
/// user speaks and its words but the last go to the LLM to prefill; not
/// while other sessions' work waits, and a job still running is dropped at
/// the pause (Smart Turn and the turn's transcript come first); the turn
/// is decoded whole as ever.
#[test]
fn the_question_so_far_is_prefilled_while_the_user_speaks() {
    let mut cfg = settings();
    cfg.turn.prefill_every_ms = 1000;
    // 1000 ms is 31.25 windows of 32 ms, pre-roll included.
    let mut h = Harness::with(cfg.clone());
    h.run(
        "prefilled",
        &[
            Speak(20),
            Never("not before a second of the turn", is_start_asr),
            Speak(20),
            Expect("the turn so far transcribed", is_start_asr),
            Speak(5),
            Never("one job at a time", is_start_asr),
            Asr("What is the capital of"),
            Expect("its words prefilled", warms_the_question_so_far),
            Speak(30),
            Expect("the next second transcribed", is_start_asr),
            Quiet(7),
            Expect("the unfinished job dropped at the pause", is_cancel_asr),
            Expect("Smart Turn asked", is_predict),
            Predict(true),
            Expect("the whole turn decoded", is_start_asr),
            Asr("What is the capital of France?"),
            Expect("LLM started", is_start_llm),
        ],
    );
    let asked = h.all.iter().find_map(|a| match a {
        Action::StartLlm { messages, .. } => messages.last().map(|m| m.content.as_str()),
        _ => None,
    });
    assert_eq!(asked, Some("What is the capital of France?"));
    let so_far: Vec<&str> = h
        .all
        .iter()
        .filter_map(|a| match a {
            Action::WarmLlm { so_far, .. } if !so_far.is_empty() => Some(so_far.as_str()),
            _ => None,
        })
        .collect();
    // The last word may be cut by the audio, or changed by what follows.
    assert_eq!(so_far, ["What is the capital"]);

    Harness::with(cfg.clone()).run(
        "busy machine",
        &[
            Others(true),
            Speak(80),
            Never("no transcript while others' work waits", is_start_asr),
        ],
    );
    cfg.turn.prefill_every_ms = 0;
    Harness::with(cfg).run("off", &[Speak(80), Never("off", is_start_asr)]);
}

/// With `turn.lull_ms`, the turn so far is transcribed at the lull before
/// the first pause; Smart Turn is asked once that transcript is in, and a
/// turn it ends is answered on it without a second decode. Speech after
/// the lull drops it; a busy machine leaves it to the pause.
#[test]
fn the_turn_is_transcribed_at_the_lull_before_the_pause() {
    let mut cfg = settings();
    cfg.turn.lull_ms = 64;
    let cases: Vec<(&str, Vec<Step>)> = vec![
        (
            "transcript in before the pause",
            vec![
                Speak(20),
                Quiet(1),
                Never("no transcript after one quiet window", is_start_asr),
                Quiet(1),
                Expect("transcribed at the lull", is_start_asr),
                Asr("What is the capital of France?"),
                Never("no reply before the pause", is_start_llm),
                Quiet(2),
                Expect("Smart Turn asked at the pause", is_predict),
                Never("no second decode", is_start_asr),
                Predict(true),
                Expect("end of turn", is_thinking),
                Expect("answered on the lull's transcript", is_start_llm),
                Never("no second decode", is_start_asr),
            ],
        ),
        (
            "the pause comes first: Smart Turn waits for the transcript",
            vec![
                Speak(20),
                Quiet(2),
                Expect("transcribed at the lull", is_start_asr),
                Quiet(5),
                Never("Smart Turn waits for the transcript", is_predict),
                Asr("Tell me a joke."),
                Expect("Smart Turn asked now", is_predict),
                Never("no reply while Smart Turn decides", is_start_llm),
                Predict(false),
                Expect("the speculative reply on it", is_start_llm),
                Never("no second decode", is_start_asr),
                Quiet(30),
                Expect("end of turn on silence", is_thinking),
                Never("no second decode", is_start_asr),
                Never("no second LLM", is_start_llm),
            ],
        ),
        (
            "speech after the lull drops its transcript",
            vec![
                Speak(20),
                Quiet(2),
                Expect("transcribed at the lull", is_start_asr),
                Speak(1),
                Expect("dropped", is_cancel_asr),
                Quiet(7),
                Expect("transcribed at the next lull", is_start_asr),
                Never("Smart Turn waits for it", is_predict),
                AsrFails(Failure::Failed("whisper".into())),
                Expect("Smart Turn asked anyway", is_predict),
                Predict(true),
                Expect("the whole turn decoded", is_start_asr),
                Asr("Tell me a joke about cats."),
                Expect("LLM on the whole turn", is_start_llm),
            ],
        ),
        (
            "busy machine: at the pause, after Smart Turn, as without a lull",
            vec![
                Others(true),
                Speak(20),
                Quiet(7),
                Never("nothing at the lull", is_start_asr),
                Expect("Smart Turn asked", is_predict),
                Predict(false),
                Expect("transcribed", is_start_asr),
            ],
        ),
    ];
    for (name, script) in cases {
        Harness::with(cfg.clone()).run(name, &script);
    }
    cfg.turn.prefill_every_ms = 1000;
    Harness::with(cfg).run(
        "behind a transcript of the turn so far",
        &[
            Speak(40),
            Expect("the turn so far transcribed", is_start_asr),
            Quiet(2),
            Expect("that job dropped at the lull", is_cancel_asr),
            Expect("the lull's own", is_start_asr),
            Quiet(2),
            Expect(
                "Smart Turn asked at once, beside the dropped job",
                is_predict,
            ),
            Predict(true),
            Expect("end of turn", is_thinking),
            Never("no second decode", is_start_asr),
            Asr("What is the capital of France?"),
            Expect("answered on the lull's transcript", is_start_llm),
        ],
    );
}
