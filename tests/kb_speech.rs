//! Spoken questions answered from the knowledge base, with the default
//! models: `voxloop converse --kb-dir` on the bakery questions, and a live
//! server whose documents change under it (folder, HTTP upload, delete).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, clip48};
use voxloop::client::{Client, ClientOptions};
use voxloop::events::{Event, Source};

/// The default LLM (Qwen2.5 0.5B): the fast one is too small to read notes.
const PROFILE: &str = "default";

struct Question {
    id: String,
    question: String,
    expect: Vec<String>,
}

fn questions(file: &str) -> Vec<Question> {
    std::fs::read_to_string(common::data(file))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("id\t")) // the header, where there is one
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some(Question {
                id: f.first()?.to_string(),
                question: f.get(2)?.to_string(),
                expect: f.get(3)?.split('|').map(|s| s.to_lowercase()).collect(),
            })
        })
        .collect()
}

fn right(reply: &str, q: &Question) -> bool {
    let r = reply.to_lowercase();
    q.expect.iter().any(|e| r.contains(e))
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("voxloop-kbs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn converse_answers_the_bakery_questions_from_the_documents() {
    let qs = questions("kb/questions.tsv");
    let qs: Vec<&Question> = qs.iter().filter(|q| q.id != "b09").collect();
    assert_eq!(qs.len(), 8);
    let index = temp("converse");
    let files: Vec<PathBuf> = qs
        .iter()
        .map(|q| common::data(&format!("kb/audio/{}.wav", q.id)))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_voxloop"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("VOXLOOP_LOG", "warn")
        .args(["converse", "--profile", PROFILE, "--kb-dir"])
        .arg(common::data("kb/docs"))
        .arg("--kb-index-dir")
        .arg(&index)
        .args(&files)
        .output()
        .expect("run voxloop converse");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |label: &str| -> Vec<String> {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix(label))
            .map(str::to_string)
            .collect()
    };
    let (replies, sources, timings) = (field("reply: "), field("sources: "), field("timings: "));
    assert_eq!(
        (replies.len(), sources.len(), timings.len()),
        (8, 8, 8),
        "{stdout}"
    );
    let mut score = 0;
    let mut kb_ms = Vec::new();
    for (i, q) in qs.iter().enumerate() {
        let ok = right(&replies[i], q);
        score += usize::from(ok);
        println!(
            "{} {:5} {:48} -> {} [{}]",
            q.id, ok, q.question, replies[i], sources[i]
        );
        // Every bakery question was grounded on at least one chunk.
        assert!(!sources[i].trim().is_empty(), "{}: no sources", q.id);
        let ms = timings[i]
            .split("kb_ms=")
            .nth(1)
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
        kb_ms.push(ms.unwrap_or_else(|| panic!("no kb_ms in {}", timings[i])));
    }
    kb_ms.sort_unstable();
    println!(
        "kb score: {score} of 8 (bound 7); kb_ms median {} max {}",
        kb_ms[4], kb_ms[7]
    );
    assert!(score >= 7, "{score} of 8 replies carry the fact");
    let _ = std::fs::remove_dir_all(&index);
}

/// Says a question in a new session and returns the reply and its sources.
/// A new session each time: the history of one would hold the old answer,
/// which a 0.5B model then weighs against the new notes.
async fn ask(server: &Server, id: &str) -> (String, Vec<Source>) {
    let mut client = Client::connect(&server.url, ClientOptions::default())
        .await
        .expect("connect");
    let mut pcm = clip48(&format!("kb/audio/{id}.wav"));
    pcm.extend(std::iter::repeat_n(0.0, 48_000 * 3 / 2));
    client.send_pcm(&pcm, 1.0).await.expect("send audio");
    reply_to(&mut client, id).await
}

/// The next whole reply and its sources.
async fn reply_to(client: &mut Client, what: &str) -> (String, Vec<Source>) {
    client
        .wait_for(Duration::from_secs(60), |e| match e {
            Event::Reply {
                text,
                sources,
                interrupted: false,
                ..
            } => Some((text, sources)),
            _ => None,
        })
        .await
        .unwrap_or_else(|| panic!("no reply to {what} within 60 s"))
}

