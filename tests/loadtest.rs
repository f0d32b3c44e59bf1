//! `voxloop loadtest` end to end: the real binary loads a real server (started
//! here on a random port) with virtual users that are real WebRTC clients,
//! and the tests read its JSON, report and plots. Also the server's side of
//! overload: the busy line is heard and counted, and no session fails.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::Server;
use serde_json::Value;

/// A scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("voxloop-lt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A `transcripts.tsv` in `dir` naming shared test clips by absolute path.
fn corpus(dir: &Path, clips: &[&str]) -> PathBuf {
    let src = std::fs::read_to_string(common::data("transcripts.tsv")).expect("transcripts.tsv");
    let mut tsv = String::from("file\tvoice\ttext\n");
    for clip in clips {
        let line = src
            .lines()
            .find(|l| l.starts_with(&format!("{clip}\t")))
            .unwrap_or_else(|| panic!("{clip} not in transcripts.tsv"));
        let (_, rest) = line.split_once('\t').expect("tsv line");
        tsv.push_str(&format!("{}\t{rest}\n", common::data(clip).display()));
    }
    let audio = dir.join("audio");
    std::fs::create_dir_all(&audio).expect("audio dir");
    std::fs::write(audio.join("transcripts.tsv"), tsv).expect("write tsv");
    audio
}

/// A speech server on the fast models, with `args` after `--pipeline speech`;
/// `deadline_ms` sets `VOXLOOP_START_DEADLINE_MS` (`None`: the default).
fn speech_server(args: &[&str], deadline_ms: Option<&str>) -> Server {
    let mut all = vec!["--pipeline", "speech"];
    all.extend_from_slice(args);
    let mut env = vec![("VOXLOOP_MODELS_PROFILE", "fast")];
    if let Some(ms) = deadline_ms {
        env.push(("VOXLOOP_START_DEADLINE_MS", ms));
    }
    Server::start(&all, &env)
}

