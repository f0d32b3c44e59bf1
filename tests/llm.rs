//! The local LLM (llama.cpp): it streams and stops within a token, a
//! conversation's next prompt is prefilled before its question, concurrent
//! conversations share one batch, and replies do not loop. Real models
//! from `models/` (the test command fetches them first).

mod common;

use std::time::{Duration, Instant};

use voxloop::engines;
use voxloop::pipeline::llm::{ChatMessage, DEFAULT_SYSTEM_PROMPT, Finish, LlmEvent, Role};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_streams_and_cancels_within_a_token() {
    let cfg = common::model_config("fast");
    let llm = engines::load_llm(&cfg).unwrap();

    // Streaming: tokens arrive before the completion.
    let mut g = llm
        .generate(
            7,
            common::question("Tell me a long story about a dragon."),
            Some(60),
        )
        .unwrap();
    let mut tokens_before_done = 0;
    let completion = loop {
        match g.events.recv().await.expect("events") {
            LlmEvent::Token(_) => tokens_before_done += 1,
            LlmEvent::Done(c) => break c,
        }
    };
    println!(
        "fast LLM: {} tokens streamed, {:.1} tokens/s, first token {:?}",
        tokens_before_done,
        completion.generated as f64 / completion.elapsed.as_secs_f64(),
        completion.first_token
    );
    assert!(
        tokens_before_done >= 5,
        "only {tokens_before_done} streamed tokens"
    );

    // Cancellation: after the cancel, at most one more token.
    let mut g = llm
        .generate(
            8,
            common::question("Count from one to one hundred, in words."),
            Some(150),
        )
        .unwrap();
    let mut seen = 0;
    while seen < 3 {
        if let Some(LlmEvent::Token(_)) = g.events.recv().await {
            seen += 1;
        }
    }
    g.cancel();
    let mut after = 0;
    let c = loop {
        match g.events.recv().await.expect("events") {
            LlmEvent::Token(_) => after += 1,
            LlmEvent::Done(c) => break c,
        }
    };
    println!("tokens after cancel: {after}; finish {:?}", c.finish);
    assert_eq!(c.finish, Finish::Cancelled);
    assert!(after <= 1, "{after} tokens after cancel");

    // The next turn of conversation 7 reuses its KV prefix.
    let mut history = common::question("Tell me a long story about a dragon.");
    history.push(ChatMessage::new(Role::Assistant, completion.text.clone()));
    history.push(ChatMessage::new(Role::User, "Thanks. How does it end?"));
    let c2 = llm.generate(7, history, Some(20)).unwrap().collect().await;
    println!(
        "second turn: {} prompt tokens, {} reused",
        c2.prompt_tokens, c2.reused_tokens
    );
    assert!(c2.reused_tokens > 20, "no KV reuse: {c2:?}");
}

