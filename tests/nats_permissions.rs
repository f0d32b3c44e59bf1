//! The NATS permission layout of docs/nats-permissions.conf, on a real
//! `nats-server`: a server, an inference worker and a prompt publisher,
//! each logged in as its own user, run a spoken prompt and a typed turn
//! end to end; and what each role may not do is refused by NATS.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bus::*;
use common::worker::Worker;
use common::{Nats, Server};
use voxloop::events::Event;

const LAYOUT: &str = include_str!("../docs/nats-permissions.conf");

fn login(nats: &Nats, user: &str, password: &str) -> String {
    nats.url
        .replacen("nats://", &format!("nats://{user}:{password}@"), 1)
}

/// A client logged in as `user`, and the permission errors NATS sends it.
async fn client_as(
    nats: &Nats,
    user: &str,
    password: &str,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .event_callback(move |ev| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = ev {
                    seen.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(&nats.url)
        .await
        .expect("login");
    (client, errors)
}

/// Wait until NATS has refused something whose error names `subject`.
async fn refused(errors: &Arc<Mutex<Vec<String>>>, subject: &str) -> String {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(e) = errors
            .lock()
            .unwrap()
            .iter()
            .find(|e| e.to_lowercase().contains("permissions violation") && e.contains(subject))
        {
            return e.clone();
        }
        assert!(
            Instant::now() < until,
            "NATS did not refuse {subject}: {:?}",
            errors.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_works_with_its_permissions_and_no_more() {
    let nats = Nats::start_with(LAYOUT, Some(("voxloop-server", "change-me-server"))).await;
    let server_login = [
        ("VOXLOOP_INFERENCE", "nats"),
        ("VOXLOOP_NATS_USER", "voxloop-server"),
        ("VOXLOOP_NATS_PASSWORD", "change-me-server"),
    ];
    let server: Server = serve(&nats, &server_login);
    let _worker = Worker::start_with(
        &nats,
        "asr,llm,tts",
        &[
            ("VOXLOOP_NATS_USER", "voxloop-worker"),
            ("VOXLOOP_NATS_PASSWORD", "change-me-worker"),
        ],
    );
    wait_nats_state(&server, "connected", 20).await;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = server.get("/healthz").await;
        let v: serde_json::Value = serde_json::from_str(&body).expect("healthz json");
        if ["asr", "llm", "tts"]
            .iter()
            .all(|r| v["workers"][r].as_u64().is_some_and(|n| n >= 1))
        {
            break;
        }
        assert!(Instant::now() < until, "the worker never showed up: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A typed turn: the server asks the worker, the worker answers.
    let mut client = connect(&server).await;
    assert!(
        client.wait_open(Duration::from_secs(10)).await,
        "events channel open"
    );
    assert!(client.send_text("What is the capital of Italy?").await);
    let reply = reply_ev(&mut client, 60, None).await;
    println!("reply through the worker: {reply:?}");
    assert!(reply.to_lowercase().contains("rome"), "{reply}");
    listening(&mut client, 30).await;

    // The publisher's prompt is spoken and its outcome reaches it.
    let publisher = login(&nats, "voxloop-publisher", "change-me-publisher");
    let sid = client.session_id.clone();
    let (code, out, _) = say_async(
        &publisher,
        &[
            "--session",
            &sid,
            "--id",
            "by-the-publisher",
            "Shall I go on?",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().any(|l| l.starts_with("spoken: ")), "{out}");
    wait_ev(&mut client, 10, |e| match e {
        Event::Prompt { id, .. } if id == "by-the-publisher" => Some(()),
        _ => None,
    })
    .await;

    // What a publisher may not do: speak for a server, ask a worker,
    // listen to inference, or change the streams.
    let (pc, perr) = client_as(&nats, "voxloop-publisher", "change-me-publisher").await;
    pc.publish("voxloop.relay.broadcast", "{}".into())
        .await
        .expect("publish");
    pc.publish("voxloop.infer.llm", "{}".into())
        .await
        .expect("publish");
    let _sub = pc.subscribe("voxloop.infer.>").await.expect("subscribe");
    let _ = pc.flush().await;
    for subject in [
        "voxloop.relay.broadcast",
        "voxloop.infer.llm",
        "voxloop.infer.>",
    ] {
        println!("publisher refused: {}", refused(&perr, subject).await);
    }
    let js = async_nats::jetstream::new(pc.clone());
    let deleted =
        tokio::time::timeout(Duration::from_secs(5), js.delete_stream("VOXLOOP_PROMPTS")).await;
    assert!(
        !matches!(deleted, Ok(Ok(_))),
        "the publisher deleted the prompt stream"
    );
    println!(
        "publisher refused: {}",
        refused(&perr, "$JS.API.STREAM.DELETE.VOXLOOP_PROMPTS").await
    );

    // What a worker may not do: publish prompts or events.
    let (wc, werr) = client_as(&nats, "voxloop-worker", "change-me-worker").await;
    wc.publish("voxloop.prompt.broadcast", "{}".into())
        .await
        .expect("publish");
    wc.publish("voxloop.event.session.started", "{}".into())
        .await
        .expect("publish");
    let _ = wc.flush().await;
    for subject in ["voxloop.prompt.broadcast", "voxloop.event.session.started"] {
        println!("worker refused: {}", refused(&werr, subject).await);
    }

    // The stream is still there, and the server still serves.
    let (sc, _) = client_as(&nats, "voxloop-server", "change-me-server").await;
    wait_stream(&async_nats::jetstream::new(sc)).await;
    client.bye().await;
}
