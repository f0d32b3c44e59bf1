//! The web page (`web/`) in a real browser: Debian's Chromium, driven by
//! Playwright scripts in `tests/browser/`, against the real server. Each test
//! starts `voxloop serve`, runs one scenario with node, and asserts on the
//! JSON line it reports (`RESULT {...}`).
//!
//! Chromium (`apt-get install chromium`), node and `tests/browser/node_modules`
//! (`npm ci --prefix tests/browser`) must be there: `scripts/install-deps.sh`
//! and `scripts/test.sh` install them, and a missing one fails the test.
//! Screenshots go to `docs/artifacts/browser/` (or `VOXLOOP_ARTIFACTS_DIR`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Server, data};
use serde_json::Value;
use voxloop::WIRE_RATE;

/// One browser and one server at a time, whatever `--test-threads` says:
/// the speech tests share 2 cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A scenario that runs longer than this is killed (they stop themselves sooner).
const SCENARIO_LIMIT: Duration = Duration::from_secs(200);

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> PathBuf {
    std::env::var_os("VOXLOOP_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn artifacts_dir() -> PathBuf {
    std::env::var_os("VOXLOOP_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("docs/artifacts/browser"))
}

/// Fail (not skip) when the browser tooling is missing: CI installs it.
fn require_tools() {
    let chromium = chromium();
    assert!(
        chromium.exists(),
        "Chromium not found at {}: install it with `apt-get install chromium` \
         (scripts/install-deps.sh does) or set VOXLOOP_CHROMIUM",
        chromium.display()
    );
    let node = Command::new("node").arg("--version").output();
    let version = match &node {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => panic!(
            "node not found: install Node.js 20 or later (scripts/install-deps.sh installs npm): {node:?}"
        ),
    };
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "node {version} is too old for playwright-core: install Node.js 20 or later"
    );
    let pw = manifest_dir().join("tests/browser/node_modules/playwright-core/package.json");
    assert!(
        pw.exists(),
        "playwright-core is not installed in tests/browser/node_modules: run \
         `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
}

/// A scratch directory for WAV files and browser profiles, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("voxloop-browser-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `clip` with `lead` seconds of silence before (the call is connecting) and
/// `tail` after (Chromium loops the file; the question must come once).
fn padded_wav(dir: &Path, clip: &str, lead: f32, tail: f32) -> PathBuf {
    let speech = voxloop::audio::decode_file_mono(&data(clip), WIRE_RATE).expect("decode clip");
    let secs = |s: f32| (s * WIRE_RATE as f32) as usize;
    let mut pcm = vec![0.0; secs(lead)];
    pcm.extend_from_slice(&speech);
    pcm.extend(std::iter::repeat_n(0.0, secs(tail)));
    let path = dir.join(format!("padded-{clip}"));
    voxloop::audio::write_wav(&path, &pcm, WIRE_RATE).expect("write padded wav");
    path
}

fn silence_wav(dir: &Path) -> PathBuf {
    let path = dir.join("silence.wav");
    voxloop::audio::write_wav(&path, &vec![0.0; WIRE_RATE as usize * 5], WIRE_RATE)
        .expect("write silence wav");
    path
}

fn speech_server() -> Server {
    Server::start(
        &["--pipeline", "speech"],
        &[("VOXLOOP_MODELS_PROFILE", "fast")],
    )
}

/// Run `node tests/browser/<script>` against `url`. `on_step` answers each
/// `STEP name` line the script prints (it waits for the answer on stdin).
/// Returns whether the script exited 0, and its RESULT object.
fn run_scenario(
    script: &str,
    url: &str,
    fake_mic: &Path,
    scratch: &Path,
    mut on_step: impl FnMut(&str) -> String,
) -> (bool, Value) {
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(manifest_dir().join("tests/browser").join(script))
        .current_dir(manifest_dir())
        .env("VOXLOOP_URL", url)
        .env("VOXLOOP_FAKE_MIC", fake_mic)
        .env("VOXLOOP_ARTIFACTS", artifacts_dir())
        .env("VOXLOOP_CHROMIUM", chromium())
        .env("VOXLOOP_TMP", scratch)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn node");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut result = None;
    loop {
        let left = SCENARIO_LIMIT.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(step) = line.strip_prefix("STEP ") {
                    println!("{script}: step {step}");
                    let answer = on_step(step);
                    writeln!(stdin, "{answer}").expect("answer the scenario");
                } else if let Some(json) = line.strip_prefix("RESULT ") {
                    result = Some(serde_json::from_str::<Value>(json).expect("RESULT is JSON"));
                } else {
                    println!("{script}: {line}");
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{script} did not finish within {SCENARIO_LIMIT:?}");
            }
        }
    }
    let status = child.wait().expect("wait for node");
    println!(
        "{script}: exit {status} after {:.1} s",
        started.elapsed().as_secs_f32()
    );
    let result = result.unwrap_or_else(|| panic!("{script} printed no RESULT line ({status})"));
    (status.success(), result)
}

fn no_steps(step: &str) -> String {
    panic!("unexpected step {step}")
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn transcript(page: &Value) -> Vec<Value> {
    page["transcript"].as_array().cloned().unwrap_or_default()
}

fn entries<'a>(t: &'a [Value], role: &str) -> Vec<&'a Value> {
    t.iter().filter(|e| e["role"] == role).collect()
}

