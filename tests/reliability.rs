//! Issue 14 against the real binary and real WebRTC peers: abandoned and
//! silent offers leave no session behind, slow and idle sockets do not
//! lock users out or hold up shutdown, and every refusal is readable.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use voxloop::client::{Client, ClientOptions, Signaling};
use voxloop::events::{Event, State};
use voxloop::rtc::{ErrorCode, ServerMessage};

fn host(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_and_silent_offers_leave_no_session() {
    const CONNECT_MS: u64 = 3000;
    let server = Server::start(
        &["--pipeline", "echo"],
        &[
            ("VOXLOOP_RTC_CONNECT_TIMEOUT_MS", &CONNECT_MS.to_string()),
            ("VOXLOOP_MAX_SESSIONS", "400"),
        ],
    );
    // One real offer, sent many times: the server builds a peer for each,
    // and nobody ever connects to them.
    let (_peer, _streams, offer) = common::real_offer().await;
    let addr = host(&server);

    // 300 WHIP POSTs abandoned mid-request: half hang up inside the body,
    // half right after it, while the server is answering.
    let mut tasks = JoinSet::new();
    for i in 0..300 {
        if tasks.len() >= 32 {
            tasks.join_next().await;
        }
        let (addr, offer) = (addr.clone(), offer.clone());
        tasks.spawn(async move {
            let mut s = TcpStream::connect(&addr).await.expect("connect");
            let head = format!(
                "POST /whip HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
                offer.len()
            );
            let body = if i % 2 == 0 {
                &offer[..offer.len() / 2]
            } else {
                &offer[..]
            };
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
            // Dropped here: the socket closes without reading an answer.
        });
    }
    while tasks.join_next().await.is_some() {}

    // 300 offers answered whose peers never connect.
    let http = reqwest::Client::new();
    let mut answered = 0;
    for _ in 0..10 {
        let mut wave = JoinSet::new();
        for _ in 0..30 {
            let (http, url, offer) = (http.clone(), server.url.clone(), offer.clone());
            wave.spawn(async move {
                http.post(format!("{url}/whip"))
                    .header("content-type", "application/sdp")
                    .body(offer)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            });
        }
        while let Some(r) = wave.join_next().await {
            if matches!(r, Ok(Ok(201))) {
                answered += 1;
            }
        }
    }
    assert_eq!(answered, 300, "every silent offer is answered");
    let peak = server.healthz_sessions().await;
    let freed = server
        .slots_free(Duration::from_millis(CONNECT_MS + 5000))
        .await;
    println!(
        "slots: {peak} live after the last answer, all free after {:?} (connect timeout {CONNECT_MS} ms)",
        freed
    );
    assert!(
        freed.is_some(),
        "sessions still live {} ms after the connect timeout",
        5000
    );

    // A normal user joins right after.
    let (peer, _streams, _location) = common::whip_join(&server.url).await;
    assert_eq!(server.healthz_sessions().await, 1);
    peer.close().await;
}

/// Has the server closed this socket? (EOF or reset within `within`.)
async fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a 408 answer, then the close
        }
    }
}

/// A slowloris client: a request line, then one header byte at a time.
/// Returns how long the server let it go on.
async fn slowloris(addr: String) -> Duration {
    let t0 = Instant::now();
    let Ok(mut s) = TcpStream::connect(&addr).await else {
        return t0.elapsed();
    };
    let _ = s.write_all(b"POST /whip HTTP/1.1\r\nX-Slow: ").await;
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return t0.elapsed() },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if s.write_all(b"a").await.is_err() {
                    return t0.elapsed();
                }
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return t0.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_sockets_lock_nobody_out_nor_hold_shutdown() {
    const HEADER_MS: u64 = 3000;
    const DRAIN_MS: u64 = 2000;
    let mut server = Server::start(
        &["--pipeline", "echo"],
        &[
            ("VOXLOOP_HTTP_HEADER_TIMEOUT_MS", &HEADER_MS.to_string()),
            ("VOXLOOP_DRAIN_TIMEOUT_MS", &DRAIN_MS.to_string()),
        ],
    );
    let addr = host(&server);
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(&addr).await.expect("idle socket"));
    }
    let slow = tokio::spawn(slowloris(addr.clone()));

    let t0 = Instant::now();
    let (peer, _streams, _location) = common::whip_join(&server.url).await;
    println!(
        "a user joined in {} ms beside 1000 idle sockets and a slowloris client",
        t0.elapsed().as_millis()
    );

    let lasted = slow.await.expect("slowloris task");
    println!("slowloris cut after {} ms", lasted.as_millis());
    assert!(
        lasted < Duration::from_millis(HEADER_MS + 2000),
        "the slowloris client kept its connection for {lasted:?}"
    );
    let mut closed = 0;
    for s in &mut idle {
        if closed_by_server(s, Duration::from_millis(HEADER_MS + 2000)).await {
            closed += 1;
        }
    }
    println!("{closed} of 1000 idle sockets closed by the header timeout");
    assert_eq!(closed, 1000);

    // Shutdown with slow and idle sockets still open, and a live session.
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(&addr).await.expect("idle socket"));
    }
    let _slow = tokio::spawn(slowloris(addr.clone()));
    let _ws = Signaling::connect(&server.url).await.expect("websocket");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, took) = server
        .terminate(Duration::from_secs(15))
        .expect("the server exits after SIGTERM");
    println!(
        "SIGTERM -> exit {code:?} in {} ms (drain timeout {DRAIN_MS} ms)",
        took.as_millis()
    );
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_millis(DRAIN_MS + 3000), "{took:?}");
    peer.close().await;
}