/// Run `voxloop loadtest` against `server`; returns (stdout, the run's JSON).
async fn loadtest(server: &Server, out: &Path, args: &[&str]) -> (String, Value) {
    let started = Instant::now();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxloop"))
        .arg("loadtest")
        .arg("--url")
        .arg(&server.url)
        .arg("--out")
        .arg(out)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("VOXLOOP_CONFIG")
        .output()
        .await
        .expect("run voxloop loadtest");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!(
        "--- loadtest ({:.1} s) ---\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success(),
        "loadtest failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let json = std::fs::read_to_string(out.join("loadtest.json")).expect("loadtest.json");
    (
        stdout,
        serde_json::from_str(&json).expect("loadtest.json parses"),
    )
}

fn turns(run: &Value) -> &Vec<Value> {
    run["turns"].as_array().expect("turns array")
}

fn outcome_count(run: &Value, outcome: &str) -> usize {
    turns(run)
        .iter()
        .filter(|t| t["outcome"] == outcome)
        .count()
}

fn print_turns(run: &Value) {
    for t in turns(run) {
        println!(
            "user {} turn {} {} {:>7} v2v {:>6} ms wer {:>4} {:?} -> {:?} {}",
            t["user"],
            t["turn"],
            t["utterance"]
                .as_str()
                .unwrap_or("")
                .rsplit('/')
                .next()
                .unwrap_or(""),
            t["outcome"].as_str().unwrap_or(""),
            t["voice_to_voice_ms"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.0}")),
            t["wer"]
                .as_f64()
                .map_or("-".into(), |v| format!("{:.0}%", v * 100.0)),
            t["transcript"].as_str().unwrap_or(""),
            t["reply"]
                .as_str()
                .or(t["busy_reason"].as_str())
                .unwrap_or(""),
            t["error"]["message"].as_str().unwrap_or(""),
        );
    }
}

fn server_late_pct(run: &Value) -> f64 {
    run["server"]["late_pct"]
        .as_f64()
        .expect("server figures from /metrics")
}

/// No session's media stalled. Late frames as the receivers saw them (the
/// issue's measure: RTP time vs arrival through a 40 ms jitter buffer) stay
/// under 1 %. The server's own counter is stricter (a frame sent 10 ms after
/// its deadline) and moves with other processes on a shared 2-core machine
/// (3 % at load 4 while receivers saw 0.03 %); a real stall, such as
/// inference on the async runtime, sends it far past 5 %.
fn assert_media_healthy(run: &Value) {
    let client = run["summary"]["late_pct"].as_f64().expect("late_pct");
    let server = server_late_pct(run);
    println!(
        "late frames: {client:.3} % received, {server:.3} % sent (server); 1-min load {} -> {}",
        run["machine"]["load_start"], run["machine"]["load_end"]
    );
    assert!(client < 1.0, "receivers saw {client:.2} % late frames");
    assert!(server < 5.0, "server sent {server:.2} % of frames late");
}

fn md_has_vad_lag(out: &Path) -> bool {
    std::fs::read_to_string(out.join("report.md")).is_ok_and(|md| md.contains("VAD lag"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_conversational_load() {
    // Replies, not busy lines, even when the machine is shared: the start
    // deadline has its own test below.
    let server = speech_server(&[], Some("30000"));
    let dir = scratch("conversation");
    let audio = corpus(
        &dir,
        &[
            "q01_capital_france.wav",
            "q03_minutes.wav",
            "q06_hello.wav",
            "q07_thanks.wav",
            "q08_name.wav",
        ],
    );
    let out = dir.join("out");
    let (stdout, run) = loadtest(
        &server,
        &out,
        &[
            "--sessions",
            "3",
            "--ramp",
            "3/s",
            "--turns",
            "2",
            "--duration",
            "150s",
            "--think",
            "0.5s..1s",
            "--turn-timeout",
            "40s",
            "--seed",
            "7",
            "--audio",
            audio.to_str().unwrap(),
        ],
    )
    .await;
    print_turns(&run);
    for label in [
        "run: ",
        "summary: ",
        "server: ",
        "json: ",
        "plot: ",
        "report: ",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(label)),
            "no {label:?} line"
        );
    }
    let summary = &run["summary"];
    assert_eq!(turns(&run).len(), 6, "3 users x 2 turns");
    assert_eq!(summary["failed"], 0, "failed turns");
    assert_eq!(summary["replied"], 6, "every turn answered");
    assert_eq!(summary["connect_failures"], 0);
    assert_eq!(summary["sessions_held"], 3);
    for t in turns(&run) {
        assert!(
            t["voice_to_voice_ms"].as_f64().is_some_and(|v| v > 0.0),
            "turn without a latency: {t}"
        );
        assert!(
            t["transcript"].is_string(),
            "turn without a transcript: {t}"
        );
    }
    let wer = summary["wer_pct"]["mean"].as_f64().expect("WER");
    println!(
        "mean WER over the turns {wer:.1} % (bound 25 %, margin {:.1} points)",
        25.0 - wer
    );
    assert!(wer <= 25.0, "mean WER {wer:.1} %");
    // Stage timings came from the data channel.
    assert!(summary["stages_ms"]["asr_ms"]["n"].as_u64().unwrap_or(0) >= 1);
    // The server scored the users' audio and reported how far behind it ran
    // (a figure, not a bound: timing goals live in the benchmarks).
    let lag = run["server"]["vad_lag_mean_ms"]
        .as_f64()
        .expect("VAD lag in the report");
    println!(
        "VAD lag: mean {lag:.1} ms, {} % of batches over 100 ms, max {} ms",
        run["server"]["vad_lag_over_100ms_pct"], run["server"]["vad_lag_max_ms"]
    );
    assert!(lag > 0.0, "a VAD lag of {lag} ms");
    assert!(md_has_vad_lag(&out), "the report shows the VAD lag");
    // Report and plots.
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(md.contains("voice-to-voice"), "{md}");
    for svg in ["latency_over_time.svg", "latency_histogram.svg"] {
        let text = std::fs::read_to_string(out.join(svg)).expect(svg);
        assert!(text.starts_with("<svg") && text.len() > 1000, "{svg}");
        assert!(md.contains(svg));
    }
    println!(
        "v2v p50 {} ms p95 {} ms",
        summary["voice_to_voice_ms"]["p50"], summary["voice_to_voice_ms"]["p95"],
    );
    // Another session's inference must not stall this one's media.
    assert_media_healthy(&run);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_mode_holds_twenty_sessions() {
    let server = Server::start(&["--pipeline", "echo"], &[]);
    let dir = scratch("media");
    let audio = corpus(
        &dir,
        &["q01_capital_france.wav", "q06_hello.wav", "q07_thanks.wav"],
    );
    let out = dir.join("out");
    let (stdout, run) = loadtest(
        &server,
        &out,
        &[
            "--mode",
            "media",
            "--sessions",
            "20",
            "--ramp",
            "10/s",
            "--turns",
            "2",
            "--duration",
            "90s",
            "--think",
            "0.5s..1.5s",
            "--seed",
            "3",
            "--audio",
            audio.to_str().unwrap(),
        ],
    )
    .await;
    assert!(stdout.lines().any(|l| l.starts_with("media: ")));
    let s = &run["summary"];
    println!(
        "held {} / 20, client late {:.3} %, glitches/min {:.2}, server late {:.3} %, server CPU per session {} %",
        s["sessions_held"],
        s["late_pct"].as_f64().unwrap_or(-1.0),
        s["glitches_per_min"].as_f64().unwrap_or(-1.0),
        server_late_pct(&run),
        run["server"]["cpu_per_session_pct"]
    );
    assert_eq!(s["failed"], 0, "failed turns");
    assert_eq!(s["connect_failures"], 0);
    assert_eq!(s["sessions_held"], 20);
    assert_eq!(turns(&run).len(), 40);
    assert_media_healthy(&run);
    std::fs::remove_dir_all(&dir).ok();
}

/// A server whose inference queues hold one job: a burst of simultaneous
/// turns overflows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_plays_the_busy_line_and_no_session_fails() {
    let dir = scratch("overload");
    let config = dir.join("queue1.toml");
    std::fs::write(
        &config,
        "[inference]\nasr_queue = 1\nllm_slots = 1\nllm_queue = 1\n",
    )
    .unwrap();
    // The queue path alone: no start deadline (it has its own test), so
    // the turns that got into the queues are answered however slow the
    // machine is.
    let server = speech_server(&["--config", config.to_str().unwrap()], Some("0"));
    // Everyone says the same short thing at the same moment.
    let audio = corpus(&dir, &["q06_hello.wav"]);
    let out = dir.join("out");
    let (_, run) = loadtest(
        &server,
        &out,
        &[
            "--sessions",
            "6",
            "--ramp",
            "50/s",
            "--turns",
            "2",
            "--duration",
            "120s",
            "--think",
            "0.3s",
            "--turn-timeout",
            "40s",
            "--seed",
            "1",
            "--audio",
            audio.to_str().unwrap(),
        ],
    )
    .await;
    print_turns(&run);
    let busy = outcome_count(&run, "busy");
    let counted = server.metric("voxloop_busy_replies_total").await;
    println!("busy-line turns {busy}, server counted {counted}");
    assert!(busy >= 1, "no turn got the busy line");
    // The busy line was heard: voiced audio came back for those turns.
    for t in turns(&run).iter().filter(|t| t["outcome"] == "busy") {
        assert!(
            t["voice_to_voice_ms"].as_f64().is_some(),
            "busy line not heard: {t}"
        );
        assert_eq!(t["busy_reason"], "queue_full", "{t}");
    }
    assert!(
        counted >= busy as f64,
        "/metrics counted {counted} busy lines"
    );
    assert_eq!(run["summary"]["failed"], 0, "a turn failed");
    assert_eq!(run["summary"]["sessions_held"], 6, "a session failed");
    assert!(outcome_count(&run, "replied") >= 1, "nobody got an answer");
    std::fs::remove_dir_all(&dir).ok();
}

/// Queues with room but one LLM slot: turns wait, and past the start
/// deadline they hear the busy line instead of silence.
///
/// Six users asking at once and a 300 ms deadline: with four users and
/// 700 ms, an idle machine answered every turn within the deadline
/// (first tokens by 640-1321 ms voice to voice) and the test saw no busy line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_deadline_plays_the_busy_line() {
    let dir = scratch("deadline");
    let config = dir.join("deadline.toml");
    std::fs::write(
        &config,
        "[inference]\nllm_slots = 1\nllm_queue = 8\nasr_queue = 8\nstart_deadline_ms = 300\n",
    )
    .unwrap();
    let server = speech_server(&["--config", config.to_str().unwrap()], None);
    let audio = corpus(&dir, &["q01_capital_france.wav"]);
    let out = dir.join("out");
    let (_, run) = loadtest(
        &server,
        &out,
        &[
            "--sessions",
            "6",
            "--ramp",
            "50/s",
            "--turns",
            "1",
            "--duration",
            "90s",
            "--turn-timeout",
            "40s",
            "--seed",
            "2",
            "--audio",
            audio.to_str().unwrap(),
        ],
    )
    .await;
    print_turns(&run);
    let deadline_busy = turns(&run)
        .iter()
        .filter(|t| t["outcome"] == "busy" && t["busy_reason"] == "deadline")
        .count();
    assert!(deadline_busy >= 1, "no turn hit the start deadline");
    assert!(server.metric("voxloop_busy_replies_total").await >= deadline_busy as f64);
    assert_eq!(run["summary"]["failed"], 0, "a turn failed");
    // A busy line comes soon after the deadline, not after the queue.
    for t in turns(&run).iter().filter(|t| t["outcome"] == "busy") {
        let v2v = t["voice_to_voice_ms"].as_f64().expect("busy line heard");
        assert!(v2v < 300.0 + 2500.0, "busy line after {v2v:.0} ms");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Against a server with auth on: without a token every user is refused;
/// with an admin token (`--token`) they join and the report has the
/// server's `/metrics` figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tester_joins_with_a_token() {
    let server = Server::start(
        &["--pipeline", "echo"],
        &[("VOXLOOP_AUTH_KEY", common::AUTH_KEY)],
    );
    let dir = scratch("token");
    let audio = corpus(&dir, &["q06_hello.wav"]);
    let token = common::mint_token(&["--identity", "loadtest", "--grant", "admin"]);
    let base = [
        "--mode",
        "media",
        "--sessions",
        "1",
        "--turns",
        "1",
        "--duration",
        "20s",
        "--audio",
        audio.to_str().unwrap(),
    ];
    let (_, refused) = loadtest(&server, &dir.join("without"), &base).await;
    let mut with = base.to_vec();
    with.extend(["--token", token.as_str()]);
    let (_, run) = loadtest(&server, &dir.join("with"), &with).await;
    let (r, s) = (&refused["summary"], &run["summary"]);
    println!(
        "without a token: {} connect failures; with one: {} held, {} failed, server CPU per session {}",
        r["connect_failures"],
        s["sessions_held"],
        s["failed"],
        run["server"]["cpu_per_session_pct"]
    );
    assert_eq!(r["connect_failures"], 1);
    assert_eq!(s["connect_failures"], 0);
    assert_eq!(s["failed"], 0);
    assert!(
        run["server"].is_object(),
        "no /metrics figures: {}",
        run["server"]
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `--mode listen`: users stay silent for a while before their question, and
/// the server takes their silence as such without running Silero on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_users_pause_first_and_their_silence_skips_the_vad() {
    let server = speech_server(&[], Some("30000"));
    let dir = scratch("listen");
    let audio = corpus(&dir, &["q06_hello.wav"]);
    let (stdout, run) = loadtest(
        &server,
        &dir.join("out"),
        &[
            "--mode",
            "listen",
            "--sessions",
            "2",
            "--ramp",
            "2/s",
            "--turns",
            "1",
            "--think",
            "4s",
            "--duration",
            "60s",
            "--turn-timeout",
            "40s",
            "--seed",
            "3",
            "--audio",
            audio.to_str().unwrap(),
        ],
    )
    .await;
    assert!(stdout.contains("mode=listen"), "{stdout}");
    print_turns(&run);
    assert_eq!(outcome_count(&run, "replied"), 2, "both questions answered");
    let sessions = run["session_records"].as_array().unwrap();
    for t in turns(&run) {
        let start = t["t_start_s"].as_f64().unwrap();
        let joined = sessions
            .iter()
            .find(|s| s["user"] == t["user"])
            .and_then(|s| s["t_connect_s"].as_f64())
            .unwrap();
        let first_pause = start - joined;
        println!("user {}: asked {first_pause:.1} s after joining", t["user"]);
        assert!(
            first_pause >= 4.0,
            "asked after {first_pause:.1} s, not 4 s"
        );
    }
    let skipped = server.metric("voxloop_vad_windows_skipped_total").await;
    println!("VAD windows skipped as silence: {skipped}");
    // 2 users x at least 4 s of silence is 250 windows; most are skipped.
    assert!(skipped >= 150.0, "only {skipped} windows skipped");
    // What inference thread counts follow is on /metrics, within the machine.
    let (_, text) = server.get("/metrics").await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let others = voxloop::metrics::parse_sample(&text, "voxloop_other_programs_cores")
        .expect("voxloop_other_programs_cores on /metrics");
    let free = voxloop::metrics::parse_sample(&text, "voxloop_inference_free_cores")
        .expect("voxloop_inference_free_cores on /metrics");
    println!("other programs: {others:.3} cores; free for inference: {free} of {cores}");
    assert!((0.0..=cores).contains(&others), "{others} cores of {cores}");
    assert!((1.0..=cores).contains(&free), "{free} free of {cores}");
    std::fs::remove_dir_all(&dir).ok();
}