fn text(e: &Value) -> String {
    e["text"].as_str().unwrap_or_default().to_string()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Test 1: the spoken question, end to end through the page.
#[test]
fn spoken_question_through_the_page() {
    let _one = lock();
    require_tools();
    let scratch = Scratch::new("conversation");
    let mic = padded_wav(&scratch.0, "q01_capital_france.wav", 3.0, 40.0);
    let server = speech_server();
    let (ok, r) = run_scenario("conversation.mjs", &server.url, &mic, &scratch.0, no_steps);
    println!("result: {r}");
    assert!(ok, "the conversation scenario failed: {r:#}");

    let page = &r["page"];
    let t = transcript(page);
    let users = entries(&t, "user");
    assert!(
        users
            .iter()
            .any(|e| text(e).to_lowercase().contains("capital of france")),
        "user transcript: {users:?}"
    );
    let replies = entries(&t, "assistant");
    let reply = replies
        .iter()
        .find(|e| e["final"] == true)
        .expect("a final reply");
    assert!(
        text(reply).to_lowercase().contains("paris"),
        "reply: {reply}"
    );
    assert_eq!(reply["interrupted"], false);
    assert_eq!(reply["proactive"], false);

    // The assistant meter moved with the reply and was still before it.
    let levels = &r["levels"];
    let (before, peak, mic_peak) = (
        num(&levels["assistantBeforeReply"]),
        num(&levels["assistant"]),
        num(&levels["mic"]),
    );
    println!(
        "levels: assistant before reply {before:.4}, assistant peak {peak:.4}, mic peak {mic_peak:.4}"
    );
    assert!(
        before < 0.005,
        "assistant meter moved before any reply: {before}"
    );
    assert!(peak > 0.02, "assistant meter did not move: {peak}");
    assert!(mic_peak > 0.02, "microphone meter did not move: {mic_peak}");

    // Latency readout from the server's timings event.
    let timings = &page["timings"];
    let total = num(&timings["total_ms"]);
    assert!(total > 0.0 && total < 20_000.0, "timings: {timings}");
    let shown = page["latencyText"].as_str().unwrap_or_default();
    assert_eq!(shown, format!("{:.2} s", total / 1000.0), "latency readout");

    // Session panel.
    let id = page["sessionId"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 32, "session id {id:?}");
    assert_eq!(page["sessionText"], id);
    let codec = page["codecText"].as_str().unwrap_or_default();
    assert!(codec.starts_with("opus 48 kHz"), "codec: {codec}");
    assert!(
        page["rttText"].as_str().unwrap_or_default().ends_with("ms"),
        "RTT: {}",
        page["rttText"]
    );
    assert_eq!(
        r["phoneOverflow"], false,
        "the page scrolls sideways on a phone"
    );
    let shot = PathBuf::from(r["screenshot"].as_str().expect("screenshot path"));
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "screenshot {}",
        shot.display()
    );
    println!("screenshots: {}", artifacts_dir().display());
}

