//! Prompts heard exactly once, against a real `nats-server`, real servers
//! killed with SIGKILL, and real WebRTC clients with the speech pipeline:
//! a prompt is acked only after its last frame played, which prompts a
//! session heard is remembered in JetStream (not in the dead process), and
//! a prompt that cannot be synthesized is retried, then given up.

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::Nats;
use common::bus::*;
use serde_json::json;
use voxloop::client::Client;
use voxloop::events::Event;

/// Every `prompt` event the client sees within `secs`, by id.
async fn prompts_seen(client: &mut Client, secs: u64) -> Vec<String> {
    let mut seen = Vec::new();
    let _ = client
        .wait_for(Duration::from_secs(secs), |e| {
            if let Event::Prompt { id, .. } = e {
                seen.push(id);
            }
            None::<()>
        })
        .await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_no_prompt_and_repeats_none() {
    const SESSION: &str = "heard-once-0001";
    let nats = Nats::start().await;
    let events = Events::subscribe(&nats.url).await;
    let js = js(&nats.url).await;
    let first = serve(&nats, &[]);
    wait_stream(&js).await;
    let mut client = resume(&first, SESSION).await;

    // One prompt heard to its end (acked), one still queued behind it.
    let heard =
        json!({"id": "once-heard", "text": "Shall I tell you about the new opening hours?"});
    publish_prompt(&js, SESSION, heard.clone()).await;
    prompt_ev(&mut client, 30, |id| id == "once-heard").await;
    publish_prompt(
        &js,
        SESSION,
        json!({"id": "once-queued", "text": "Would you like a reminder tomorrow?"}),
    )
    .await;
    events
        .wait("voxloop.event.prompt.spoken", 30, |v| {
            v["prompt_id"] == "once-heard"
        })
        .await;
    // SIGKILL while the second waits for its moment: nothing acked it.
    drop(first);
    drop(client);

    let second = serve(&nats, &[]);
    let mut client = resume(&second, SESSION).await;
    // The same id again, as a publisher retrying after its dedupe window.
    publish_prompt(&js, SESSION, heard).await;
    let t0 = Instant::now();
    // The queued one comes back when its ack deadline (30 s) lapses.
    let (id, _) = prompt_ev(&mut client, 60, |id| id == "once-queued").await;
    println!(
        "{id} redelivered and spoken {:.1} s after the restart",
        t0.elapsed().as_secs_f64()
    );
    events
        .wait("voxloop.event.prompt.spoken", 30, |v| {
            v["prompt_id"] == "once-queued"
        })
        .await;
    let dup = events
        .wait("voxloop.event.prompt.dropped", 10, |v| {
            v["prompt_id"] == "once-heard"
        })
        .await;
    assert_eq!(dup["reason"], "duplicate", "{dup}");
    let later = prompts_seen(&mut client, 3).await;
    assert!(
        !later
            .iter()
            .any(|id| id == "once-heard" || id == "once-queued"),
        "a prompt was spoken twice: {later:?}"
    );
    for id in ["once-heard", "once-queued"] {
        let n = events.count("voxloop.event.prompt.spoken", |v| v["prompt_id"] == id);
        assert_eq!(n, 1, "{id} spoken {n} times");
    }
    client.bye().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_that_cannot_be_synthesized_is_retried_then_given_up() {
    const SESSION: &str = "unspeakable-01";
    const DELAY_MS: u64 = 1500;
    let nats = Nats::start().await;
    let events = Events::subscribe(&nats.url).await;
    let js = js(&nats.url).await;
    let dir = std::env::temp_dir().join(format!("voxloop-retry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("config dir");
    let conf = dir.join("voxloop.toml");
    std::fs::write(
        &conf,
        format!("[prompts]\nmax_deliveries = 3\nretry_delay_ms = {DELAY_MS}\n"),
    )
    .expect("config");
    let server = common::Server::start(
        &["--pipeline", "speech", "--config", conf.to_str().unwrap()],
        &[
            ("VOXLOOP_MODELS_PROFILE", "fast"),
            ("VOXLOOP_NATS_URL", nats.url.as_str()),
            ("VOXLOOP_PROMPT_GRACE_MS", "300"),
        ],
    );
    wait_stream(&js).await;
    let mut client = resume(&server, SESSION).await;
    let t0 = Instant::now();
    // An ellipsis alone: the voice has nothing to say for it.
    publish_prompt(&js, SESSION, json!({"id": "silent", "text": "…"})).await;
    let dropped = events
        .wait("voxloop.event.prompt.dropped", 40, |v| {
            v["prompt_id"] == "silent"
        })
        .await;
    let took = t0.elapsed();
    println!(
        "given up after {:.1} s (3 deliveries, {DELAY_MS} ms apart): {dropped}",
        took.as_secs_f64()
    );
    assert_eq!(dropped["reason"], "tts_failed");
    assert_eq!(dropped["detail"], "synthesis failed on every delivery");
    assert!(
        took >= Duration::from_millis(2 * DELAY_MS),
        "given up before two retries: {took:?}"
    );
    let tries = prompts_seen(&mut client, 1).await;
    assert_eq!(
        tries.iter().filter(|id| *id == "silent").count(),
        3,
        "deliveries tried: {tries:?}"
    );
    // Terminated, so never delivered again.
    tokio::time::sleep(Duration::from_millis(2 * DELAY_MS)).await;
    let n = events.count("voxloop.event.prompt.dropped", |v| {
        v["prompt_id"] == "silent"
    });
    assert_eq!(n, 1, "dropped {n} times");
    client.bye().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// More prompts for absent sessions than the prompt consumer's ack-pending
/// window (1024) must not hold up a prompt for a live session: they wait in
/// the parked stream, and the one whose session comes back is spoken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_for_absent_sessions_hold_up_nobody() {
    const ABSENT: usize = 1100;
    let nats = Nats::start().await;
    let events = Events::subscribe(&nats.url).await;
    let js = js(&nats.url).await;
    let server = serve(&nats, &[("VOXLOOP_PROMPT_RECONNECT_MS", "60000")]);
    wait_stream(&js).await;
    let t0 = Instant::now();
    for i in 0..ABSENT {
        publish_prompt(
            &js,
            &format!("absent-{i:05}"),
            json!({"id": format!("for-absent-{i}"), "text": "Are you still there?"}),
        )
        .await;
    }
    println!(
        "{ABSENT} prompts for absent sessions published in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let mut live = connect(&server).await;
    let t1 = Instant::now();
    publish_prompt(
        &js,
        &live.session_id,
        json!({"id": "for-the-live-one", "text": "Shall I read you the summary?"}),
    )
    .await;
    // Before parking, this waited the whole reconnect wait (60 s).
    prompt_ev(&mut live, 30, |id| id == "for-the-live-one").await;
    println!(
        "the live session's prompt was spoken {:.1} s after it was published",
        t1.elapsed().as_secs_f64()
    );
    let mut consumer: jetstream::consumer::PullConsumer = js
        .get_stream("VOXLOOP_PROMPTS")
        .await
        .expect("prompt stream")
        .get_consumer("voxloop-server")
        .await
        .expect("prompt consumer");
    let pending = consumer
        .info()
        .await
        .expect("consumer info")
        .num_ack_pending;
    println!("ack pending on the prompt consumer: {pending} (window 1024)");
    assert!(
        pending < 100,
        "{pending} prompts hold the consumer's window"
    );

    // An absent session that comes back hears its prompt.
    let mut back = resume(&server, "absent-00007").await;
    prompt_ev(&mut back, 30, |id| id == "for-absent-7").await;
    events
        .wait("voxloop.event.prompt.spoken", 20, |v| {
            v["prompt_id"] == "for-absent-7"
        })
        .await;
    let parked = server.metric("voxloop_prompts_parked_total").await as usize;
    println!("prompts parked: {parked}");
    assert!(parked >= ABSENT, "only {parked} of {ABSENT} were parked");
    live.bye().await;
    back.bye().await;
}

/// nats-server stopped for a minute mid-conversation: the voice goes on
/// (a user comes back and is answered), and the prompts waiting when NATS
/// stopped are spoken after it, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_without_nats_loses_no_prompt_and_repeats_none() {
    const AWAY: &str = "away-for-a-minute";
    let mut nats = Nats::start().await;
    let js = js(&nats.url).await;
    // Longer than the outage: the parked prompt must outlive it.
    let server = serve(&nats, &[("VOXLOOP_PROMPT_RECONNECT_MS", "180000")]);
    wait_stream(&js).await;
    let mut live = connect(&server).await;
    wait_nats_state(&server, "connected", 10).await;
    assert!(
        live.wait_open(Duration::from_secs(10)).await,
        "events channel open"
    );

    // A prompt for a user who is away: parked until they come back.
    publish_prompt(
        &js,
        AWAY,
        json!({"id": "for-the-away-one", "text": "Welcome back. Shall we go on?"}),
    )
    .await;
    // One for the live user, queued behind a reply in progress.
    assert!(live.send_text("Tell me about the history of Rome.").await);
    speaking(&mut live, 30).await;
    publish_prompt(
        &js,
        &live.session_id,
        json!({"id": "behind-the-reply", "text": "Would you like the museum hours too?"}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("voxloop_prompts_parked_total").await < 1.0
        || server.metric("voxloop_prompts_received_total").await < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the prompts never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    nats.stop();
    let outage = Instant::now();
    wait_nats_state(&server, "disconnected", 10).await;
    // The voice goes on: the live user's queued prompt is spoken after the
    // reply, and the away user comes back and is answered.
    prompt_ev(&mut live, 60, |id| id == "behind-the-reply").await;
    let mut back = resume(&server, AWAY).await;
    assert!(
        back.wait_open(Duration::from_secs(10)).await,
        "events channel open"
    );
    assert!(back.send_text("What is the capital of Italy?").await);
    let answer = reply_ev(&mut back, 60, None).await;
    println!(
        "answered {:.1} s into the outage: {answer:?}",
        outage.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(outage.elapsed())).await;

    nats.restart().await;
    wait_nats_state(&server, "connected", 30).await;
    let back_at = Instant::now();
    prompt_ev(&mut back, 60, |id| id == "for-the-away-one").await;
    println!(
        "the parked prompt was spoken {:.1} s after NATS came back",
        back_at.elapsed().as_secs_f64()
    );
    // Long enough for a redelivery after the 30 s ack deadline.
    let (later_back, later_live) =
        tokio::join!(prompts_seen(&mut back, 40), prompts_seen(&mut live, 40));
    assert!(
        !later_back.iter().any(|id| id == "for-the-away-one"),
        "spoken twice: {later_back:?}"
    );
    assert!(
        !later_live.iter().any(|id| id == "behind-the-reply"),
        "spoken twice: {later_live:?}"
    );
    live.bye().await;
    back.bye().await;
}