async fn json_error(resp: reqwest::Response, status: u16, code: &str) {
    assert_eq!(resp.status().as_u16(), status);
    let text = resp.text().await.expect("body");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    let got = v["error"]["code"].as_str().or(v["code"].as_str());
    assert_eq!(got, Some(code), "{v}");
    println!("{status} {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_readable() {
    let server = Server::start(
        &["--pipeline", "echo"],
        &[("VOXLOOP_WS_IDLE_TIMEOUT_MS", "500")],
    );
    let http = reqwest::Client::new();
    let url = &server.url;
    let cases = [
        (http.get(format!("{url}/no/such/page")), 404, "not_found"),
        (http.get(format!("{url}/whip")), 405, "method_not_allowed"),
        (
            http.delete(format!("{url}/whip/nobody-here-at-all")),
            404,
            "not_found",
        ),
        (
            http.post(format!("{url}/whip"))
                .header("content-type", "application/sdpx")
                .body("v=0"),
            415,
            "bad_content_type",
        ),
    ];
    for (request, status, code) in cases {
        json_error(request.send().await.unwrap(), status, code).await;
    }
    // A WebSocket that never offers is told why, then closed.
    let mut sig = Signaling::connect(url).await.expect("socket");
    match sig.recv_non_candidate(Duration::from_secs(5)).await {
        Ok(Some(ServerMessage::Error { code, message })) => {
            assert_eq!(code, ErrorCode::Timeout, "{message}");
            println!("idle socket: {message}");
        }
        other => panic!("expected a timeout error, got {other:?}"),
    }
}

/// Say `q10_long.wav` and wait until the echo pipeline plays it back: a
/// reply of about 11 s is under way when this returns.
async fn start_a_long_echo(client: &mut Client) {
    let clip = common::clip48("q10_long.wav");
    client.send_pcm(&clip, 1.0).await.expect("send");
    client
        .send_silence(Duration::from_millis(700))
        .await
        .expect("send");
    let speaking = client
        .wait_event(Duration::from_secs(10), |e| {
            matches!(
                e,
                Event::State {
                    state: State::Speaking,
                    ..
                }
            )
        })
        .await;
    assert!(speaking.is_some(), "the echo did not start");
}

/// SIGTERM while the server is speaking: `/readyz` turns false, a new join
/// is refused with `draining`, the reply plays to its end, and the process
/// exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_reply_in_progress_finish() {
    const DRAIN_MS: u64 = 20_000;
    let mut server = Server::start(
        &["--pipeline", "echo"],
        &[("VOXLOOP_DRAIN_TIMEOUT_MS", &DRAIN_MS.to_string())],
    );
    let mut client = Client::connect(&server.url, ClientOptions::default())
        .await
        .expect("connect");
    let (status, _) = server.get("/readyz").await;
    assert_eq!(status, 200);
    start_a_long_echo(&mut client).await;
    let t0 = Instant::now();
    server.signal_term();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let (_peer, _streams, offer) = common::real_offer().await;
    let r = reqwest::Client::new()
        .post(format!("{}/whip", server.url))
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .expect("POST /whip");
    assert_eq!(r.status().as_u16(), 503);
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["code"], "draining", "{v}");
    // The live client is told, with the time it has left.
    let notice = client
        .wait_event(Duration::from_secs(5), |e| {
            matches!(e, Event::Draining { .. })
        })
        .await;
    match notice {
        Some(Event::Draining { deadline_ms }) => assert!(
            deadline_ms > DRAIN_MS / 2 && deadline_ms <= DRAIN_MS,
            "draining notice with {deadline_ms} ms left"
        ),
        other => panic!("no draining event: {other:?}"),
    }
    let done = client
        .wait_event(Duration::from_millis(DRAIN_MS), |e| {
            matches!(
                e,
                Event::State {
                    state: State::Listening,
                    ..
                }
            )
        })
        .await;
    let played = t0.elapsed();
    assert!(done.is_some(), "the reply did not play to its end");
    let (code, took) = server
        .wait_exit(Duration::from_millis(DRAIN_MS))
        .expect("the server exits once the reply is over");
    println!(
        "SIGTERM mid-reply: the reply went on {} ms, the process exited {code:?} {} ms after it",
        played.as_millis(),
        took.as_millis()
    );
    assert_eq!(code, Some(0));
    assert!(
        played > Duration::from_secs(3),
        "the reply ended {played:?} after SIGTERM: cut, not finished"
    );
}

