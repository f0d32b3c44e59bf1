//! The speech loop over a real WebRTC connection with real models: a spoken
//! question gets a spoken answer; the conversation remembers; the user can
//! interrupt, and a cough does not cut the reply; bad audio is survived.

mod common;

use std::time::{Duration, Instant};

use common::{Server, clip48};
use voxloop::audio::{VOICED_THRESHOLD, resample_clip};
use voxloop::client::{Client, ClientOptions, ReceivedFrame};
use voxloop::config::Config;
use voxloop::events::{Event, State};
use voxloop::text::wer;
use voxloop::{PIPELINE_RATE, WIRE_RATE, engines};

const PROFILE: &str = "fast";

fn server() -> Server {
    server_with(PROFILE)
}

fn server_with(profile: &str) -> Server {
    Server::start(
        &["--pipeline", "speech"],
        &[("VOXLOOP_MODELS_PROFILE", profile)],
    )
}

async fn connect(server: &Server) -> Client {
    Client::connect(&server.url, ClientOptions::default())
        .await
        .expect("connect")
}

fn config() -> Config {
    common::model_config(PROFILE)
}

/// Say `pcm` in real time, then keep the line open with silence.
async fn say(client: &Client, pcm: &[f32], silence: Duration) -> voxloop::client::SendReport {
    let mut with_tail = pcm.to_vec();
    with_tail.extend(std::iter::repeat_n(
        0.0,
        (silence.as_secs_f64() * f64::from(WIRE_RATE)) as usize,
    ));
    client.send_pcm(&with_tail, 1.0).await.expect("send audio")
}

/// The text of the next transcript.
async fn transcript(client: &mut Client, secs: u64) -> String {
    client
        .wait_for(Duration::from_secs(secs), |e| match e {
            Event::Transcript { text, .. } => Some(text),
            _ => None,
        })
        .await
        .unwrap_or_else(|| panic!("no transcript within {secs} s"))
}

/// The next whole reply: its text and whether it was interrupted.
async fn reply(client: &mut Client, secs: u64) -> (String, bool) {
    client
        .wait_for(Duration::from_secs(secs), |e| match e {
            Event::Reply {
                text, interrupted, ..
            } => Some((text, interrupted)),
            _ => None,
        })
        .await
        .unwrap_or_else(|| panic!("no reply within {secs} s"))
}

fn is_listening(e: &Event) -> bool {
    e.is_state(State::Listening)
}

fn voiced_frame(f: &ReceivedFrame) -> bool {
    f.pcm.iter().any(|x| x.abs() > VOICED_THRESHOLD)
}

