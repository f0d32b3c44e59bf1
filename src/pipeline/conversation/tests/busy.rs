//! Cases of the start deadline and full queues: the busy line, only when other work waits.

use super::*;

pub(super) fn cases() -> Vec<(&'static str, Vec<Step>)> {
    vec![
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
            [
                vec![Others(true)],
                ask(),
                vec![
                    Wait(3100),
                    Expect("busy event (deadline)", is_busy_deadline),
                    Expect("LLM cancelled", is_cancel_llm),
                    Token("Paris. "),
                    Never("late tokens", is_synthesize),
                ],
            ]
            .concat(),
        ),
        (
            "a lone turn past its deadline is answered, and shed once others queue",
            [
                ask(),
                vec![
                    Wait(3100),
                    Never("busy while nobody else waits", is_busy_line),
                    Token("Paris is the capital of France. "),
                    Expect("answered late", is_synthesize),
                    Others(true),
                    Wait(500),
                    Never("busy after the first token", is_busy_line),
                ],
            ]
            .concat(),
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
            [
                ask(),
                vec![Token("Paris"), Wait(5000), Never("busy", is_busy_line)],
            ]
            .concat(),
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
            [
                ask(),
                vec![
                    LlmFails(Failure::Busy),
                    Expect("busy (queue_full)", is_busy_queue),
                ],
            ]
            .concat(),
        ),
    ]
}