/// A second SIGTERM during a drain exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let mut server = Server::start(
        &["--pipeline", "echo"],
        &[("VOXLOOP_DRAIN_TIMEOUT_MS", "30000")],
    );
    let mut client = Client::connect(&server.url, ClientOptions::default())
        .await
        .expect("connect");
    start_a_long_echo(&mut client).await;
    server.signal_term();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.alive(), "the first signal must drain, not exit");
    server.signal_term();
    let (code, took) = server
        .wait_exit(Duration::from_secs(5))
        .expect("the second signal ends the process");
    println!(
        "second SIGTERM: exit {code:?} after {} ms",
        took.as_millis()
    );
    assert_eq!(code, Some(130));
}

/// Per-client limits with loopback not exempt (as if the test client came
/// from another machine): sessions per IP, offers per minute, candidates per
/// socket and typed texts per minute each answer `rate_limited`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_limits_answer_rate_limited() {
    let server = Server::start(
        &["--pipeline", "echo"],
        &[
            ("VOXLOOP_LIMITS_EXEMPT_LOOPBACK", "false"),
            ("VOXLOOP_SESSIONS_PER_IP", "2"),
            ("VOXLOOP_OFFERS_PER_MINUTE", "5"),
        ],
    );
    let (_peer, _streams, offer) = common::real_offer().await;
    let http = reqwest::Client::new();
    let mut got = Vec::new();
    for _ in 0..6 {
        let r = http
            .post(format!("{}/whip", server.url))
            .header("content-type", "application/sdp")
            .body(offer.clone())
            .send()
            .await
            .expect("POST /whip");
        let status = r.status().as_u16();
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
        println!("offer: {status} {}", body["message"]);
        got.push((
            status,
            body["message"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let statuses: Vec<u16> = got.iter().map(|g| g.0).collect();
    assert_eq!(statuses, [201, 201, 429, 429, 429, 429]);
    assert!(got[2].1.contains("sessions from 127.0.0.1"), "{}", got[2].1);
    assert!(got[5].1.contains("offers a minute"), "{}", got[5].1);

    // Candidates and typed texts, on a server with the default limits.
    let server = Server::start(&["--pipeline", "echo"], &[]);
    let mut client = Client::connect(&server.url, ClientOptions::default())
        .await
        .expect("connect");
    assert!(
        client.wait_open(Duration::from_secs(10)).await,
        "events channel open"
    );
    let mut limited = 0;
    for i in 0..40 {
        assert!(client.send_text(&format!("message {i}")).await);
    }
    while let Some(e) = client.next_event(Duration::from_secs(2)).await {
        if matches!(
            e,
            Event::Error {
                code: Some(ErrorCode::RateLimited),
                ..
            }
        ) {
            limited += 1;
        }
    }
    println!("typed texts: {limited} of 40 refused as rate_limited (30 a minute)");
    assert_eq!(limited, 10);

    let mut sig = Signaling::connect(&server.url).await.expect("socket");
    let offer_msg = serde_json::json!({"type": "offer", "sdp": offer}).to_string();
    sig.send_text(offer_msg).await.expect("offer");
    loop {
        match sig.recv_non_candidate(Duration::from_secs(10)).await {
            Ok(Some(ServerMessage::Answer { .. })) => break,
            Ok(Some(_)) => continue,
            other => panic!("no answer: {other:?}"),
        }
    }
    let candidate = r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}}"#;
    for _ in 0..65 {
        sig.send_text(candidate).await.expect("candidate");
    }
    match sig.recv_non_candidate(Duration::from_secs(10)).await {
        Ok(Some(ServerMessage::Error { code, message })) => {
            println!("65th candidate: {message}");
            assert_eq!(code, ErrorCode::RateLimited, "{message}");
        }
        other => panic!("expected rate_limited, got {other:?}"),
    }
}
