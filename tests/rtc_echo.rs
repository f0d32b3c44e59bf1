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
    let frames = echo_round_trip(&[]).await;
    // 20 ms packets by default: one frame per RTP packet.
    assert_eq!(frames_sharing_a_packet(&frames), 0);
}

/// With `audio.packet_ms = 40` the queued echo goes out two frames to a
/// packet, and arrives the same and on the same timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_in_40_ms_packets_returns_what_was_sent() {
    let frames = echo_round_trip(&[("VOXLOOP_AUDIO_PACKET_MS", "40")]).await;
    let shared = frames_sharing_a_packet(&frames);
    let voiced = frames
        .iter()
        .filter(|f| f.pcm.iter().any(|x| x.abs() > 0.01))
        .count();
    println!(
        "{shared} of {} frames came second in a packet ({voiced} voiced)",
        frames.len()
    );
    assert!(
        shared * 3 >= voiced,
        "only {shared} frames shared a packet, of {voiced} voiced"
    );
}

/// Frames that came as the second (or later) frame of one RTP packet: the
/// packet's sequence number, the timestamp one frame on.
fn frames_sharing_a_packet(frames: &[voxloop::client::ReceivedFrame]) -> usize {
    frames
        .windows(2)
        .filter(|w| {
            w[1].sequence == w[0].sequence
                && w[1].rtp_timestamp.wrapping_sub(w[0].rtp_timestamp) == 960
        })
        .count()
}

/// Send `q10_long` to an echo server started with `envs`, check what comes
/// back (duration, correlation, delay), and return the received frames.
async fn echo_round_trip(envs: &[(&str, &str)]) -> Vec<voxloop::client::ReceivedFrame> {
    let server = Server::start(&["--pipeline", "echo"], envs);
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
    frames
}

/// Silence goes as DTX both ways (`rtc.dtx`, on by default): a packet every
/// 400 ms instead of every 20 ms, and the received audio still keeps the
/// sender's timeline. With `VOXLOOP_RTC_DTX=0` every frame is a packet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_goes_as_dtx_both_ways_and_keeps_its_timeline() {
    for dtx in [true, false] {
        let env = if dtx { "1" } else { "0" };
        let server = Server::start(&["--pipeline", "echo"], &[("VOXLOOP_RTC_DTX", env)]);
        let client = Client::connect(&server.url, ClientOptions::default())
            .await
            .expect("connect");
        // Let the first packets (before the encoders settle) go by.
        client.send_silence(Duration::from_secs(1)).await.unwrap();
        let in_before = server.metric("voxloop_audio_frames_in_total").await;
        client.clear_received();
        let quiet = Duration::from_secs(4);
        client.send_silence(quiet).await.unwrap();
        let frames = client.received();
        let packets_in = server.metric("voxloop_audio_frames_in_total").await - in_before;
        let held = server.metric("voxloop_audio_frames_held_total").await;
        let mut seqs: Vec<u16> = frames.iter().map(|f| f.sequence).collect();
        seqs.dedup();
        let expect = quiet.as_millis() as f64 / 20.0;
        println!(
            "dtx {dtx}: 4 s of silence: {} packets received by the client \
             ({} frames with the pauses filled), {packets_in} by the server, \
             {held} frames held back by the server (200 frames' time)",
            seqs.len(),
            frames.len()
        );
        // The timeline: as many frames as the time that passed, give or take
        // the 400 ms between updates.
        assert!(
            (frames.len() as f64 - expect).abs() <= 30.0,
            "{} frames for {expect} frames' time",
            frames.len()
        );
        assert!(frames.iter().all(|f| f.pcm.iter().all(|&x| x.abs() < 1e-3)));
        if dtx {
            // One packet in 20, and a margin for the edges.
            assert!(seqs.len() <= 20, "{} packets", seqs.len());
            assert!(packets_in <= 20.0, "{packets_in} packets to the server");
            assert!(held >= 150.0, "{held} frames held");
        } else {
            assert!(seqs.len() as f64 >= expect - 30.0, "{} packets", seqs.len());
            assert!(packets_in >= expect - 30.0, "{packets_in} packets");
            assert_eq!(held, 0.0);
        }
        client.bye().await;
    }
}