/// Received reply audio from `from` on, trimmed to its voiced span, at 16 kHz.
fn reply_audio(frames: &[ReceivedFrame], from: Instant) -> Vec<f32> {
    let pcm: Vec<f32> = frames
        .iter()
        .filter(|f| f.arrival >= from)
        .flat_map(|f| f.pcm.iter().copied())
        .collect();
    resample_clip(&pcm, WIRE_RATE, PIPELINE_RATE).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoken_question_gets_a_spoken_answer() {
    let server = server();
    let mut client = connect(&server).await;
    // The checker decodes with Whisper's full 30 s window: the most accurate setting.
    let mut checker = config();
    checker.inference.asr_fit_audio_ctx = false;
    let asr = engines::load_asr(&checker).expect("whisper for checking");

    let started = Instant::now();
    let report = say(
        &client,
        &clip48("q01_capital_france.wav"),
        Duration::from_millis(1500),
    )
    .await;
    let heard = transcript(&mut client, 20).await;
    let w = wer("What is the capital of France?", &heard);
    println!(
        "transcript: {heard:?} (WER {:.0} %, bound 20 %, margin {:.0} points)",
        w * 100.0,
        20.0 - w * 100.0
    );
    assert!(w <= 0.20, "transcript {heard:?}");
    let (reply_text, interrupted) = reply(&mut client, 30).await;
    println!("reply: {reply_text:?}");
    assert!(
        reply_text.to_lowercase().contains("paris"),
        "reply: {reply_text}"
    );
    assert!(!interrupted);
    let timings = client
        .wait_for(Duration::from_secs(10), |e| match e {
            Event::Timings(t) => Some(t),
            _ => None,
        })
        .await
        .expect("timings within 10 s");
    println!("timings: {timings:?}");
    client
        .wait_event(Duration::from_secs(30), is_listening)
        .await
        .expect("back to listening after the reply");

    // Voice-to-voice: last voiced frame sent -> first voiced reply frame received.
    let clip = clip48("q01_capital_france.wav");
    let last = voxloop::audio::last_voiced(&clip).unwrap();
    let sent_at = report.time_of_sample(last).unwrap();
    let frames = client.received();
    let first_back = frames
        .iter()
        .find(|f| f.arrival > sent_at && voiced_frame(f))
        .expect("reply audio");
    println!(
        "voice-to-voice latency: {} ms (jitter buffer: none, frames decoded on arrival)",
        first_back.arrival.duration_since(sent_at).as_millis()
    );
    // The reply audio says what the reply text says.
    let audio = reply_audio(&frames, sent_at);
    let said = asr.transcribe(audio).await.unwrap();
    let w = wer(&reply_text, &said.text);
    let c = voxloop::text::cer(&reply_text, &said.text);
    println!(
        "reply audio transcribed: {:?} (WER {:.0} %, bound 25 %; letter error rate {:.1} %, bound 10 %; margin {:.1} points)",
        said.text,
        w * 100.0,
        c * 100.0,
        (25.0 - w * 100.0).max(10.0 - c * 100.0)
    );
    // Whisper hears this voice's "France is" as "Francis" (two word errors in a
    // six-word reply, a one-letter slip). Word boundaries aside, the audio
    // must say the text: WER within 25 %, or letters within 10 %.
    assert!(
        w <= 0.25 || c <= 0.10,
        "reply audio does not say the reply text"
    );
    println!("whole exchange took {:?}", started.elapsed());
    client.bye().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conversation_remembers() {
    // The 135M "fast" model does not keep track of who is who; the default
    // 0.5B model does.
    let server = server_with("default");
    let mut client = connect(&server).await;
    say(
        &client,
        &clip48("q08_name.wav"),
        Duration::from_millis(1500),
    )
    .await;
    let (first, _) = reply(&mut client, 30).await;
    println!("turn 1 reply: {first:?}");
    client
        .wait_event(Duration::from_secs(30), is_listening)
        .await
        .expect("listening after turn 1");
    // The second question, made with the project's own voice.
    let tts = engines::load_tts(&config()).unwrap();
    let q = tts.synthesize("What is my name?".into()).await.unwrap();
    let q48 = resample_clip(&q.pcm, q.sample_rate, WIRE_RATE).unwrap();
    say(&client, &q48, Duration::from_millis(1500)).await;
    let t = transcript(&mut client, 20).await;
    println!("turn 2 transcript: {t:?}");
    let (text, _) = reply(&mut client, 30).await;
    println!("turn 2 reply: {text:?}");
    assert!(text.to_lowercase().contains("alice"), "reply: {text}");
    client.bye().await;
}

/// Keep sending silence until reply audio arrives; when it did.
async fn reply_audio_begins(client: &Client) -> Instant {
    for _ in 0..300 {
        client
            .send_silence(Duration::from_millis(100))
            .await
            .unwrap();
        if let Some(f) = client.received().iter().rev().find(|f| voiced_frame(f)) {
            return f.arrival;
        }
    }
    panic!("no reply audio within 30 s");
}

/// A synthetic cough: 250 ms of low-passed noise, sharp onset, decaying.
fn cough() -> Vec<f32> {
    let n = WIRE_RATE as usize / 4;
    let mut seed = 11u32;
    let mut low = 0.0f32;
    (0..n)
        .map(|i| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let white = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            low += 0.2 * (white - low);
            let t = i as f32 / n as f32;
            let envelope = (t * 40.0).min(1.0) * (1.0 - t).powi(2);
            2.0 * low * envelope
        })
        .collect()
}

/// 250 ms of real speech, faded in and out: a word cut short, "uh", a
/// "mm-hm". Silero hears it as speech, so this is the hard case.
fn speech_burst() -> Vec<f32> {
    let clip = clip48("q09_interrupt.wav");
    let start = voxloop::audio::first_voiced(&clip).expect("voiced clip");
    let n = WIRE_RATE as usize / 4;
    let fade = WIRE_RATE as usize / 200;
    clip[start..start + n]
        .iter()
        .enumerate()
        .map(|(i, x)| x * (i.min(n - 1 - i) as f32 / fade as f32).min(1.0))
        .collect()
}

/// The longest run of silent received frames from `from` for `within`.
fn longest_gap(frames: &[ReceivedFrame], from: Instant, within: Duration) -> Duration {
    let mut longest = Duration::ZERO;
    let mut last_voiced = from;
    for f in frames
        .iter()
        .filter(|f| f.arrival >= from && f.arrival <= from + within && voiced_frame(f))
    {
        longest = longest.max(f.arrival.duration_since(last_voiced));
        last_voiced = f.arrival;
    }
    longest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cough_during_a_reply_does_not_cut_it() {
    let server = server();
    let mut client = connect(&server).await;
    // A long reply, whatever the model: a story runs to the spoken-length cap.
    assert!(client.wait_open(Duration::from_secs(10)).await);
    assert!(
        client
            .send_text("Tell me a story about a dragon who learns to fly.")
            .await
    );
    reply_audio_begins(&client).await;
    client
        .send_silence(Duration::from_millis(300))
        .await
        .unwrap();
    // A cough, then 250 ms of speech, each followed by silence.
    say(&client, &cough(), Duration::from_millis(700)).await;
    let burst = say(&client, &speech_burst(), Duration::from_millis(700)).await;
    let burst_at = burst.time_of_sample(0).unwrap();
    let mut barge_ins = 0;
    let (text, interrupted) = client
        .wait_for(Duration::from_secs(60), |e| match e {
            Event::BargeIn { .. } => {
                barge_ins += 1;
                None
            }
            Event::Reply {
                text, interrupted, ..
            } => Some((text, interrupted)),
            _ => None,
        })
        .await
        .expect("the reply ends");
    let frames = client.received();
    let resumed = frames
        .iter()
        .any(|f| f.arrival > burst_at + Duration::from_millis(700) && voiced_frame(f));
    let held = longest_gap(&frames, burst_at, Duration::from_millis(1500));
    let holds = server.metric("voxloop_holds_resumed_total").await;
    println!(
        "reply {text:?}: interrupted {interrupted}, {barge_ins} barge-ins, {holds} holds resumed; \
         the speech burst paused the reply audio for {} ms",
        held.as_millis()
    );
    assert!(!interrupted && barge_ins == 0, "a burst cut the reply");
    // The speech burst was heard as speech (the test would prove nothing
    // otherwise), held the reply, and the reply went on after it.
    assert!(holds >= 1.0, "the speech burst held nothing");
    assert!(resumed, "no reply audio after the burst");
    assert_eq!(server.metric("voxloop_barge_ins_total").await, 0.0);
    client.bye().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_stops_the_reply() {
    let server = server();
    let mut client = connect(&server).await;
    // A question with a long answer.
    say(&client, &clip48("q02_joke.wav"), Duration::from_millis(300)).await;
    let reply_started = reply_audio_begins(&client).await;
    client
        .send_silence(Duration::from_millis(500))
        .await
        .unwrap();
    // Interrupt.
    let interrupt = clip48("q09_interrupt.wav");
    let report = say(&client, &interrupt, Duration::from_millis(1500)).await;
    let speech_start = report
        .time_of_sample(voxloop::audio::first_voiced(&interrupt).unwrap())
        .unwrap();
    let mut barge_in = None;
    let (turn, heard) = client
        .wait_for(Duration::from_secs(10), |e| match e {
            Event::BargeIn { turn } => {
                barge_in = Some(turn);
                None
            }
            Event::Reply {
                turn,
                text,
                interrupted: true,
                ..
            } => Some((turn, text)),
            _ => None,
        })
        .await
        .expect("the reply is marked interrupted");
    println!("interrupted reply of turn {turn}: heard {heard:?}");
    // The interruption frame announces the cut before the reply that says
    // what was heard.
    assert_eq!(
        barge_in,
        Some(turn),
        "no barge_in before the interrupted reply"
    );
    // When did the reply audio stop? The first silent frame after which no
    // voiced frame came for 300 ms, after the interruption began.
    let frames = client.received();
    let after: Vec<&ReceivedFrame> = frames
        .iter()
        .filter(|f| f.arrival >= speech_start)
        .collect();
    let mut stopped = None;
    for (i, f) in after.iter().enumerate() {
        if !voiced_frame(f) {
            let quiet_for = after[i..]
                .iter()
                .take_while(|g| !voiced_frame(g))
                .last()
                .map(|g| g.arrival.duration_since(f.arrival))
                .unwrap_or_default();
            if quiet_for >= Duration::from_millis(300) || i + 1 == after.len() {
                stopped = Some(f.arrival);
                break;
            }
        }
    }
    let stopped = stopped.expect("reply audio never stopped");
    let latency = stopped.duration_since(speech_start);
    println!(
        "barge-in: reply audio began {:?} before the interruption; stopped {} ms after the user started speaking",
        speech_start.duration_since(reply_started),
        latency.as_millis()
    );
    // The reply pauses once `turn.min_speech_ms` (96) of speech is heard:
    // 107-145 ms here (issue 11's bound at a client: 300 ms).
    println!(
        "stop latency {} ms, bound 250 ms, margin {} ms",
        latency.as_millis(),
        250i128 - latency.as_millis() as i128
    );
    assert!(
        latency <= Duration::from_millis(250),
        "stop latency {latency:?}"
    );
    assert!(server.metric("voxloop_barge_ins_total").await >= 1.0);
    client.bye().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_audio_long_monologues_and_silence_are_survived() {
    let server = server();
    let mut client = connect(&server).await;
    // Clipped square waves and noise.
    let mut seed = 7u32;
    let mut junk: Vec<f32> = (0..WIRE_RATE as usize * 2)
        .map(|i| if (i / 60) % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    junk.extend((0..WIRE_RATE as usize * 2).map(|_| {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 1.8
    }));
    say(&client, &junk, Duration::from_millis(1500)).await;
    // Whatever the junk produced (often nothing), let it settle and forget it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    while client.next_event(Duration::from_millis(50)).await.is_some() {}
    // A 42 s monologue: the turn is capped (30 s) and still answered.
    let long: Vec<f32> = (0..4).flat_map(|_| clip48("q10_long.wav")).collect();
    let started = Instant::now();
    client.send_pcm(&long, 1.0).await.expect("monologue sent");
    let text = client
        .wait_for(Duration::from_secs(30), |e| match e {
            Event::Transcript { text, .. } => Some(text),
            _ => None,
        })
        .await
        .expect("a capped monologue is still transcribed");
    println!(
        "monologue transcript after {:?}: {} chars: {text:?}",
        started.elapsed(),
        text.len()
    );
    assert!(
        text.len() > 100,
        "the capped turn was not transcribed: {text:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(70));
    // Then nothing for a while: the session stays up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        client.ended().is_none(),
        "session ended: {:?}",
        client.ended()
    );
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
    // Hang up mid-reply: resources are released.
    say(
        &client,
        &clip48("q02_joke.wav"),
        Duration::from_millis(1200),
    )
    .await;
    client.abort().await;
    assert!(
        server.sessions_drained(Duration::from_secs(10)).await,
        "session not released after a mid-reply disconnect"
    );
}
