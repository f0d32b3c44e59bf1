//! Audio sent through a real WebRTC connection to `serve --pipeline echo`
//! comes back intact: same words (correlation), same length, and on time.

mod common;

use std::time::Duration;

use common::{Server, best_alignment, clip48};
use voxloop::audio::{first_voiced, last_voiced, resample_clip};
use voxloop::client::{Client, ClientOptions};
use voxloop::events::State;
use voxloop::{PIPELINE_RATE, WIRE_FRAME, WIRE_RATE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_returns_what_was_sent() {
    let server = Server::start(&["--pipeline", "echo"], &[]);
    let mut client = Client::connect(&server.url, ClientOptions::default())
        .await
        .expect("connect");
    println!("connect time: {:?}", client.connect_time);

    let sent = clip48("q10_long.wav");
    let report = client.send_pcm(&sent, 1.0).await.expect("send");
    // Wait for the echo to be played out completely.
    let speaking = client
        .wait_event(Duration::from_secs(20), |e| e.is_state(State::Speaking))
        .await
        .expect("the server never started echoing");
    println!("speaking event: {speaking:?}");
    client
        .wait_event(Duration::from_secs(30), |e| e.is_state(State::Listening))
        .await
        .expect("the echo never finished");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let frames = client.received();
    let received: Vec<f32> = frames.iter().flat_map(|f| f.pcm.iter().copied()).collect();
    assert!(!received.is_empty(), "no audio received");

    // Voiced regions of what was sent and what came back.
    let (s0, s1) = (first_voiced(&sent).unwrap(), last_voiced(&sent).unwrap());
    let (r0, r1) = (
        first_voiced(&received).expect("received audio is silent"),
        last_voiced(&received).unwrap(),
    );
    let sent_dur = (s1 - s0) as f64 / f64::from(WIRE_RATE);
    let recv_dur = (r1 - r0) as f64 / f64::from(WIRE_RATE);
    let dur_err = (recv_dur - sent_dur).abs() / sent_dur;
    println!(
        "voiced duration: sent {sent_dur:.3} s, received {recv_dur:.3} s ({:.2} %)",
        dur_err * 100.0
    );
    assert!(
        dur_err <= 0.05,
        "duration differs by {:.1} %",
        dur_err * 100.0
    );

    // Correlation on the 16 kHz signal, aligned around the voiced onsets.
    let margin = WIRE_FRAME * 2;
    let a = resample_clip(&sent[s0..=s1], WIRE_RATE, PIPELINE_RATE).unwrap();
    let b_start = r0.saturating_sub(margin);
    let b_end = (r1 + margin).min(received.len());
    let b = resample_clip(&received[b_start..b_end], WIRE_RATE, PIPELINE_RATE).unwrap();
    let max_lag = (2 * margin) * PIPELINE_RATE as usize / WIRE_RATE as usize;
    let (corr, lag) = best_alignment(&a, &b, max_lag);
    println!("echo correlation: {corr:.3} (lag {lag} samples at 16 kHz)");
    assert!(
        corr >= 0.95,
        "normalized cross-correlation {corr:.3} < 0.95"
    );

    // Round trip: last voiced frame sent -> first voiced echoed frame received.
    let last_sent = report.time_of_sample(s1).expect("send time");
    let first_back = frames[r0 / WIRE_FRAME].arrival;
    let rtt = first_back.saturating_duration_since(last_sent);
    println!(
        "echo delay (end of speech -> first echoed sample): {} ms (includes the {} ms end-of-utterance hangover)",
        rtt.as_millis(),
        voxloop::config::EchoConfig::default().hangover_ms
    );
    assert!(rtt < Duration::from_secs(3), "echo took {rtt:?}");
    assert!(client.server_errors().is_empty());
    client.bye().await;
}
