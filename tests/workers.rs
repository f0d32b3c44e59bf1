//! Inference on `voxloop worker` processes over a real `nats-server`:
//! `serve --inference nats` holds real WebRTC sessions while ASR, LLM and
//! TTS run in the workers. A worker killed mid-reply costs one turn at
//! most, a draining worker finishes its reply, roles can be split, and no
//! worker at all is the busy line and a degraded `/healthz`, not a crash.

mod common;

use std::time::{Duration, Instant};

use common::bus::{connect, listening, reply_ev, wait_ev};
use common::worker::{Worker, load, of, stats};
use common::{Nats, Server, clip48};
use voxloop::client::Client;
use voxloop::events::Event;

fn serve(nats: &Nats) -> Server {
    common::bus::serve(nats, &[("VOXLOOP_INFERENCE", "nats")])
}

async fn nats_client(nats: &Nats) -> async_nats::Client {
    async_nats::connect(&nats.url).await.expect("nats")
}

/// Wait until `/healthz` says every role has `n` live workers or more.
async fn wait_workers(server: &Server, n: u64) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = server.get("/healthz").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let w = &v["workers"];
        if ["asr", "llm", "tts"]
            .iter()
            .all(|r| w[r].as_u64().is_some_and(|c| c >= n))
        {
            return v;
        }
        assert!(Instant::now() < until, "workers never showed up: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ask by typed text; the first `reply_delta` of that turn.
async fn ask(client: &mut Client, text: &str) {
    assert!(client.send_text(text).await, "typed text not sent");
    wait_ev(client, 30, |e| {
        matches!(e, Event::ReplyDelta { .. }).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoken_conversation_runs_on_two_workers() {
    let nats = Nats::start().await;
    let a = Worker::start(&nats, "asr,llm,tts");
    let b = Worker::start(&nats, "asr,llm,tts");
    let server = serve(&nats);
    let health = wait_workers(&server, 2).await;
    println!("healthz: {health}");
    assert_eq!(health["inference"], "nats");
    let mut client = connect(&server).await;
    assert!(client.wait_open(Duration::from_secs(10)).await);
    let mut clip = clip48("q01_capital_france.wav");
    clip.extend(vec![0.0; 48_000 * 3 / 2]);
    client.send_pcm(&clip, 1.0).await.expect("send");
    let heard = wait_ev(&mut client, 30, |e| match e {
        Event::Transcript { text, .. } => Some(text),
        _ => None,
    })
    .await;
    println!("transcript: {heard:?}");
    assert!(heard.to_lowercase().contains("france"), "{heard}");
    let reply = reply_ev(&mut client, 30, None).await;
    println!("reply: {reply:?}");
    assert!(reply.to_lowercase().contains("paris"), "{reply}");
    listening(&mut client, 30).await;
    let reply_audio = client
        .received()
        .iter()
        .filter(|f| {
            f.pcm
                .iter()
                .any(|x| x.abs() > voxloop::audio::VOICED_THRESHOLD)
        })
        .count();
    println!("voiced reply frames received: {reply_audio}");
    assert!(reply_audio > 25, "the reply was not heard");
    // NATS spreads requests at random over the queue group: a few more
    // turns until both workers have served (each turn is several requests).
    let nc = nats_client(&nats).await;
    for turn in 0..4 {
        let all = stats(&nc).await;
        let served: Vec<u64> = [&a.id, &b.id]
            .iter()
            .map(|id| of(&all, id).map_or(0, |w| load(w, "completed")))
            .collect();
        println!(
            "after {} turns, jobs completed per worker: {served:?}",
            turn + 1
        );
        if served.iter().all(|n| *n > 0) {
            let (_, metrics) = server.get("/metrics").await;
            let line = |name: &str| {
                metrics
                    .lines()
                    .find(|l| l.starts_with(name))
                    .unwrap_or("-")
                    .to_string()
            };
            println!("{}", line("voxloop_remote_asr_seconds_count"));
            println!("{}", line("voxloop_remote_llm_seconds_count"));
            println!("{}", line("voxloop_remote_tts_seconds_count"));
            assert!(server.metric("voxloop_remote_llm_seconds_count").await >= 1.0);
            return;
        }
        ask(&mut client, "Name one colour of the rainbow.").await;
        listening(&mut client, 30).await;
    }
    panic!("one worker served nothing in five turns");
}

/// The server's `voxloop_remote_failures_total{role,kind}` lines.
async fn failures(server: &Server) -> Vec<String> {
    let (_, metrics) = server.get("/metrics").await;
    metrics
        .lines()
        .filter(|l| l.starts_with("voxloop_remote_failures_total{"))
        .map(String::from)
        .collect()
}

/// The worker generating a reply now, if any.
async fn busy_worker(nc: &async_nats::Client, ids: &[&str]) -> Option<String> {
    let all = stats(nc).await;
    ids.iter()
        .find(|id| {
            of(&all, id).is_some_and(|w| {
                w.endpoints
                    .iter()
                    .any(|e| e.name.starts_with("llm") && e.load["in_flight"].as_u64() > Some(0))
            })
        })
        .map(|s| s.to_string())
}

/// Two workers, a server on them, a session, and a long reply under way:
/// also the index of the worker generating it.
struct MidReply {
    workers: [Worker; 2],
    server: Server,
    client: Client,
    victim: usize,
    _nats: Nats,
}

async fn mid_reply(question: &str) -> MidReply {
    let nats = Nats::start().await;
    let workers = [
        Worker::start(&nats, "asr,llm,tts"),
        Worker::start(&nats, "asr,llm,tts"),
    ];
    let server = serve(&nats);
    wait_workers(&server, 2).await;
    let nc = nats_client(&nats).await;
    let mut client = connect(&server).await;
    assert!(client.wait_open(Duration::from_secs(10)).await);
    ask(&mut client, question).await;
    let ids: Vec<&str> = workers.iter().map(|w| w.id.as_str()).collect();
    let busy = busy_worker(&nc, &ids)
        .await
        .expect("no worker is generating the reply");
    let victim = ids.iter().position(|id| *id == busy).unwrap();
    MidReply {
        workers,
        server,
        client,
        victim,
        _nats: nats,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_reply_costs_one_turn_at_most() {
    let MidReply {
        mut workers,
        server,
        mut client,
        victim: i,
        _nats: nats,
    } = mid_reply("Tell me a short story about a dragon who learns to bake bread.").await;
    let victim = workers[i].id.clone();
    let nc = nats_client(&nats).await;
    workers[i].kill9();
    let died = Instant::now();
    // The turn ends: with what was said, another worker's reply, the
    // fallback or the busy line; never a hang.
    let ended = wait_ev(&mut client, 20, |e| match e {
        Event::Reply { text, .. } => Some(format!("reply {text:?}")),
        Event::Busy { .. } => Some("busy line".into()),
        _ => None,
    })
    .await;
    println!(
        "worker {victim} killed mid-reply: the turn ended {} ms later with {ended}",
        died.elapsed().as_millis()
    );
    listening(&mut client, 30).await;
    // The session goes on with the other worker.
    ask(&mut client, "What is the capital of Italy?").await;
    let reply = reply_ev(&mut client, 30, None).await;
    println!("next turn: {reply:?}");
    assert!(reply.to_lowercase().contains("rome"), "{reply}");
    listening(&mut client, 30).await;
    // A restarted worker is used again, with nothing restarted elsewhere.
    let back = Worker::start(&nats, "asr,llm,tts");
    wait_workers(&server, 2).await;
    let mut used = 0;
    for _ in 0..6 {
        ask(&mut client, "Say a number between one and ten.").await;
        listening(&mut client, 30).await;
        used = of(&stats(&nc).await, &back.id).map_or(0, |w| load(w, "completed"));
        if used > 0 {
            break;
        }
    }
    println!("jobs completed by the restarted worker: {used}");
    assert!(used > 0, "the restarted worker was never used");
    let lost = failures(&server).await;
    println!("failures: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_finishes_its_reply_and_exits_0() {
    let MidReply {
        mut workers,
        server,
        mut client,
        victim: i,
        _nats,
    } = mid_reply("Tell me a short story about a cat who sails to an island.").await;
    workers[i].term();
    let (text, interrupted) = wait_ev(&mut client, 30, |e| match e {
        Event::Reply {
            text, interrupted, ..
        } => Some((text, interrupted)),
        _ => None,
    })
    .await;
    println!("reply while its worker drained: {text:?}");
    assert!(!interrupted);
    let code = workers[i].wait_exit(Duration::from_secs(30));
    println!("the draining worker exited with {code:?}");
    assert_eq!(code, Some(0));
    let failures = failures(&server).await;
    assert!(
        failures
            .iter()
            .all(|l| !l.contains("\"lost\"") && !l.contains("\"failed\"")),
        "{failures:?}"
    );
    listening(&mut client, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_workers_is_the_busy_line_then_split_roles_answer() {
    let nats = Nats::start().await;
    let server = serve(&nats);
    // No worker yet: the server is up, says why it cannot answer, and a
    // turn gets the busy event instead of silence.
    let until = Instant::now() + Duration::from_secs(10);
    let health = loop {
        let (_, body) = server.get("/healthz").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["workers"]["llm"].is_number() || Instant::now() > until {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("healthz without workers: {health}");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["workers"]["llm"], 0);
    let mut client = connect(&server).await;
    assert!(client.wait_open(Duration::from_secs(10)).await);
    assert!(client.send_text("Hello there?").await);
    let busy = wait_ev(&mut client, 20, |e| match e {
        Event::Busy { .. } => Some(()),
        Event::Reply { text, .. } => panic!("a reply without workers: {text:?}"),
        _ => None,
    })
    .await;
    println!("no workers: busy event {busy:?}");
    listening(&mut client, 20).await;
    // Roles split over two processes; the same session now gets answers.
    let asr = Worker::start(&nats, "asr");
    let rest = Worker::start(&nats, "llm,tts");
    wait_workers(&server, 1).await;
    let mut clip = clip48("q01_capital_france.wav");
    clip.extend(vec![0.0; 48_000 * 3 / 2]);
    client.send_pcm(&clip, 1.0).await.expect("send");
    let reply = reply_ev(&mut client, 40, None).await;
    println!("split roles reply: {reply:?}");
    assert!(reply.to_lowercase().contains("paris"), "{reply}");
    listening(&mut client, 30).await;
    let nc = nats_client(&nats).await;
    let all = stats(&nc).await;
    let names = |id: &str| -> Vec<(String, u64)> {
        of(&all, id)
            .map(|w| {
                w.endpoints
                    .iter()
                    .map(|e| (e.name.clone(), e.load["completed"].as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    println!(
        "asr worker: {:?}; llm,tts worker: {:?}",
        names(&asr.id),
        names(&rest.id)
    );
    let served = |id: &str, ep: &str| names(id).iter().any(|(n, c)| n == ep && *c > 0);
    assert!(served(&asr.id, "asr"));
    assert!(served(&rest.id, "llm") || served(&rest.id, "llm-direct"));
    assert!(served(&rest.id, "tts"));
    assert!(names(&asr.id).iter().all(|(n, _)| n == "asr"));
}

/// The ids of the `prompt` events a client sees until it has seen `want`
/// (or `secs` passed), and for 3 s more, so a repeat would show.
async fn prompts_seen(client: &mut Client, want: usize, secs: u64) -> Vec<String> {
    let mut seen = Vec::new();
    let take = |e: Event, seen: &mut Vec<String>| {
        if let Event::Prompt { id, .. } = e {
            seen.push(id);
        }
    };
    let _ = client
        .wait_for(Duration::from_secs(secs), |e| {
            take(e, &mut seen);
            (seen.len() >= want).then_some(())
        })
        .await;
    let _ = client
        .wait_for(Duration::from_secs(3), |e| {
            take(e, &mut seen);
            None::<()>
        })
        .await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_speak_each_prompt_once_on_the_server_holding_its_session() {
    use common::bus::{Events, js, publish, publish_prompt, resume, wait_stream};
    let nats = Nats::start().await;
    let _worker = Worker::start(&nats, "asr,llm,tts");
    let events = Events::subscribe(&nats.url).await;
    let js = js(&nats.url).await;
    // Two servers on one NATS share the prompt stream's durable consumer.
    let a = serve(&nats);
    let b = serve(&nats);
    wait_stream(&js).await;
    wait_workers(&a, 1).await;
    wait_workers(&b, 1).await;
    let mut on_a = resume(&a, "relay-on-a-0001").await;
    let mut on_b = resume(&b, "relay-on-b-0001").await;
    assert!(on_a.wait_open(Duration::from_secs(10)).await);
    assert!(on_b.wait_open(Duration::from_secs(10)).await);
    // JetStream hands the messages to the two servers' pulls in turn: a
    // session's prompts in a row go to both servers, so some must be relayed.
    let per_session = 4;
    for s in ["relay-on-a-0001", "relay-on-b-0001"] {
        for i in 0..per_session {
            let id = format!("{s}-p{i}");
            let text = format!("Reminder number {i}: your table is ready.");
            publish_prompt(&js, s, serde_json::json!({"id": id, "text": text})).await;
        }
    }
    let all = serde_json::json!({"id": "relay-broadcast", "text": "We close in ten minutes."});
    publish(
        &js,
        "voxloop.prompt.broadcast".into(),
        all.to_string().into_bytes(),
    )
    .await;
    let t0 = Instant::now();
    let want = per_session + 1;
    let (seen_a, seen_b) = tokio::join!(
        prompts_seen(&mut on_a, want, 60),
        prompts_seen(&mut on_b, want, 60)
    );
    println!(
        "in {:.0} s: session on A heard {seen_a:?}; session on B heard {seen_b:?}",
        t0.elapsed().as_secs_f64()
    );
    for (seen, s) in [(&seen_a, "relay-on-a-0001"), (&seen_b, "relay-on-b-0001")] {
        for i in 0..per_session {
            let id = format!("{s}-p{i}");
            let n = seen.iter().filter(|x| **x == id).count();
            assert_eq!(n, 1, "{id} heard {n} times in its session");
        }
        let n = seen.iter().filter(|x| *x == "relay-broadcast").count();
        assert_eq!(n, 1, "the broadcast was heard {n} times in {s}");
        assert_eq!(
            seen.len(),
            per_session + 1,
            "foreign prompts in {s}: {seen:?}"
        );
    }
    println!(
        "prompts spoken by A: {}, by B: {}",
        a.metric("voxloop_prompts_spoken_total").await,
        b.metric("voxloop_prompts_spoken_total").await
    );
    let received = a.metric("voxloop_prompts_received_total").await
        + b.metric("voxloop_prompts_received_total").await;
    let relayed = a.metric("voxloop_prompts_relayed_total").await
        + b.metric("voxloop_prompts_relayed_total").await;
    println!("prompts received by the sessions' servers: {received}; relayed: {relayed}");
    // Otherwise this run did not test the relay (the consumer happened to
    // hand every prompt to its session's server).
    assert!(relayed >= 1.0, "no prompt was relayed");
    let dropped = events.count("voxloop.event.prompt.dropped", |_| true);
    assert_eq!(dropped, 0, "prompts dropped: {:?}", events.all());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// docs/DEPLOY.md's layout as `scripts/cluster.sh` starts it: up returns
/// once the server sees its workers, and down stops every process it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_script_starts_and_stops_the_layout() {
    let dir = std::env::temp_dir().join(format!("voxloop-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (web, nats) = (free_port(), free_port());
    let script = |verb: &str| {
        std::process::Command::new("bash")
            .args(["scripts/cluster.sh", verb])
            .arg(&dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("VOXLOOP_BIN", env!("CARGO_BIN_EXE_voxloop"))
            .env("VOXLOOP_MODELS_PROFILE", "fast")
            .env("VOXLOOP_LOG", "warn")
            .env_remove("VOXLOOP_CONFIG")
            .env("WORKERS", "2")
            .env("WORKER_ROLES", "asr llm,tts")
            .env("BASE_PORT", web.to_string())
            .env("NATS_PORT", nats.to_string())
            .output()
            .expect("run scripts/cluster.sh")
    };
    let up = script("up");
    let out = String::from_utf8_lossy(&up.stdout).to_string();
    println!(
        "cluster.sh up:\n{out}{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let pids: Vec<String> = std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
        .collect();
    let healthz = reqwest::get(format!("http://127.0.0.1:{web}/healthz")).await;
    let down = script("down");
    assert!(up.status.success(), "cluster.sh up failed");
    assert!(
        out.contains(&format!("server: http://127.0.0.1:{web}")),
        "{out}"
    );
    assert!(out.contains("workers: 2"), "{out}");
    let body = healthz.expect("healthz").text().await.unwrap();
    println!("healthz: {body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    assert!(down.status.success(), "cluster.sh down failed");
    assert_eq!(pids.len(), 4, "nats, two workers, one server: {pids:?}");
    for p in &pids {
        let alive = std::path::Path::new(&format!("/proc/{p}")).exists()
            && !std::fs::read_to_string(format!("/proc/{p}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "process {p} still runs after cluster.sh down");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
