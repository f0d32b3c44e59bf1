//! Conversation events on a real `nats-server` (JetStream, random port, own
//! store) and the intent worker that follows them up, with real WebRTC
//! clients and the real speech pipeline (fast models). The prompts the
//! server speaks are tested in `tests/nats.rs`.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bus::*;
use common::{Nats, Server, clip48};
use serde_json::{Value, json};
use voxloop::WIRE_RATE;
use voxloop::events::{BusEvent, Event};
use voxloop::text::wer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_turn_publishes_ordered_events_and_the_http_api_works() {
    let nats = Nats::start().await;
    let server = serve(&nats, &[]);
    let events = Events::subscribe(&nats.url).await;
    wait_stream(&js(&nats.url).await).await;
    let mut client = connect(&server).await;
    let sid = client.session_id.clone();

    // GET /sessions lists it.
    let (status, body) = server.get("/sessions").await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).expect("json");
    assert!(
        list["sessions"]
            .as_array()
            .expect("array")
            .iter()
            .any(|s| s["id"] == sid.as_str()),
        "{body}"
    );

    // A spoken turn.
    let mut pcm = clip48("q01_capital_france.wav");
    pcm.extend(std::iter::repeat_n(0.0, WIRE_RATE as usize * 2));
    client.send_pcm(&pcm, 1.0).await.expect("send");
    let reply = reply_ev(&mut client, 40, None).await;
    assert!(reply.to_lowercase().contains("paris"), "{reply}");
    listening(&mut client, 30).await;

    // A typed turn (data channel): answered like a spoken one.
    assert!(client.send_text("What is the capital of Italy?").await);
    let turn = wait_ev(&mut client, 20, |e| match e {
        Event::Transcript {
            turn, typed: true, ..
        } => Some(turn),
        _ => None,
    })
    .await;
    assert_eq!(turn, 2);
    let reply = reply_ev(&mut client, 40, Some(2)).await;
    assert!(reply.to_lowercase().contains("rome"), "{reply}");
    listening(&mut client, 30).await;

    // POST /sessions/{id}/prompt, waiting for the outcome.
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/sessions/{sid}/prompt?wait=true", server.url))
        .header("content-type", "application/json")
        .body(json!({"text": "Anything else I can help with?"}).to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    let out: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    assert_eq!(out["status"], "spoken", "{out}");
    assert_eq!(out["turn"], 3);
    let resp = http
        .post(format!("{}/sessions/not-a-live-session/prompt", server.url))
        .header("content-type", "application/json")
        .body(json!({"text": "Hello?"}).to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 404);
    let resp = http
        .post(format!("{}/sessions/{sid}/prompt", server.url))
        .header("content-type", "application/json")
        .body("{\"text\": 5}")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 400);
    let err: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    assert_eq!(err["error"]["code"], "bad_payload");
    // JSON only: a cross-site form posts text/plain without a preflight.
    let resp = http
        .post(format!("{}/sessions/{sid}/prompt", server.url))
        .header("content-type", "text/plain")
        .body(json!({"text": "Hello?"}).to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 415);
    let err: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    assert_eq!(err["error"]["code"], "bad_content_type");
    listening(&mut client, 30).await;
    client.bye().await;
    assert!(server.sessions_drained(Duration::from_secs(10)).await);

    // The bus saw the whole conversation, in order, with consistent turns.
    events
        .wait("voxloop.event.session.ended", 10, |v| {
            v["session_id"] == sid.as_str()
        })
        .await;
    let mine: Vec<(String, Value)> = events
        .all()
        .into_iter()
        .filter(|(_, v)| v["session_id"] == sid.as_str())
        .collect();
    let kinds: Vec<&str> = mine
        .iter()
        .map(|(s, _)| s.trim_start_matches("voxloop.event."))
        .collect();
    println!("events: {kinds:?}");
    // Prompt outcomes are published by the router, beside the session's
    // own stream of events; everything else is in conversation order.
    let conversation: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|k| !k.starts_with("prompt."))
        .collect();
    assert_eq!(
        conversation,
        [
            "session.started",
            "transcript",
            "reply",
            "transcript",
            "reply",
            "reply",
            "session.ended"
        ]
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "prompt.spoken").count(),
        1,
        "{kinds:?}"
    );
    let seqs: Vec<u64> = mine
        .iter()
        .map(|(_, v)| v["seq"].as_u64().expect("seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq gaps: {seqs:?}"
    );
    let turn_of = |kind: &str, n: usize| -> u64 {
        mine.iter()
            .filter(|(s, _)| s.ends_with(kind))
            .nth(n)
            .map(|(_, v)| v["turn"].as_u64().expect("turn"))
            .unwrap_or_else(|| panic!("no {kind} #{n}"))
    };
    assert_eq!(kinds.first(), Some(&"session.started"));
    assert_eq!(kinds.last(), Some(&"session.ended"));
    assert_eq!(turn_of(".transcript", 0), 1);
    assert_eq!(turn_of(".reply", 0), 1);
    assert_eq!(turn_of(".transcript", 1), 2);
    assert_eq!(turn_of(".reply", 1), 2);
    assert_eq!(turn_of(".prompt.spoken", 0), 3);
    let first_transcript = kinds
        .iter()
        .position(|k| *k == "transcript")
        .expect("transcript");
    let first_reply = kinds.iter().position(|k| *k == "reply").expect("reply");
    assert!(first_transcript < first_reply);
    // Every payload is a typed bus event whose kind is its subject.
    for (subject, v) in &mine {
        let ev: BusEvent = serde_json::from_value(v.clone())
            .unwrap_or_else(|e| panic!("{subject}: not a BusEvent ({e}): {v}"));
        assert_eq!(
            subject.trim_start_matches("voxloop.event."),
            ev.event.kind(),
            "{v}"
        );
        assert_eq!(ev.session_id.as_deref(), Some(sid.as_str()));
    }
    for (_, v) in &mine {
        let at = v["at"].as_str().expect("at");
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339 timestamp");
    }
    // Events are in the stream too, for consumers that replay.
    let stream = js(&nats.url)
        .await
        .get_stream("VOXLOOP_EVENTS")
        .await
        .expect("event stream");
    let info = stream.get_info().await.expect("info");
    assert!(info.state.messages >= mine.len() as u64);
    assert_eq!(server.metric("voxloop_bus_events_dropped_total").await, 0.0);
}

