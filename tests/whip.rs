//! WHIP-style signaling: POST an SDP offer, get a full SDP answer and a
//! Location; media flows; DELETE ends the session. Bad requests get errors.

mod common;

use std::time::Duration;

use common::{Server, clip48};
use voxloop::audio::{OpusEncoder, first_voiced};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_session_echoes_and_deletes() {
    let server = Server::start(&["--pipeline", "echo"], &[]);
    let http = reqwest::Client::new();

    // Bad requests first: wrong content type, not SDP.
    let r = http
        .post(format!("{}/whip", server.url))
        .header("content-type", "text/plain")
        .body("v=0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let r = http
        .post(format!("{}/whip", server.url))
        .header("content-type", "application/sdp")
        .body("definitely not sdp")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["code"], "bad_sdp", "{body}");

    // A real offer with its candidates (WHIP does not trickle).
    let (peer, mut streams, location) = common::whip_join(&server.url).await;

    // Speak, then wait for the echo.
    let mut enc = OpusEncoder::new(48_000).unwrap();
    let mut clip = clip48("q06_hello.wav");
    clip.resize(clip.len() + 48_000, 0.0);
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    for frame in clip.chunks(960) {
        ticker.tick().await;
        let mut f = frame.to_vec();
        f.resize(960, 0.0);
        peer.send_opus(enc.encode(&f).unwrap(), 0, 1).await.unwrap();
    }
    let mut back = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), streams.audio.recv()).await {
            Ok(Some(f)) => back.extend(f.pcm),
            Ok(None) => break,
            Err(_) => {}
        }
        if first_voiced(&back).is_some() && back.len() > 48_000 {
            break;
        }
    }
    assert!(first_voiced(&back).is_some(), "no echo over WHIP");

    let r = http
        .delete(format!("{}{}", server.url, location))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        server.sessions_drained(Duration::from_secs(5)).await,
        "DELETE did not end the session"
    );
    let r = http
        .delete(format!("{}{}", server.url, location))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_page() {
    let server = Server::start(&["--pipeline", "echo"], &[]);
    let (status, body) = server.get("/healthz").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["sessions"], 0);
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "voxloop_active_sessions",
        "voxloop_sessions_total",
        "voxloop_audio_frames_in_total",
        "voxloop_audio_frames_out_total",
        "voxloop_late_frames_out_total",
    ] {
        assert!(
            voxloop::metrics::parse_sample(&body, name).is_some(),
            "{name} missing"
        );
    }
    let (status, body) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("voxloop"), "page not served");
    let (status, _) = server.get("/no-such-file").await;
    assert_eq!(status, 404);
}
