//! Fuzzing on the stable toolchain (cargo-fuzz needs nightly, which this
//! project cannot fetch): every input parser that takes bytes from outside
//! is fed its checked-in corpus (`tests/fuzz/<target>/`), then mutations of
//! it, for `VOXLOOP_FUZZ_SECS` seconds per target (default 2: CI replays the
//! corpus and a short run; docs/RELIABILITY.md has the long runs). A panic
//! fails the test and leaves the input in `target/fuzz-crashes/`; add it to
//! the corpus once fixed.
//!
//! The mutator is small and dumb on purpose (bit flips, byte inserts and
//! deletes, splices with other corpus entries, tokens the formats care
//! about): the parsers are libraries with their own fuzzing upstream; what
//! is tested here is that our code around them never panics on any input.

mod common;

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use voxloop::audio::{OpusDecoder, OpusEncoder, decode_file_mono};

/// xorshift64*: reproducible from the seed printed with the figures.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes the formats give meaning to.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\\u0000",
    b"\\ud800",
    b"\0",
    b"\xff\xfe",
    b"null",
    b"true",
    b"-1",
    b"1e309",
    b"18446744073709551616",
    b"\r\n",
    b"v=0\r\n",
    b"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
    b"a=candidate:",
    b"a=fingerprint:sha-256 ",
    b"RIFF",
    b"WAVEfmt ",
    b"data",
    b"OggS",
    b"fLaC",
    b"ID3",
    b"\xff\xfb",
    b"\"type\":\"offer\"",
    b"\"type\":\"candidate\"",
    b"\"type\":\"text\"",
    b"\"text\":",
    b"\"expires_at\":\"",
    b"9999-12-31T23:59:59Z",
];

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, rng.next() as u8),
            2 if !out.is_empty() => {
                let end = (at + rng.below(16) + 1).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, t.iter().copied());
            }
            4 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                let to = (from + rng.below(64)).min(other.len());
                out.splice(at..at, other[from..to].iter().copied());
            }
            5 if !out.is_empty() => {
                // Repeat a chunk: long runs find length bugs.
                let from = rng.below(out.len());
                let to = (from + rng.below(32) + 1).min(out.len());
                let chunk: Vec<u8> = out[from..to].to_vec();
                for _ in 0..rng.below(64) {
                    out.splice(at..at, chunk.iter().copied());
                }
            }
            _ => out.truncate(at),
        }
    }
    out.truncate(1 << 20);
    out
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(target)
}

fn load_corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("corpus for {target}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let corpus: Vec<Vec<u8>> = files.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    assert!(!corpus.is_empty(), "empty corpus for {target}");
    corpus
}

fn budget() -> Duration {
    let secs = std::env::var("VOXLOOP_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

fn save_crash(target: &str, input: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
    let _ = std::fs::create_dir_all(&dir);
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("{target}-{hash:016x}"));
    let _ = std::fs::write(&path, input);
    path
}

/// Replay the corpus, then mutate it until the budget is spent. `run` must
/// not panic on any input; it returns nothing (errors are the expected
/// answer to most of these inputs).
fn fuzz(target: &str, mut run: impl FnMut(&[u8])) {
    let corpus = load_corpus(target);
    let seed = 0x9E37_79B9_7F4A_7C15 ^ target.len() as u64;
    let mut rng = Rng(seed);
    let t0 = Instant::now();
    let mut execs = 0u64;
    let mut check = |input: &[u8], execs: &mut u64| {
        *execs += 1;
        if std::panic::catch_unwind(AssertUnwindSafe(|| run(input))).is_err() {
            let path = save_crash(target, input);
            panic!(
                "{target}: panic on {} ({} bytes)",
                path.display(),
                input.len()
            );
        }
    };
    for input in &corpus {
        check(input, &mut execs);
    }
    let deadline = t0 + budget();
    while Instant::now() < deadline {
        let base = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, base, &corpus);
        check(&input, &mut execs);
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "fuzz {target}: {execs} executions in {secs:.1} s ({:.0}/s), corpus {}, seed {seed:#x}, no panic",
        execs as f64 / secs,
        corpus.len()
    );
}

#[test]
fn fuzz_signaling_messages() {
    fuzz("signaling", |b| {
        let _ = voxloop::rtc::parse_client_message(&String::from_utf8_lossy(b), 65_536);
    });
}

#[test]
fn fuzz_prompt_payloads() {
    fuzz("prompt", |b| {
        let _ = voxloop::prompt::parse_prompt(b, 1000);
    });
}

#[test]
fn fuzz_data_channel_messages() {
    fuzz("data_channel", |b| {
        let _ = voxloop::session::parse_data_message(&String::from_utf8_lossy(b), 65_536);
    });
}

/// Documents for the knowledge base: the name and content checks, then
/// the chunker on whatever passes (as markdown and as plain text). Every
/// chunk must be non-empty and bounded.
#[test]
fn fuzz_kb_documents() {
    use voxloop::kb::{chunk, doc};
    fuzz("kb_doc", |b| {
        let name = String::from_utf8_lossy(&b[..b.len().min(40)]);
        let _ = doc::check_name(&name);
        if let Ok(text) = doc::check_content("fuzz.md", b, 1 << 20) {
            for md in [true, false] {
                for c in chunk::chunk(text, md) {
                    assert!(!c.body.trim().is_empty(), "empty chunk");
                    assert!(
                        c.body.chars().count() <= 2 * chunk::MAX_CHARS,
                        "chunk of {} chars",
                        c.body.len()
                    );
                }
            }
        }
    });
}