/// Waits until `llm` has prefilled more warm-up tokens than `before`.
async fn warmed_past(llm: &voxloop::pipeline::llm::Llm, before: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    while llm.warmed_tokens() <= before {
        assert!(Instant::now() < deadline, "no warm-up after 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    llm.warmed_tokens()
}

/// A conversation's next prompt, prefilled ahead of its question (the
/// system prompt before the first one, the history with the last reply
/// after it), leaves only the question to decode, and the reply is the
/// same as from a cold engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_warm_up_leaves_only_the_question_to_decode() {
    let cfg = common::model_config("fast");
    let warm = engines::load_llm(&cfg).unwrap();
    let cold = engines::load_llm(&cfg).unwrap();
    let decoded = |c: &voxloop::pipeline::llm::Completion| c.prompt_tokens - c.reused_tokens;
    let mut history = vec![ChatMessage::new(Role::System, DEFAULT_SYSTEM_PROMPT)];
    let mut warmed = 0;
    for (turn, next) in ["Name a colour.", "And another one?"]
        .into_iter()
        .enumerate()
    {
        let before = warmed;
        warm.warm(1, history.clone(), String::new());
        warmed = warmed_past(&warm, before).await;
        history.push(ChatMessage::new(Role::User, next));
        let w = warm
            .generate(1, history.clone(), Some(12))
            .unwrap()
            .collect()
            .await;
        let c = cold
            .generate(1, history.clone(), Some(12))
            .unwrap()
            .collect()
            .await;
        println!(
            "turn {}: {} prompt tokens; warmed {} then decoded {}; cold decoded {}",
            turn + 1,
            w.prompt_tokens,
            warmed - before,
            decoded(&w),
            decoded(&c)
        );
        assert_eq!(w.text, c.text, "a warmed prompt changed the reply");
        assert!(
            decoded(&w) < decoded(&c),
            "the warm-up saved nothing: {w:?} / {c:?}"
        );
        // What the warm-up decoded is what the cold engine decodes on top
        // (one token of slack for a tokenization that differs at the cut).
        assert!(
            decoded(&w) + (warmed - before) <= decoded(&c) + 1,
            "the warm-up decoded more than it saved"
        );
        history.push(ChatMessage::new(Role::Assistant, w.text.clone()));
    }
}

/// The question heard while the user still speaks (`so_far`: its words
/// but the last, `turn.prefill_every_ms`) is prefilled with the history:
/// the reply decodes only the rest of it, and says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_prefills_the_question_heard_so_far() {
    let cfg = common::model_config("fast");
    let history = vec![ChatMessage::new(Role::System, DEFAULT_SYSTEM_PROMPT)];
    let mut question = history.clone();
    question.push(ChatMessage::new(
        Role::User,
        "What is the capital city of France?",
    ));
    let mut runs = Vec::new();
    // An engine each: one would give the other its cells.
    for so_far in ["", "What is the capital city"] {
        let llm = engines::load_llm(&cfg).unwrap();
        let key = 1;
        let before = llm.warmed_tokens();
        llm.warm(key, history.clone(), so_far.into());
        let warmed = warmed_past(&llm, before).await - before;
        let c = llm
            .generate(key, question.clone(), Some(12))
            .unwrap()
            .collect()
            .await;
        let decoded = c.prompt_tokens - c.reused_tokens;
        println!(
            "so far {so_far:?}: warmed {warmed}, then decoded {decoded} of {} prompt tokens: {:?}",
            c.prompt_tokens, c.text
        );
        runs.push((decoded, c.text));
    }
    let (without, with) = (&runs[0], &runs[1]);
    assert_eq!(
        with.1, without.1,
        "prefilling the words heard changed the reply"
    );
    // "What is the capital city" is five words, at least five tokens.
    assert!(
        with.0 + 5 <= without.0,
        "the words heard so far were decoded again: {} against {}",
        with.0,
        without.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_batches_concurrent_conversations() {
    let cfg = common::model_config("fast");
    let llm = engines::load_llm(&cfg).unwrap();
    let started = Instant::now();
    let one = llm
        .generate(100, common::question("Name a colour."), Some(24))
        .unwrap()
        .collect()
        .await;
    let single = started.elapsed();
    let started = Instant::now();
    let gens: Vec<_> = (0..3)
        .map(|i| {
            llm.generate(200 + i, common::question("Name a colour."), Some(24))
                .unwrap()
        })
        .collect();
    let mut outs = Vec::new();
    for g in gens {
        outs.push(g.collect().await);
    }
    let three = started.elapsed();
    println!(
        "1 conversation: {:?} ({} tokens); 3 at once: {:?} ({} tokens) => {:.2}x the time for 3x the work",
        single,
        one.generated,
        three,
        outs.iter().map(|c| c.generated).sum::<usize>(),
        three.as_secs_f64() / single.as_secs_f64()
    );
    for c in &outs {
        assert_eq!(
            c.text, one.text,
            "greedy decoding differs between batched sequences"
        );
    }
}

/// The most times any run of four words occurs in `text`.
fn max_4gram_repeats(text: &str) -> usize {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric() && c != '/')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut counts = std::collections::HashMap::new();
    for w in words.windows(4) {
        *counts.entry(w.join(" ")).or_insert(0usize) += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

/// The LLM's reply to `ask`, and the most times a run of four words occurs in it.
async fn ask_counting_repeats(
    llm: &voxloop::pipeline::llm::Llm,
    ask: &str,
) -> (voxloop::pipeline::llm::Completion, usize) {
    let c = llm
        .generate(1, common::question(ask), None)
        .unwrap()
        .collect()
        .await;
    let n = max_4gram_repeats(&c.text);
    (c, n)
}

/// Greedy decoding of a small model loops on list-like answers ("sunscreen,"
/// 68 times, "1/2 cup of flour" 11 times with the penalty off); the
/// repetition penalty, on by default, keeps a reply from saying the same
/// words over and over. The penalty-off figures are printed beside, for
/// the two asks that loop without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_replies_do_not_loop() {
    let asks = [
        "Give me a recipe for pancakes.",
        "What should I pack for a trip to the beach?",
        "Recommend a good book.",
        "List the ingredients of a cake.",
    ];
    let mut off = common::model_config("default");
    off.inference.llm_repeat_penalty = 1.0;
    let llm = engines::load_llm(&off).expect("load the default LLM");
    for ask in &asks[..2] {
        let (c, n) = ask_counting_repeats(&llm, ask).await;
        println!(
            "penalty off: {ask:?}: the most repeated 4 words x{n} in {} tokens",
            c.generated
        );
    }
    drop(llm);
    let cfg = common::model_config("default");
    let penalty = cfg.inference.llm_repeat_penalty;
    let llm = engines::load_llm(&cfg).expect("load the default LLM");
    for ask in asks {
        let (c, n) = ask_counting_repeats(&llm, ask).await;
        println!(
            "penalty {penalty}: {ask:?}: the most repeated 4 words x{n} (bound 3, margin {}) in {} tokens: {:?}",
            3 - n.min(3) as i64,
            c.generated,
            c.text
        );
        // Three times is where a loop shows; a reply that does not loop
        // says a run of four words once or twice.
        assert!(n <= 3, "the reply to {ask:?} loops: {:?}", c.text);
    }
}
