//! Jobs on real `voxloop worker` processes over a real `nats-server`: the
//! knowledge base's documents embedded on an `embed` worker (and by the
//! server itself without one), a worker refusing at once what it cannot
//! start in time, how soon a cancel stops a reply, and a conversation's
//! next prompt prefilled on the worker holding it.

mod common;

use std::time::{Duration, Instant};

use common::worker::{Worker, of, stats};
use common::{Nats, Server};
use serde_json::Value;
use voxloop::pipeline::llm::{ChatMessage, Role as ChatRole};
use voxloop::remote::InferSubjects;
use voxloop::remote::call::{self, Ask, CallError, Stream};
use voxloop::remote::wire::{self, Control, Job, Part, Summary};

async fn nats_client(nats: &Nats) -> async_nats::Client {
    async_nats::connect(&nats.url).await.expect("nats")
}

/// `PUT /kb/docs/{name}`: the status and the JSON answer.
async fn put(server: &Server, name: &str, body: String) -> (u16, Value) {
    let (status, text) = server.put(&format!("/kb/docs/{name}"), body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `GET /kb/search`: (doc, similarity) of the hits.
async fn search(server: &Server, q: &str, k: usize) -> Vec<(String, f64)> {
    let (status, body) = server
        .get(&format!("/kb/search?q={}&k={k}", q.replace(' ', "+")))
        .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let doc = h["doc"].as_str().unwrap().to_string();
            (doc, h["similarity"].as_f64().unwrap())
        })
        .collect()
}

const EMBED_FAILED: &str = "voxloop_remote_failures_total{role=\"embed\",kind=\"no_workers\"}";
const EMBED_DONE: &str = "voxloop_remote_embed_seconds_count";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_embedded_on_an_embed_worker_and_here_without_one() {
    let nats = Nats::start().await;
    let server = common::bus::serve(&nats, &[("VOXLOOP_INFERENCE", "nats")]);
    let parking = "Parking is free behind the bakery on Elm Court.".to_string();
    // No embed worker: the server embeds the document itself.
    let (status, body) = put(&server, "parking.txt", parking.clone()).await;
    assert_eq!(status, 201, "{body}");
    let missed = server.metric(EMBED_FAILED).await;
    println!("without a worker: {body}; {EMBED_FAILED} = {missed}");
    assert!(missed >= 1.0, "the server never asked for an embed worker");

    let worker = Worker::start(&nats, "embed");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, h) = server.get("/healthz").await;
        let h: Value = serde_json::from_str(&h).unwrap();
        if h["workers"]["embed"].as_u64() >= Some(1) {
            break;
        }
        assert!(Instant::now() < until, "the embed worker never showed: {h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The same text through the worker: the same vector, to the float.
    let (status, body) = put(&server, "parking-copy.txt", parking).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        server.metric(EMBED_DONE).await,
        1.0,
        "one job for one chunk"
    );
    let hits = search(&server, "Where can I park my car", 2).await;
    println!("hits: {hits:?}");
    let sim = |d: &str| hits.iter().find(|h| h.0 == d).map(|h| h.1);
    let (here, there) = (sim("parking.txt"), sim("parking-copy.txt"));
    assert!(here.is_some() && there.is_some(), "{hits:?}");
    assert!(
        (here.unwrap() - there.unwrap()).abs() < 1e-6,
        "embedded here {here:?}, on the worker {there:?}"
    );

    // A document of more chunks than one job takes goes in several jobs.
    let long: String = (1..=80)
        .map(|i| format!("Shelf {i} of the bakery holds loaves baked with recipe number {i}.\n\n"))
        .collect();
    let t0 = Instant::now();
    let (status, body) = put(&server, "shelves.md", long).await;
    let took = t0.elapsed();
    assert_eq!(status, 201, "{body}");
    let chunks = body["doc"]["chunks"].as_u64().unwrap();
    let jobs = server.metric(EMBED_DONE).await - 1.0;
    println!("{chunks} chunks embedded in {jobs} jobs on the worker: {took:?}");
    assert!(chunks > 64, "{body}");
    assert!(jobs >= 2.0, "{jobs} jobs for {chunks} chunks");
    assert_eq!(
        server.metric(EMBED_FAILED).await,
        missed,
        "a fallback with a worker up"
    );
    let top = search(&server, "Which shelf has recipe number 37", 1).await;
    assert_eq!(top.first().map(|h| h.0.as_str()), Some("shelves.md"));

    let nc = nats_client(&nats).await;
    let all = stats(&nc).await;
    let w = of(&all, &worker.id).expect("worker stats");
    let completed = common::worker::load(w, "completed");
    println!("embed worker: {completed} jobs completed");
    assert_eq!(completed as f64, jobs + 1.0);
}