#[test]
fn fuzz_opus_payloads() {
    let mut decoder = OpusDecoder::new(voxloop::WIRE_RATE).expect("decoder");
    fuzz("opus", |b| {
        let _ = decoder.decode(b);
    });
}

#[test]
fn fuzz_audio_files() {
    let dir = std::env::temp_dir().join(format!("voxloop-fuzz-audio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let exts = ["wav", "mp3", "ogg", "flac", "bin"];
    let mut n = 0usize;
    fuzz("audio", |b| {
        n += 1;
        let path = dir.join(format!("input.{}", exts[n % exts.len()]));
        if std::fs::write(&path, b).is_ok() {
            let _ = decode_file_mono(&path, 16_000);
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// SDP offers through the WebRTC engine's answer path, as `/ws` and WHIP
/// use it (in-process: each accepted offer makes a peer, closed at once).
#[test]
fn fuzz_sdp_offers() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let settings = voxloop::rtc::RtcSettings::default();
    fuzz("sdp", |b| {
        let text = String::from_utf8_lossy(b);
        rt.block_on(async {
            if let Ok((peer, _streams, _answer)) =
                voxloop::rtc::Peer::answer(&settings, &text).await
            {
                peer.close().await;
            }
        });
    });
}

/// WHIP bodies and headers against the real server: mutated offers with
/// and without the right media type. The server must answer every one (a
/// status, never a dropped connection) and stay healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_whip_bodies_against_the_server() {
    // Accepted offers hold a slot until nobody connects within 1 s.
    let server = common::Server::start(
        &["--pipeline", "echo"],
        &[
            ("VOXLOOP_MAX_SESSIONS", "512"),
            ("VOXLOOP_RTC_CONNECT_TIMEOUT_MS", "1000"),
        ],
    );
    let corpus = load_corpus("sdp");
    let http = reqwest::Client::new();
    let mut rng = Rng(0x5EED);
    let (t0, deadline) = (Instant::now(), Instant::now() + budget());
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    let types = [
        "application/sdp",
        "APPLICATION/SDP; charset=utf-8",
        "text/plain",
        "",
    ];
    while Instant::now() < deadline {
        let base = rng.below(corpus.len());
        let body = mutate(&mut rng, &corpus[base], &corpus);
        let mut req = http.post(format!("{}/whip", server.url)).body(body);
        let ctype = types[rng.below(types.len())];
        if !ctype.is_empty() {
            req = req.header("content-type", ctype);
        }
        let status = req
            .send()
            .await
            .expect("the server answers")
            .status()
            .as_u16();
        *statuses.entry(status).or_default() += 1;
    }
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
    println!(
        "fuzz whip: {} requests in {:.1} s, statuses {statuses:?}, server healthy",
        statuses.values().sum::<u32>(),
        t0.elapsed().as_secs_f64()
    );
}

/// Writes the seed corpus (run once with VOXLOOP_FUZZ_SEED=1; the files are
/// checked in). Ignored otherwise.
#[tokio::test]
async fn write_seed_corpus() {
    if std::env::var("VOXLOOP_FUZZ_SEED").is_err() {
        return;
    }
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), bytes).expect("write seed");
    };
    let (_peer, _streams, sdp) = common::real_offer().await;
    put("sdp", "offer.sdp", sdp.as_bytes());
    let offer = serde_json::json!({"type": "offer", "sdp": sdp, "session_id": "user-42-tab-1"});
    put("signaling", "offer.json", offer.to_string().as_bytes());
    put(
        "signaling",
        "candidate.json",
        br#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
    );
    put(
        "signaling",
        "end_of_candidates.json",
        br#"{"type":"candidate","candidate":null}"#,
    );
    put("signaling", "bye.json", br#"{"type":"bye"}"#);
    put(
        "prompt",
        "full.json",
        br#"{"id":"p-1","text":"Your meeting starts in five minutes.","priority":5,"interrupt":false,"expires_at":"2030-01-01T00:00:00Z","dedupe_key":"meeting"}"#,
    );
    put("prompt", "minimal.json", br#"{"id":"p-2","text":"Hello?"}"#);
    put(
        "data_channel",
        "text.json",
        br#"{"type":"text","text":"What time is it?"}"#,
    );
    let mut enc = OpusEncoder::new(48_000).expect("encoder");
    let clip = common::clip48("q06_hello.wav");
    for (i, frame) in clip.chunks(960).skip(20).take(3).enumerate() {
        let mut f = frame.to_vec();
        f.resize(960, 0.0);
        put(
            "opus",
            &format!("frame{i}.opus"),
            &enc.encode(&f).expect("encode"),
        );
    }
    let wav = std::env::temp_dir().join("voxloop-seed.wav");
    voxloop::audio::write_wav(&wav, &clip[..4800], 48_000).expect("wav");
    put(
        "audio",
        "short.wav",
        &std::fs::read(&wav).expect("read wav"),
    );
}