/// Test 2: busy, server down, server back on the same port: clear errors and
/// reconnecting without a reload.
#[test]
fn errors_and_reconnect_without_reload() {
    let _one = lock();
    require_tools();
    let scratch = Scratch::new("reconnect");
    let mic = silence_wav(&scratch.0);
    let args = ["--pipeline", "echo", "--max-sessions", "1"];
    let first = Server::start(&args, &[]);
    let url = first.url.clone();
    let bind = url.trim_start_matches("http://").to_string();
    let mut server = Some(first);
    let (ok, r) = run_scenario("reconnect.mjs", &url, &mic, &scratch.0, |step| match step {
        "connected" => {
            drop(server.take()); // killed, not shut down: the page must notice
            "down".into()
        }
        "unreachable" => {
            server = Some(Server::start_at(&bind, &args, &[]));
            "up".into()
        }
        other => panic!("unexpected step {other}"),
    });
    println!("result: {r}");
    assert!(ok, "the reconnect scenario failed: {r:#}");

    let alert = |k: &str| r[k]["alertText"].as_str().unwrap_or_default().to_string();
    assert_eq!(r["busy"]["error"]["code"], "busy");
    assert!(alert("busy").contains("busy"), "{}", alert("busy"));
    assert_eq!(r["lost"]["error"]["code"], "lost");
    assert!(alert("lost").contains("lost"), "{}", alert("lost"));
    assert_eq!(r["unreachable"]["error"]["code"], "unreachable");
    assert!(
        alert("unreachable").contains("Cannot reach the voxloop server"),
        "{}",
        alert("unreachable")
    );
    let after = &r["afterReconnect"];
    assert_eq!(after["alertVisible"], false);
    assert_eq!(after["connected"], true);
    // The page asks to resume its session id after a lost connection, so
    // prompts addressed to it while it was away still arrive.
    let (old, new) = (r["firstSession"].as_str(), after["sessionId"].as_str());
    assert!(
        old.is_some() && old == new,
        "session not resumed: {old:?} → {new:?}"
    );
    assert_eq!(r["notReloaded"], true, "the page was reloaded");
}

/// Microphone denied: an error that says what to do, and a call without it.
#[test]
fn microphone_denied_then_connect_without_it() {
    let _one = lock();
    require_tools();
    let scratch = Scratch::new("microphone");
    let mic = silence_wav(&scratch.0);
    let server = Server::start(&["--pipeline", "echo"], &[]);
    let (ok, r) = run_scenario("microphone.mjs", &server.url, &mic, &scratch.0, no_steps);
    println!("result: {r}");
    assert!(ok, "the microphone scenario failed: {r:#}");
    assert_eq!(r["denied"]["error"]["code"], "mic_denied");
    assert!(
        r["denied"]["alertText"]
            .as_str()
            .unwrap_or_default()
            .contains("Microphone access was blocked"),
        "{}",
        r["denied"]["alertText"]
    );
    assert_eq!(r["after"]["connected"], true);
    assert_eq!(r["textEnabled"], true);
    assert_eq!(r["muteDisabled"], true);
}

/// Auth on (issue 14): the page without a token is refused; opened from a
/// `voxloop token --url` join link it connects.
#[test]
fn join_link_connects_with_auth_on() {
    let _one = lock();
    require_tools();
    let scratch = Scratch::new("join_link");
    let mic = silence_wav(&scratch.0);
    let server = Server::start(
        &["--pipeline", "echo"],
        &[("VOXLOOP_AUTH_KEY", common::AUTH_KEY)],
    );
    let link = common::mint_token(&[
        "--identity",
        "browser-user",
        "--url",
        "--base-url",
        &server.url,
    ]);
    assert!(
        link.starts_with(&format!("{}/#token=", server.url)),
        "{link}"
    );
    let (ok, r) = run_scenario("join_link.mjs", &link, &mic, &scratch.0, no_steps);
    println!("result: {r}");
    assert!(ok, "the join link scenario failed: {r:#}");
    assert_eq!(r["refusedWithoutToken"], true);
    assert_eq!(r["hashCleared"], true);
    assert_eq!(r["connected"], true);
}

