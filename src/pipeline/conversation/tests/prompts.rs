//! Cases of proactive prompts: the grace, being heard, requeued or handed back, dropped with a reason.

use super::*;

pub(super) fn cases() -> Vec<(&'static str, Vec<Step>)> {
    vec![
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
                Outcome(
                    "news",
                    Some(PromptOutcome::Dropped(DropReason::SessionEnded)),
                ),
            ],
        ),
        (
            "a session that ends before the first piece of a prompt still being synthesized plays hands it back",
            vec![
                Prompt("news", false),
                Wait(1600),
                Tts(30_000),
                Close,
                Outcome(
                    "news",
                    Some(PromptOutcome::Dropped(DropReason::SessionEnded)),
                ),
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
            [
                ask(),
                answer_first_piece(),
                vec![
                    Prompt("alert", true),
                    Expect("flush", is_flush),
                    Expect("cut reply", is_cut),
                    Never("barge_in", is_barge_in),
                    Expect("prompt", is_prompt_event),
                ],
            ]
            .concat(),
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
            [
                vec![Prompt("first", false), Wait(1600), Prompt("second", false)],
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
                ],
            ]
            .concat(),
        ),
    ]
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