/// `voxloop intent-worker` as a process: it logs lines we wait for.
struct Worker {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn start(nats: &Nats) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_voxloop"))
            .args(["intent-worker", "--quiet", "3s", "--nats-url", &nats.url])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("VOXLOOP_CONFIG")
            .env("VOXLOOP_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn intent-worker");
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                println!("[worker] {line}");
                l.lock().unwrap().push(line);
            }
        });
        Worker { child, lines }
    }

    async fn wait_line(&self, prefix: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "worker printed no {prefix:?} line in {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intent_worker_follows_up_on_a_quiet_user() {
    let nats = Nats::start().await;
    let server = serve(&nats, &[]);
    let js = js(&nats.url).await;
    wait_stream(&js).await;
    let worker = Worker::start(&nats);
    worker.wait_line("intent-worker: ready", 60).await;
    let events = Events::subscribe(&nats.url).await;
    let mut client = connect(&server).await;
    let mut pcm = clip48("q04_book.wav");
    pcm.extend(std::iter::repeat_n(0.0, WIRE_RATE as usize * 2));
    client.send_pcm(&pcm, 1.0).await.expect("send");
    reply_ev(&mut client, 40, None).await;
    listening(&mut client, 40).await;
    let t0 = Instant::now();
    // The user says nothing more: the worker's follow-up is spoken.
    let (_, question) = prompt_ev(&mut client, 60, |id| id.starts_with("followup-")).await;
    println!(
        "follow-up spoken {} ms after the reply: {question:?}",
        t0.elapsed().as_millis()
    );
    assert!(question.ends_with('?'), "{question}");
    assert!(question.split_whitespace().count() >= 3, "{question}");
    let line = worker.wait_line("followup:", 5).await;
    assert!(line.contains(&client.session_id), "{line}");
    events
        .wait("voxloop.event.prompt.spoken", 20, |v| {
            v["prompt_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("followup-"))
        })
        .await;
    listening(&mut client, 30).await;
    let said = asr()
        .transcribe(audio_since(&client, t0))
        .await
        .expect("asr");
    let w = wer(&question, &said.text);
    println!(
        "follow-up audio heard as {:?} (WER {:.0} %, bound 35 %, margin {:.0} points)",
        said.text,
        w * 100.0,
        35.0 - w * 100.0
    );
    assert!(w <= 0.35, "follow-up audio does not say the question");
    client.bye().await;
}

/// A resumed session's events are stored, not discarded as duplicates of
/// the earlier connection's (`Nats-Msg-Id` carries a connection tag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_sessions_events_are_not_taken_for_duplicates() {
    let nats = Nats::start().await;
    let server = Server::start(
        &["--pipeline", "echo"],
        &[("VOXLOOP_NATS_URL", nats.url.as_str())],
    );
    wait_nats_state(&server, "connected", 10).await;
    let stream_count = || async {
        let mut stream = js(&nats.url)
            .await
            .get_stream("VOXLOOP_EVENTS")
            .await
            .expect("event stream");
        stream.info().await.expect("info").state.messages
    };
    let settled = |want_above: u64| async move {
        // Publishing is asynchronous: wait until the count stops moving.
        let mut last = 0;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let n = stream_count().await;
            if n > want_above && n == last {
                return n;
            }
            last = n;
        }
        last
    };
    let mut stored = Vec::new();
    for round in 0..2 {
        let client = resume(&server, "resume-events-01").await;
        client.bye().await;
        assert!(server.sessions_drained(Duration::from_secs(10)).await);
        let n = settled(stored.last().copied().unwrap_or(0)).await;
        println!("after connection {}: {n} events stored", round + 1);
        stored.push(n);
    }
    assert!(
        stored[0] >= 2,
        "a connection stores session.started and .ended: {stored:?}"
    );
    assert_eq!(
        stored[1],
        2 * stored[0],
        "the resumed connection stored as many events as the first"
    );
}