/// The page renders every documented data-channel event: injected on the
/// real events channel of a live call (the server's side of these events is
/// tested in tests/conversation.rs).
#[test]
fn page_renders_every_event_type() {
    let _one = lock();
    require_tools();
    let scratch = Scratch::new("events");
    let mic = silence_wav(&scratch.0);
    let server = Server::start(&["--pipeline", "echo"], &[]);
    let (ok, r) = run_scenario("events.mjs", &server.url, &mic, &scratch.0, no_steps);
    println!("result: {r}");
    assert!(ok, "the events scenario failed: {r:#}");

    let t = transcript(&r["page"]);
    let assistant = entries(&t, "assistant");
    let interrupted = assistant
        .iter()
        .find(|e| e["turn"] == 1)
        .expect("turn 1 reply");
    assert_eq!(interrupted["interrupted"], true);
    assert_eq!(text(interrupted), "Once upon a time");
    // barge_in alone already ended the entry's streaming and marked it cut.
    assert_eq!(r["streaming"], "true");
    assert_eq!(r["bargeIn"]["busy"], "false", "{}", r["bargeIn"]);
    assert_eq!(r["bargeIn"]["interrupted"], "true", "{}", r["bargeIn"]);
    assert_eq!(r["bargeIn"]["count"], 1, "{}", r["bargeIn"]);
    assert_eq!(r["dom"]["unheard"], "there was a fox who ran.");
    assert_eq!(r["dom"]["interruptedBadge"], "interrupted");
    let prompt = assistant
        .iter()
        .find(|e| e["turn"] == 2)
        .expect("turn 2 prompt");
    assert_eq!(prompt["proactive"], true);
    assert_eq!(text(prompt), "Your meeting starts in five minutes.");
    assert_eq!(r["dom"]["proactiveBadge"], "proactive");
    let busy = assistant
        .iter()
        .find(|e| e["turn"] == 3)
        .expect("turn 3 busy");
    assert_eq!(busy["busy"], true);
    assert!(
        entries(&t, "system")
            .iter()
            .any(|e| text(e).contains("failed on turn 4")),
        "{t:?}"
    );
    // The typed message and its transcript are one bubble.
    let typed: Vec<_> = entries(&t, "user")
        .into_iter()
        .filter(|e| text(e).starts_with("Hello there"))
        .collect();
    assert_eq!(typed.len(), 1, "{typed:?}");
    assert_eq!(typed[0]["typed"], true);
    assert_eq!(typed[0]["turn"], 5);
    assert_eq!(r["dom"]["latency"], "1.23 s");
    assert_eq!(r["dom"]["asrStage"], "150 ms");
    assert_eq!(
        r["states"],
        serde_json::json!(["Thinking…", "You are speaking", "Speaking"])
    );
    assert_eq!(r["muted"]["pressed"], "true");
    assert_eq!(r["muted"]["trackEnabled"], false);
}

/// Test 3: a proactive prompt (`POST /sessions/{id}/prompt`) shows in the
/// transcript marked as proactive, and is heard.
#[test]
fn proactive_prompt_is_marked_in_the_transcript() {
    let _one = lock();
    require_tools();
    let scratch = Scratch::new("prompt");
    let mic = silence_wav(&scratch.0);
    let server = speech_server();
    let (ok, r) = run_scenario("prompt.mjs", &server.url, &mic, &scratch.0, no_steps);
    println!("result: {r}");
    assert!(ok, "the prompt scenario failed: {r:#}");
    let status = r["post"]["status"].as_u64().unwrap_or(0);
    assert!((200..300).contains(&status), "POST prompt: {}", r["post"]);
    let want = r["prompt"]["text"].as_str().expect("prompt text");
    let t = transcript(&r["page"]);
    let shown = entries(&t, "assistant")
        .into_iter()
        .find(|e| e["proactive"] == true)
        .expect("a proactive entry");
    assert!(text(shown).contains(want), "{shown}");
    assert_eq!(r["marked"]["badge"], "proactive");
    assert!(num(&r["assistantPeak"]) > 0.02, "the prompt was not heard");
}

/// A typed message gets a spoken reply.
#[test]
fn typed_message_gets_a_spoken_reply() {
    let _one = lock();
    require_tools();
    let scratch = Scratch::new("typed");
    let mic = silence_wav(&scratch.0);
    let server = speech_server();
    let (ok, r) = run_scenario("typed.mjs", &server.url, &mic, &scratch.0, no_steps);
    println!("result: {r}");
    assert!(ok, "the typed scenario failed: {r:#}");
    assert_eq!(r["typedShown"], true);
    assert_eq!(r["inputCleared"], true);
    let t = transcript(&r["page"]);
    let reply = entries(&t, "assistant")
        .into_iter()
        .find(|e| e["final"] == true)
        .expect("a final reply");
    assert!(
        text(reply).to_lowercase().contains("paris"),
        "reply: {reply}"
    );
    let questions = entries(&t, "user")
        .into_iter()
        .filter(|e| text(e).to_lowercase().contains("capital of france"))
        .count();
    assert_eq!(questions, 1, "the typed question shows once: {t:?}");
}
