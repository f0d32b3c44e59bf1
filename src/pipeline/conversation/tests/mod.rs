//! Table-driven tests of the conversation state machine: each case is a
//! script of inputs (speech, silence, model answers, clock, prompts, typed
//! text) and of checks on the actions the last step returned. No models,
//! no runtime, no clock: a case runs in microseconds. The cases are
//! grouped by what they exercise (`replies`, `turns`, `barge_in`, `busy`,
//! `prompts`); `harness` runs them.

mod barge_in;
mod busy;
mod harness;
mod prompts;
mod replies;
mod turns;

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
    [
        replies::cases(),
        turns::cases(),
        barge_in::cases(),
        busy::cases(),
        prompts::cases(),
    ]
    .concat()
}

#[test]
fn scripted_conversations() {
    for (name, script) in cases() {
        let mut h = Harness::new();
        h.run(name, &script);
    }
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