/// A reply job for `question`, at most `max_tokens` long, under `key`.
fn reply_job(key: u64, question: &str, max_tokens: usize) -> Job {
    Job::Llm {
        key,
        messages: vec![ChatMessage::new(ChatRole::User, question)],
        max_tokens: Some(max_tokens),
    }
}

/// Tokens until the end of the stream, and how it ended.
async fn drain(mut s: Stream) -> (usize, Result<(), CallError>) {
    let mut tokens = 0;
    loop {
        match s.next().await {
            Ok((Part::Token { .. }, _)) => tokens += 1,
            Ok((Part::Done { .. }, _)) => return (tokens, Ok(())),
            Ok((other, _)) => panic!("unexpected {other:?}"),
            Err(e) => return (tokens, Err(e)),
        }
    }
}

const STORY: &str = "Tell me a long story about a baker and a lighthouse.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_at_once_what_it_cannot_start_in_time() {
    let nats = Nats::start().await;
    // One sequence at a time, nine held: the queue limit is not what refuses.
    let worker = Worker::start_with(&nats, "llm", &[("VOXLOOP_LLM_SLOTS", "1")]);
    let nc = nats_client(&nats).await;
    let subjects = InferSubjects::new("voxloop");
    let far = || Instant::now() + Duration::from_secs(60);
    // The worker learns its pace from replies that did not queue.
    for key in 1..=2 {
        let s = call::start(
            &nc,
            &subjects,
            reply_job(key, STORY, 24),
            &[],
            Ask::by(far()),
        )
        .await
        .expect("a free worker takes a reply");
        assert!(drain(s).await.1.is_ok());
    }
    let all = stats(&nc).await;
    let llm = &of(&all, &worker.id).expect("stats").endpoints[0].load;
    let pace = llm["pace_ms"].as_u64().expect("pace_ms");
    println!("worker pace: {pace} ms per reply; stats {llm}");
    assert!(pace > 0);
    // Six at once, each to start within two replies' time: the worker
    // expects waits of 0, ½, 1½, 2½ … paces, so three fit.
    let within = Duration::from_millis(pace * 2);
    let asks = (0..6u64).map(|i| {
        let (nc, subjects) = (nc.clone(), subjects.clone());
        async move {
            let t0 = Instant::now();
            let ask = Ask {
                start_within: Some(within),
                ..Ask::by(far())
            };
            let r = call::start(&nc, &subjects, reply_job(10 + i, STORY, 24), &[], ask).await;
            let answered = t0.elapsed();
            let first_token = match r {
                Ok(mut s) => loop {
                    match s.next().await {
                        Ok((Part::Token { .. }, _)) => break Ok(t0.elapsed()),
                        Ok(_) => {}
                        Err(e) => break Err(e),
                    }
                },
                Err(e) => Err(e),
            };
            (answered, first_token)
        }
    });
    let results = futures::future::join_all(asks).await;
    let mut started = Vec::new();
    let mut refused = Vec::new();
    for (answered, r) in &results {
        match r {
            Ok(t) => started.push(*t),
            Err(CallError::Busy) => refused.push(*answered),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    println!(
        "start within {within:?}: {} started (first tokens after {started:?}), {} refused busy (answered after {refused:?})",
        started.len(),
        refused.len()
    );
    assert!(started.len() >= 2, "{results:?}");
    assert!(!refused.is_empty(), "every reply was queued: {results:?}");
    let all = stats(&nc).await;
    let llm = &of(&all, &worker.id).expect("stats").endpoints[0].load;
    println!("worker after: {llm}");
    assert!(llm["busy_refusals"].as_u64() >= Some(refused.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_a_remote_reply_within_a_decode_step() {
    let nats = Nats::start().await;
    let worker = Worker::start(&nats, "llm");
    let nc = nats_client(&nats).await;
    let subjects = InferSubjects::new("voxloop");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut s = call::start(
        &nc,
        &subjects,
        reply_job(1, STORY, 400),
        &[],
        Ask::by(deadline),
    )
    .await
    .expect("a free worker takes a reply");
    let mut stamps = Vec::new();
    while stamps.len() < 8 {
        match s.next().await {
            Ok((Part::Token { .. }, _)) => stamps.push(Instant::now()),
            other => panic!("the reply ended before 8 tokens: {other:?}"),
        }
    }
    let step = (stamps[7] - stamps[1]) / 6;
    let t0 = Instant::now();
    s.cancel().await.expect("cancel sent");
    let (after, end) = drain(s).await;
    let took = t0.elapsed();
    println!(
        "cancel: the stream ended {:.1} ms after it was sent, {after} tokens later; a decode step takes {:.1} ms",
        took.as_secs_f64() * 1e3,
        step.as_secs_f64() * 1e3
    );
    assert_eq!(end, Err(CallError::Failed("cancelled".into())));
    // The token being decoded when the cancel came, and one on the wire.
    assert!(after <= 2, "{after} tokens after the cancel");
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let all = stats(&nc).await;
        let llm = &of(&all, &worker.id).expect("stats").endpoints[0].load;
        if llm["in_flight"] == 0 {
            assert_eq!(llm["failed"], 1, "{llm}");
            break;
        }
        assert!(Instant::now() < until, "the job still runs: {llm}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A reply's text and summary.
async fn reply(mut s: Stream) -> (String, Summary) {
    let mut text = String::new();
    loop {
        match s.next().await.expect("the reply streams") {
            (Part::Token { text: t }, _) => text.push_str(&t),
            (Part::Done { summary }, _) => return (text, summary.expect("an LLM summary")),
            (other, _) => panic!("unexpected {other:?}"),
        }
    }
}

/// The server sends a conversation's history to the worker holding it
/// while its user listens (`Control::Warm`): the worker prefills the next
/// prompt, and the next reply decodes less of it than on a worker that
/// was not told. Each case on a fresh worker, so no cells are shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_prefills_the_next_prompt_it_is_told_about() {
    let nats = Nats::start().await;
    let nc = nats_client(&nats).await;
    let subjects = InferSubjects::new("voxloop");
    let mut decoded = Vec::new();
    for warm in [true, false] {
        let worker = Worker::start(&nats, "llm");
        let ask = |messages: Vec<ChatMessage>| {
            let job = Job::Llm {
                key: 1,
                messages,
                max_tokens: Some(12),
            };
            call::start(
                &nc,
                &subjects,
                job,
                &[],
                Ask::by(Instant::now() + Duration::from_secs(60)),
            )
        };
        let mut history = vec![ChatMessage::new(ChatRole::User, "Name a colour.")];
        let (text, _) = reply(ask(history.clone()).await.expect("a reply")).await;
        history.push(ChatMessage::new(ChatRole::Assistant, text));
        let mut warmed = 0;
        if warm {
            let msg = Control::Warm {
                key: 1,
                messages: history.clone(),
                so_far: String::new(),
            };
            nc.publish(subjects.control(&worker.id), wire::encode(&msg, &[]))
                .await
                .expect("publish");
            let until = Instant::now() + Duration::from_secs(30);
            while warmed == 0 {
                assert!(Instant::now() < until, "the worker prefilled nothing");
                tokio::time::sleep(Duration::from_millis(50)).await;
                let all = stats(&nc).await;
                let llm = &of(&all, &worker.id).expect("stats").endpoints[0].load;
                warmed = llm["warmed_tokens"].as_u64().expect("warmed_tokens");
            }
        }
        history.push(ChatMessage::new(ChatRole::User, "And another one?"));
        let (_, s) = reply(ask(history).await.expect("a reply")).await;
        println!(
            "told: {warm}; prefilled {warmed}; next reply: {} prompt tokens, {} decoded",
            s.prompt_tokens,
            s.prompt_tokens - s.reused_tokens
        );
        decoded.push(s.prompt_tokens - s.reused_tokens);
    }
    assert!(
        decoded[0] < decoded[1],
        "the warm-up saved nothing: {decoded:?}"
    );
}
