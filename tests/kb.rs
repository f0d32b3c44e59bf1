//! The knowledge base against its real parts: the MiniLM weights from
//! `models/`, tantivy on disk, a real folder. The bakery documents in
//! `tests/data/kb/` are facts no model can know.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use voxloop::kb::{Change, DocError, Embedder, KbError, KnowledgeBase, embed, folder};

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn kb_docs() -> PathBuf {
    common::data("kb/docs")
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("voxloop-kb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn open(index: &Path) -> KnowledgeBase {
    KnowledgeBase::open(Some(index), &models(), 64 * 1024).expect("open the knowledge base")
}

fn put_bakery(kb: &KnowledgeBase) {
    for f in ["hours.md", "menu.md", "orders.md"] {
        let bytes = std::fs::read(kb_docs().join(f)).unwrap();
        let (info, change) = kb.put(f, &bytes).unwrap();
        assert_eq!(change, Change::Added);
        assert!(info.chunks >= 1);
    }
}

fn top_doc(kb: &KnowledgeBase, q: &str) -> String {
    kb.search(q, 1)
        .unwrap()
        .first()
        .map(|h| h.doc.clone())
        .unwrap_or_default()
}

#[test]
fn minilm_vectors_match_the_float64_reference() {
    let e = Embedder::load(&models()).expect("load MiniLM (run `voxloop models fetch`)");
    let text = std::fs::read_to_string(common::data("minilm_reference.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut worst = 1.0f32;
    for s in r["sentences"].as_array().unwrap() {
        let sentence = s["text"].as_str().unwrap();
        let want_ids: Vec<u32> = s["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            e.token_ids(sentence).unwrap(),
            want_ids,
            "token ids of {sentence:?}"
        );
        let want: Vec<f32> = s["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let got = e.embed(sentence).unwrap();
        assert_eq!(got.len(), embed::DIM);
        let norm = embed::dot(&got, &got).sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
        let cos = embed::dot(&got, &want) / embed::dot(&want, &want).sqrt();
        println!("cosine {cos:.6}  {:.60}", sentence);
        worst = worst.min(cos);
    }
    println!("minilm: worst cosine to the reference {worst:.6} (bound 0.999)");
    assert!(worst >= 0.999, "worst cosine {worst}");
}

#[test]
fn search_finds_the_fact_and_follows_updates_and_deletes() {
    let dir = temp("crud");
    let kb = open(&dir);
    assert!(kb.is_empty());
    put_bakery(&kb);
    assert!(!kb.is_empty());
    let cases = [
        ("What time does the bakery open?", "hours.md"),
        ("Which day is the bakery closed?", "hours.md"),
        ("How much does the cardamom knot cost?", "menu.md"),
        ("Where does the rye for the sourdough come from?", "menu.md"),
        ("Which neighborhoods do you deliver to?", "orders.md"),
        ("Who is the head baker?", "orders.md"),
        (
            "How many days ahead must I order a birthday cake?",
            "orders.md",
        ),
    ];
    for (q, want) in cases {
        let hits = kb.search(q, 3).unwrap();
        println!(
            "{q:55} -> {:?}",
            hits.iter()
                .map(|h| (&h.doc, h.similarity))
                .collect::<Vec<_>>()
        );
        assert_eq!(hits[0].doc, want, "{q}");
    }
    // The same content again: nothing re-embedded.
    let same = std::fs::read(kb_docs().join("hours.md")).unwrap();
    assert_eq!(kb.put("hours.md", &same).unwrap().1, Change::Unchanged);
    // New content under the same name replaces every old chunk.
    let update = std::fs::read(common::data("kb/update.md")).unwrap();
    let (info, change) = kb.put("hours.md", &update).unwrap();
    assert_eq!(change, Change::Updated);
    let hits = kb.search("What time does the bakery open?", 5).unwrap();
    let hours: Vec<_> = hits.iter().filter(|h| h.doc == "hours.md").collect();
    assert_eq!(
        hours.len(),
        info.chunks,
        "old chunks left behind: {hits:#?}"
    );
    assert!(hours.iter().any(|h| h.text.contains("7:30")), "{hours:#?}");
    assert!(
        !hits.iter().any(|h| h.text.contains("6:45")),
        "the old opening time is still found"
    );
    // Delete: never cited again.
    kb.remove("menu.md").unwrap();
    assert!(matches!(kb.remove("menu.md"), Err(KbError::NotFound(_))));
    assert!(
        kb.search("cardamom knot price", 10)
            .unwrap()
            .iter()
            .all(|h| h.doc != "menu.md")
    );
    // Reopened from disk: the same documents and chunks.
    let before = kb.docs();
    drop(kb);
    let kb = open(&dir);
    assert_eq!(kb.docs(), before);
    assert_eq!(top_doc(&kb, "Who is the head baker?"), "orders.md");
    assert!(!kb.is_empty(), "the count is read back from disk");
    for d in kb.docs() {
        kb.remove(&d.name).unwrap();
    }
    assert!(kb.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_documents_are_refused_and_break_nothing() {
    let dir = temp("bad");
    let kb = open(&dir);
    put_bakery(&kb);
    let big = vec![b'a'; 64 * 1024 + 1];
    type Case<'a> = (&'a str, &'a [u8], fn(&KbError) -> bool);
    let cases: Vec<Case> = vec![
        ("empty.md", b"", |e| {
            matches!(e, KbError::Doc(DocError::Empty(_)))
        }),
        ("headings.md", b"# Only\n## Headings\n", |e| {
            matches!(e, KbError::Doc(DocError::Empty(_)))
        }),
        ("bin.txt", b"\x7fELF\x02\x01\x01\0\0\0", |e| {
            matches!(e, KbError::Doc(DocError::Binary(_)))
        }),
        ("latin1.txt", b"caf\xe9 au lait", |e| {
            matches!(e, KbError::Doc(DocError::NotUtf8(_)))
        }),
        ("huge.md", &big, |e| {
            matches!(e, KbError::Doc(DocError::TooLarge { .. }))
        }),
        ("../escape.md", b"x", |e| {
            matches!(e, KbError::Doc(DocError::BadName(_)))
        }),
        ("/etc/abs.md", b"x", |e| {
            matches!(e, KbError::Doc(DocError::BadName(_)))
        }),
        ("report.pdf", b"%PDF-1.4", |e| {
            matches!(e, KbError::Doc(DocError::Unsupported(_)))
        }),
    ];
    for (name, bytes, want) in cases {
        let err = kb.put(name, bytes).expect_err(name);
        println!("{name}: {err}");
        assert!(want(&err), "{name}: {err:?}");
        assert!(err.is_client_error());
    }
    // A bad replacement leaves the indexed document as it was.
    assert!(kb.put("hours.md", b"").is_err());
    assert_eq!(kb.stats().docs, 3);
    assert_eq!(top_doc(&kb, "What time does the bakery open?"), "hours.md");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Polls `f` until true or `limit` passes; returns how long it took.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_watched_folder_is_followed_without_restart() {
    let root = temp("watch");
    let (docs, index) = (root.join("docs"), root.join("index"));
    std::fs::create_dir_all(&docs).unwrap();
    for f in ["hours.md", "menu.md", "orders.md"] {
        std::fs::copy(kb_docs().join(f), docs.join(f)).unwrap();
    }
    std::fs::write(docs.join("notes.pdf"), b"%PDF").unwrap();
    let kb = Arc::new(open(&index));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, changed) = std::sync::mpsc::channel::<String>();
    let watcher = {
        let (kb, docs, stop) = (kb.clone(), docs.clone(), stop.clone());
        std::thread::spawn(move || {
            folder::watch(kb, &docs, stop, |name| {
                let _ = tx.send(name.to_string());
            })
        })
    };
    let limit = Duration::from_secs(2);
    let t = within(limit, || kb.stats().docs == 3).expect("initial folder indexed");
    println!("initial index: {t:?}");
    let opens_at = |kb: &KnowledgeBase, s: &str| {
        // In the chunks the LLM is given (the configured top 3).
        kb.search("What time does the bakery open?", 3)
            .unwrap()
            .iter()
            .any(|h| h.text.contains(s))
    };
    assert!(opens_at(&kb, "6:45"));

    // Change: hours.md replaced by the update.
    std::fs::copy(common::data("kb/update.md"), docs.join("hours.md")).unwrap();
    let t = within(limit, || opens_at(&kb, "7:30")).expect("changed file re-indexed within 2 s");
    println!("change seen in {t:?}");
    // Create.
    std::fs::write(
        docs.join("parking.txt"),
        "Parking is free behind the bakery on Elm Court.",
    )
    .unwrap();
    let t = within(limit, || top_doc(&kb, "Where can I park?") == "parking.txt")
        .expect("new file within 2 s");
    println!("new file seen in {t:?}");
    // Rename: the old name leaves, the new one arrives.
    std::fs::rename(docs.join("parking.txt"), docs.join("car-park.txt")).unwrap();
    // `folder::sync` indexes the new name before it removes the old one
    // (seen once between the two): wait for both.
    let t = within(limit, || {
        top_doc(&kb, "Where can I park?") == "car-park.txt"
            && kb.docs().iter().all(|d| d.name != "parking.txt")
    })
    .expect("rename within 2 s");
    println!("rename seen in {t:?}");
    // Delete.
    std::fs::remove_file(docs.join("menu.md")).unwrap();
    let t =
        within(limit, || kb.docs().iter().all(|d| d.name != "menu.md")).expect("delete within 2 s");
    println!("delete seen in {t:?}");
    assert!(
        kb.search("cardamom knot", 10)
            .unwrap()
            .iter()
            .all(|h| h.doc != "menu.md")
    );
    // A bad file is logged and skipped; the rest keeps working.
    std::fs::write(docs.join("broken.md"), b"\xff\xfe\0\0").unwrap();
    std::fs::write(
        docs.join("later.md"),
        "# Later\nThe bakery sells gift cards.",
    )
    .unwrap();
    within(limit, || top_doc(&kb, "gift cards") == "later.md")
        .expect("later.md indexed despite broken.md");
    assert!(kb.docs().iter().all(|d| d.name != "broken.md"));

    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    // Every change was reported (what the shared bucket follows), the
    // initial folder not (it is synced whole at start).
    let mut reported: Vec<String> = changed.try_iter().collect();
    reported.sort();
    reported.dedup();
    assert_eq!(
        reported,
        [
            "broken.md",
            "car-park.txt",
            "hours.md",
            "later.md",
            "menu.md",
            "parking.txt"
        ],
        "changes reported"
    );
    let _ = std::fs::remove_dir_all(&root);
}
