//! Cases of speech over the assistant: hold, barge-in, a cough, typed text.

use super::*;

pub(super) fn cases() -> Vec<(&'static str, Vec<Step>)> {
    vec![
        (
            "barge-in mid-piece cuts the history where playback stopped",
            [
                ask(),
                answer_first_piece(),
                vec![
                    Played(24_000, false),
                    Speak(BARGE_IN),
                    Expect("flush", is_flush),
                    Expect("barge_in event", is_barge_in),
                    Expect("LLM cancelled", is_cancel_llm),
                    Expect("interrupted reply", is_cut),
                    Expect("counted", counts_barge_in),
                    Expect(
                        "the history as heard, ready for the next prompt",
                        warms_after_a_cut_reply,
                    ),
                    History(&[
                        "user: what is the capital of france?",
                        "assistant: paris is the…",
                    ]),
                    // Late results of the cut reply change nothing.
                    Token("More words. "),
                    Never("synthesis after the cut", is_synthesize),
                ],
            ]
            .concat(),
        ),
        (
            "speech over the reply holds it at once; once it lasts, it is a barge-in",
            [
                ask(),
                answer_first_piece(),
                vec![
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
                ],
            ]
            .concat(),
        ),
        (
            "a cough over the reply holds it, then it goes on where it paused",
            [
                ask(),
                answer_first_piece(),
                vec![
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
                ],
            ]
            .concat(),
        ),
        (
            "a cough while the assistant thinks holds nothing for long: its reply plays",
            [
                ask(),
                vec![
                    // Past the silence fallback's time: not the turn going on.
                    Wait(1000),
                    Speak(4),
                    Expect("held", is_hold),
                    Quiet(7),
                    Expect("released", is_release),
                    Expect("thinking still", is_thinking),
                    Never("the LLM goes on", is_cancel_llm),
                ],
                answer_first_piece(),
                vec![Never("not held", is_hold)],
            ]
            .concat(),
        ),
        (
            "barge-in during synthesis drops the pending piece",
            [
                ask(),
                vec![
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
                ],
            ]
            .concat(),
        ),
        (
            "barge-in while a finished reply is still playing",
            [
                ask(),
                answer_first_piece(),
                vec![
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
                ],
            ]
            .concat(),
        ),
        (
            "no barge-in once the reply has played out",
            [
                ask(),
                answer_first_piece(),
                vec![
                    LlmDone,
                    Tts(24_000),
                    Played(72_000, true),
                    Speak(BARGE_IN),
                    Never("flush", is_flush),
                    Never("barge_in", is_barge_in),
                ],
            ]
            .concat(),
        ),
        (
            "typed text during a reply cuts it without a barge-in and is answered",
            [
                ask(),
                answer_first_piece(),
                vec![
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
                ],
            ]
            .concat(),
        ),
    ]
}