/// Polls `GET /kb/search` until a hit for `q` contains `needle`; how long it took.
async fn searchable(server: &Server, q: &str, needle: &str, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let (status, body) = server
            .get(&format!("/kb/search?q={}&k=3", q.replace(' ', "+")))
            .await;
        if status == 200 && body.contains(needle) {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_server_follows_folder_changes_uploads_and_deletes() {
    let root = temp("live");
    let docs = root.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for f in ["hours.md", "menu.md", "orders.md"] {
        std::fs::copy(common::data(&format!("kb/docs/{f}")), docs.join(f)).unwrap();
    }
    let server = Server::start(
        &[
            "--pipeline",
            "speech",
            "--kb-dir",
            docs.to_str().unwrap(),
            "--kb-index-dir",
            root.join("index").to_str().unwrap(),
        ],
        &[("VOXLOOP_MODELS_PROFILE", PROFILE)],
    );
    let (all, update) = (
        questions("kb/questions.tsv"),
        questions("kb/update_question.tsv"),
    );
    let (b01, b09) = (&all[0], &update[0]);

    let (before, sources) = ask(&server, "b01").await;
    println!("before: {before:?} {sources:?}");
    assert!(right(&before, b01), "before the change: {before}");

    // The folder changes: hours.md becomes update.md (7:30).
    std::fs::copy(common::data("kb/update.md"), docs.join("hours.md")).unwrap();
    let t = searchable(
        &server,
        "when does the bakery open",
        "7:30",
        Duration::from_secs(2),
    )
    .await
    .expect("the changed file is searchable within 2 s");
    println!("folder change searchable in {t:?}");
    let (after, sources) = ask(&server, "b09").await;
    println!("after: {after:?} {sources:?}");
    assert!(right(&after, b09), "after the change: {after}");
    assert!(sources.iter().any(|s| s.doc == "hours.md"), "{sources:?}");

    // The same through HTTP: the old hours come back.
    let http = reqwest::Client::new();
    let original = std::fs::read(common::data("kb/docs/hours.md")).unwrap();
    let r = http
        .put(format!("{}/kb/docs/hours.md", server.url))
        .body(original)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let t = searchable(
        &server,
        "when does the bakery open",
        "6:45",
        Duration::from_secs(2),
    )
    .await
    .expect("the upload is searchable within 2 s");
    println!("upload searchable in {t:?}");
    let (again, _) = ask(&server, "b01").await;
    println!("after the upload: {again:?}");
    assert!(right(&again, b01), "after the upload: {again}");
    assert_eq!(
        std::fs::read(docs.join("hours.md")).unwrap(),
        std::fs::read(common::data("kb/docs/hours.md")).unwrap()
    );

    // A deleted document is never cited again.
    let r = http
        .delete(format!("{}/kb/docs/orders.md", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(
        !docs.join("orders.md").exists(),
        "the file stays in the folder"
    );
    let (_, sources) = ask(&server, "b07").await;
    println!("after the delete: {sources:?}");
    assert!(sources.iter().all(|s| s.doc != "orders.md"), "{sources:?}");
    let (status, body) = server.get("/kb/docs").await;
    assert_eq!(status, 200);
    assert!(
        !body.contains("orders.md") && body.contains("menu.md"),
        "{body}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Asks `text` by typing, in a new session; the reply.
async fn ask_typed(server: &Server, text: &str) -> String {
    let mut client = Client::connect(&server.url, ClientOptions::default())
        .await
        .expect("connect");
    assert!(
        client.wait_open(Duration::from_secs(10)).await,
        "events channel open"
    );
    assert!(client.send_text(text).await, "typed text sent");
    reply_to(&mut client, text).await.0
}

/// A reply that says it does not know rather than states a fact.
fn says_it_does_not_know(reply: &str) -> bool {
    let r = reply.to_lowercase().replace('’', "'");
    let declines = [
        "don't know",
        "do not know",
        "not sure",
        "no information",
        "not mentioned",
        "doesn't say",
        "does not say",
        "don't have",
        "do not have",
        "not provided",
        "not specified",
        "not available",
    ];
    declines.iter().any(|d| r.contains(d)) && !r.chars().any(|c| c.is_ascii_digit())
}

/// About the bakery, so the documents' chunks are found and given, but none
/// of them holds the answer: the facts a small model invents.
const UNKNOWN: [&str; 8] = [
    "What is the bakery's phone number?",
    "What year was the bakery founded?",
    "Who owns the bakery?",
    "How much does a croissant cost?",
    "What is the bakery's street address?",
    "How many people work at the bakery?",
    "What is the bakery's email address?",
    "How much does a loaf of white bread cost?",
];

/// The same path still answers what the documents do say.
const KNOWN: [(&str, &str); 3] = [
    ("What time does the bakery open?", "6:45"),
    ("Who is the head baker?", "olsson"),
    ("How much does the cardamom knot cost?", "4"),
];

/// How many of [`UNKNOWN`] a server declines and of [`KNOWN`] it answers,
/// with `kb.check_replies` as given.
async fn unknown_and_known(check: &str) -> (usize, usize) {
    let root = temp(&format!("unknown-{check}"));
    let server = Server::start(
        &[
            "--pipeline",
            "speech",
            "--kb-dir",
            common::data("kb/docs").to_str().unwrap(),
            "--kb-index-dir",
            root.join("index").to_str().unwrap(),
        ],
        &[
            ("VOXLOOP_MODELS_PROFILE", PROFILE),
            ("VOXLOOP_KB_CHECK_REPLIES", check),
        ],
    );
    let mut declined = 0;
    for q in UNKNOWN {
        let reply = ask_typed(&server, q).await;
        let ok = says_it_does_not_know(&reply);
        println!(
            "check={check} unknown: {q:?} → {reply:?} ({})",
            if ok { "declined" } else { "INVENTED" }
        );
        declined += usize::from(ok);
    }
    let mut answered = 0;
    for (q, fact) in KNOWN {
        let reply = ask_typed(&server, q).await;
        let ok = reply.to_lowercase().contains(fact);
        println!(
            "check={check} known: {q:?} → {reply:?} ({})",
            if ok { "right" } else { "WRONG" }
        );
        answered += usize::from(ok);
    }
    let _ = std::fs::remove_dir_all(&root);
    (declined, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_the_documents_do_not_answer_get_i_dont_know() {
    let (declined_off, answered_off) = unknown_and_known("false").await;
    let (declined, answered) = unknown_and_known("true").await;
    println!(
        "out-of-documents score: {declined} of {n} declined with the reply check (bound 4, and 2 more than without), {declined_off} of {n} without; known: {answered} of {k} (bound 2), {answered_off} of {k} without",
        n = UNKNOWN.len(),
        k = KNOWN.len()
    );
    // Measured: 5 of 8 with the check, 2 of 8 without. What it cannot
    // catch is a fact of the notes put in the wrong place (the head baker
    // named as the owner, the sourdough's price for white bread).
    assert!(declined >= 4, "{declined} of {} declined", UNKNOWN.len());
    assert!(
        declined >= declined_off + 2,
        "the check declined {declined}, without it {declined_off}"
    );
    assert!(answered >= 2, "{answered} of {} answered", KNOWN.len());
}
