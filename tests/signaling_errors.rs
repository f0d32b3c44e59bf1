//! Malformed signaling gets an `error` message with a stable code, the
//! socket stays usable where it can, and a healthy session running at the
//! same time keeps echoing.

mod common;

use std::time::Duration;

use common::{Server, clip48};
use voxloop::audio::first_voiced;
use voxloop::client::{Client, ClientOptions, Signaling};
use voxloop::events::{Event, State};
use voxloop::rtc::{ClientMessage, ErrorCode, ServerMessage};

const T: Duration = Duration::from_secs(10);

async fn expect_error(sig: &mut Signaling, want: ErrorCode) -> String {
    match sig.recv_non_candidate(T).await.expect("recv") {
        Some(ServerMessage::Error { code, message }) => {
            assert_eq!(code, want, "wrong code; message: {message}");
            println!("{:?}: {message}", code);
            message
        }
        other => panic!("expected error {want:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_errors_and_healthy_session_survives() {
    let server = Server::start(&["--pipeline", "echo"], &[]);
    let mut healthy = Client::connect(&server.url, ClientOptions::default())
        .await
        .expect("healthy client connects");

    let mut sig = Signaling::connect(&server.url).await.expect("socket");
    sig.send_text("{this is not json").await.unwrap();
    expect_error(&mut sig, ErrorCode::BadJson).await;
    sig.send_text(r#"{"type":"launch_rockets"}"#).await.unwrap();
    expect_error(&mut sig, ErrorCode::UnknownType).await;
    sig.send_text(r#"{"type":"offer","sdp":"hello, I am not SDP"}"#)
        .await
        .unwrap();
    expect_error(&mut sig, ErrorCode::BadSdp).await;
    // Looks like SDP at first glance; the WebRTC engine must reject it cleanly.
    sig.send_text(r#"{"type":"offer","sdp":"v=0\r\nm=nonsense\r\na=garbage\r\n"}"#)
        .await
        .unwrap();
    expect_error(&mut sig, ErrorCode::BadSdp).await;
    let big = format!(r#"{{"type":"offer","sdp":"v=0{}"}}"#, "x".repeat(1 << 20));
    sig.send_text(big).await.unwrap();
    expect_error(&mut sig, ErrorCode::TooLarge).await;
    sig.send_binary(vec![0, 1, 2, 3]).await.unwrap();
    expect_error(&mut sig, ErrorCode::Binary).await;
    sig.send_text(
        r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 9 typ host","sdpMid":"0"}}"#,
    )
    .await
    .unwrap();
    expect_error(&mut sig, ErrorCode::NoOffer).await;

    // The same socket can still negotiate after all that.
    let (offer_peer, _streams, offer) = common::real_offer().await;
    let msg = ClientMessage::Offer {
        sdp: offer,
        session_id: None,
    };
    sig.send(&msg).await.unwrap();
    let first = sig.recv_non_candidate(T).await.unwrap();
    assert!(
        matches!(first, Some(ServerMessage::Session { .. })),
        "{first:?}"
    );
    let second = sig.recv_non_candidate(T).await.unwrap();
    assert!(
        matches!(second, Some(ServerMessage::Answer { .. })),
        "{second:?}"
    );
    // A second offer on the same socket is refused; the first session stands.
    sig.send(&msg).await.unwrap();
    expect_error(&mut sig, ErrorCode::DuplicateOffer).await;
    sig.send_text(r#"{"type":"candidate","candidate":{"candidate":"garbage"}}"#)
        .await
        .unwrap();
    expect_error(&mut sig, ErrorCode::BadCandidate).await;
    assert_eq!(server.metric("voxloop_active_sessions").await, 2.0);
    sig.send(&ClientMessage::Bye).await.unwrap();
    offer_peer.close().await;

    // Every kind was counted.
    for kind in [
        "bad_json",
        "unknown_type",
        "bad_sdp",
        "too_large",
        "binary",
        "no_offer",
        "duplicate_offer",
        "bad_candidate",
    ] {
        let v = server
            .metric(&format!(
                "voxloop_signaling_errors_total{{kind=\"{kind}\"}}"
            ))
            .await;
        assert!(v >= 1.0, "{kind} not counted");
    }
    assert_eq!(
        server
            .metric("voxloop_signaling_errors_total{kind=\"bad_sdp\"}")
            .await,
        2.0
    );

    // The healthy session still echoes.
    let clip = clip48("q01_capital_france.wav");
    healthy.send_pcm(&clip, 1.0).await.expect("send");
    healthy
        .send_silence(Duration::from_millis(700))
        .await
        .expect("silence");
    healthy
        .wait_event(T, |e| e.is_state(State::Listening))
        .await
        .expect("healthy session finished its echo");
    let back = healthy.received_pcm();
    assert!(first_voiced(&back).is_some(), "healthy session got no echo");
    assert!(healthy.ended().is_none());
    healthy.bye().await;
}

/// Bad messages on the `events` data channel get an `error` event with the
/// same stable codes, are counted in `/metrics`, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_channel_messages_get_coded_errors() {
    let server = Server::start(&["--pipeline", "echo"], &[]);
    let mut client = Client::connect(&server.url, ClientOptions::default())
        .await
        .expect("connect");
    // The channel is open once the session event came.
    assert!(client.wait_open(T).await, "events channel open");
    let too_long = serde_json::to_string(&voxloop::events::ClientMessage::Text {
        text: "a".repeat(2001),
    })
    .unwrap();
    let cases = [
        ("{this is not json", ErrorCode::BadJson),
        (r#"{"type":"dance"}"#, ErrorCode::UnknownType),
        (r#"{"type":"text"}"#, ErrorCode::BadMessage),
        (r#"{"type":"text","text":"   "}"#, ErrorCode::BadMessage),
        (too_long.as_str(), ErrorCode::TooLarge),
    ];
    for (text, want) in cases {
        assert!(client.send_data_raw(text).await, "channel open");
        let (code, message) = client
            .wait_for(T, |e| match e {
                Event::Error { code, message, .. } => Some((code, message)),
                _ => None,
            })
            .await
            .unwrap_or_else(|| panic!("no error event for {text:.40}"));
        println!("{code:?}: {message}");
        assert_eq!(code, Some(want), "for {text:.40}: {message}");
    }
    for (kind, n) in [
        ("bad_json", 1.0),
        ("unknown_type", 1.0),
        ("bad_message", 2.0),
        ("too_large", 1.0),
    ] {
        let v = server
            .metric(&format!(
                "voxloop_data_channel_errors_total{{kind=\"{kind}\"}}"
            ))
            .await;
        assert_eq!(v, n, "{kind}");
    }
    // Signaling errors are counted apart.
    assert_eq!(
        server
            .metric("voxloop_signaling_errors_total{kind=\"bad_json\"}")
            .await,
        0.0
    );
    assert!(client.ended().is_none());
    client.bye().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_server_refuses_with_a_code() {
    let server = Server::start(&["--pipeline", "echo", "--max-sessions", "1"], &[]);
    let first = Client::connect(&server.url, ClientOptions::default())
        .await
        .expect("first client");
    match Client::connect(&server.url, ClientOptions::default()).await {
        Err(voxloop::client::ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::Busy),
        Err(e) => panic!("expected busy, got {e}"),
        Ok(_) => panic!("second session admitted over the limit"),
    }
    first.bye().await;
    // The slot is released when the first session ends.
    assert!(
        server.sessions_drained(Duration::from_secs(5)).await,
        "session slot not released after bye"
    );
    let again = Client::connect(&server.url, ClientOptions::default())
        .await
        .expect("connect after release");
    again.bye().await;
}
