//! Cases of replies: clause by clause, grounded in notes, fallbacks, caps and loops, and the warm-up of the next prompt.

use super::*;

pub(super) fn cases() -> Vec<(&'static str, Vec<Step>)> {
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
    ]
}
