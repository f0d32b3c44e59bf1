//! NATS helpers for the tests that drive prompts and events through a real
//! `nats-server`: an event recorder, JetStream publishing, and waits on the
//! server's and the client's view.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use serde_json::Value;
use voxloop::audio::resample_clip;
use voxloop::client::{Client, ClientOptions};
use voxloop::events::{Event, State};
use voxloop::{PIPELINE_RATE, WIRE_RATE, engines};

use super::{Nats, Server};

pub const GRACE_MS: u64 = 1000;

/// `voxloop serve` with the speech pipeline (fast models) on `nats`.
pub fn serve(nats: &Nats, extra: &[(&str, &str)]) -> Server {
    let grace = GRACE_MS.to_string();
    let mut env = vec![
        ("VOXLOOP_MODELS_PROFILE", "fast"),
        ("VOXLOOP_NATS_URL", nats.url.as_str()),
        ("VOXLOOP_PROMPT_GRACE_MS", grace.as_str()),
    ];
    env.extend_from_slice(extra);
    Server::start(&["--pipeline", "speech"], &env)
}

/// Every event the server publishes, collected in the background.
#[derive(Clone)]
pub struct Events {
    log: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Events {
    pub async fn subscribe(url: &str) -> Events {
        let client = async_nats::connect(url).await.expect("nats connect");
        let mut sub = client
            .subscribe("voxloop.event.>")
            .await
            .expect("subscribe");
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        tokio::spawn(async move {
            let _client = client;
            while let Some(m) = sub.next().await {
                let v: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
                l.lock().unwrap().push((m.subject.to_string(), v));
            }
        });
        Events { log }
    }

    pub fn all(&self) -> Vec<(String, Value)> {
        self.log.lock().unwrap().clone()
    }

    /// Wait for an event on `subject` whose payload satisfies `pred`.
    pub async fn wait(&self, subject: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some((_, v)) = self
                .all()
                .into_iter()
                .find(|(s, v)| s == subject && pred(v))
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {subject} event within {secs} s; seen: {:?}",
                self.all()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn count(&self, subject: &str, pred: impl Fn(&Value) -> bool) -> usize {
        self.all()
            .iter()
            .filter(|(s, v)| s == subject && pred(v))
            .count()
    }
}

pub async fn js(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.expect("nats connect"))
}

/// Publish raw bytes through JetStream (the prompt stream must exist: the
/// server creates it; `wait_stream` waits for that).
pub async fn publish(js: &jetstream::Context, subject: String, payload: Vec<u8>) {
    js.publish(subject, payload.into())
        .await
        .expect("publish")
        .await
        .expect("stream ack");
}

pub async fn publish_prompt(js: &jetstream::Context, session: &str, prompt: Value) {
    publish(
        js,
        format!("voxloop.prompt.session.{session}"),
        prompt.to_string().into_bytes(),
    )
    .await;
}

pub async fn wait_stream(js: &jetstream::Context) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while js.get_stream("VOXLOOP_PROMPTS").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "server never created the prompt stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn wait_nats_state(server: &Server, state: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (_, body) = server.get("/healthz").await;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if v["nats"] == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "healthz nats never became {state}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn connect(server: &Server) -> Client {
    Client::connect(&server.url, ClientOptions::default())
        .await
        .expect("connect")
}

/// Connect to `server` asking for session id `id` (a resume), and check it was given.
pub async fn resume(server: &Server, id: &str) -> Client {
    let opts = ClientOptions {
        session_id: Some(id.into()),
        ..ClientOptions::default()
    };
    let client = Client::connect(&server.url, opts).await.expect("resume");
    assert_eq!(client.session_id, id);
    client
}

/// The first client event `pick` takes something from.
pub async fn wait_ev<T>(client: &mut Client, secs: u64, pick: impl FnMut(Event) -> Option<T>) -> T {
    client
        .wait_for(Duration::from_secs(secs), pick)
        .await
        .unwrap_or_else(|| panic!("no matching client event within {secs} s"))
}

/// The first `prompt` event whose id `want` accepts: its id and text.
pub async fn prompt_ev(
    client: &mut Client,
    secs: u64,
    want: impl Fn(&str) -> bool,
) -> (String, String) {
    wait_ev(client, secs, |e| match e {
        Event::Prompt { id, text, .. } if want(&id) => Some((id, text)),
        _ => None,
    })
    .await
}

/// The text of the first `reply` of `turn` (any turn if `None`).
pub async fn reply_ev(client: &mut Client, secs: u64, turn: Option<u64>) -> String {
    wait_ev(client, secs, |e| match e {
        Event::Reply { turn: t, text, .. } if turn.is_none_or(|w| w == t) => Some(text),
        _ => None,
    })
    .await
}

pub async fn listening(client: &mut Client, secs: u64) {
    wait_ev(client, secs, |e| e.is_state(State::Listening).then_some(())).await
}

/// Wait until the assistant speaks (a reply has started playing).
pub async fn speaking(client: &mut Client, secs: u64) {
    wait_ev(client, secs, |e| e.is_state(State::Speaking).then_some(())).await
}

/// Run `voxloop say ARGS --nats-url URL`: (exit code, stdout, stderr).
pub fn say_cli(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_voxloop"))
        .arg("say")
        .args(args)
        .args(["--nats-url", url])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("VOXLOOP_CONFIG")
        .env("VOXLOOP_LOG", "warn")
        .output()
        .expect("run voxloop say");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    println!(
        "voxloop say {args:?} -> {:?}\n{stdout}{stderr}",
        out.status.code()
    );
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

pub async fn say_async(url: &str, args: &[&str]) -> (i32, String, String) {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        say_cli(&url, &a)
    })
    .await
    .expect("join")
}

/// Whisper (fast profile, the full window) to check what a client heard.
pub fn asr() -> voxloop::pipeline::asr::Asr {
    let mut c = super::model_config("fast");
    c.inference.asr_fit_audio_ctx = false;
    engines::load_asr(&c).expect("whisper for checking")
}

/// Audio received after `from`, at 16 kHz, for transcription.
pub fn audio_since(client: &Client, from: Instant) -> Vec<f32> {
    let pcm: Vec<f32> = client
        .received()
        .iter()
        .filter(|f| f.arrival >= from)
        .flat_map(|f| f.pcm.iter().copied())
        .collect();
    resample_clip(&pcm, WIRE_RATE, PIPELINE_RATE).expect("resample")
}
