//! Two `voxloop serve` processes on one `nats-server -js` share one
//! knowledge base through the `voxloop_kb` object store bucket: a document
//! put through either (HTTP, a watched folder, or straight into the bucket
//! by another system) is found by `GET /kb/search` on the other; a delete
//! leaves no chunk anywhere; a hostile object is refused and breaks nothing.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, object_store};
use common::{Nats, Server};
use serde_json::Value;

/// The bound for a change to reach another server.
const WITHIN: Duration = Duration::from_secs(2);

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("voxloop-kbshared-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn serve(nats: &Nats, kb: &[&str]) -> Server {
    let mut args = vec!["--pipeline", "speech"];
    args.extend_from_slice(kb);
    Server::start(
        &args,
        &[
            ("VOXLOOP_MODELS_PROFILE", "fast"),
            ("VOXLOOP_NATS_URL", nats.url.as_str()),
        ],
    )
}

/// The documents of `server`'s top hits for `q`, with their text.
async fn hits(server: &Server, q: &str) -> Vec<(String, String)> {
    let (status, body) = server
        .get(&format!("/kb/search?q={}&k=3", q.replace(' ', "+")))
        .await;
    if status != 200 {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["hits"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| {
                    (
                        h["doc"].as_str().unwrap_or_default().to_string(),
                        h["text"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How long until `server`'s search for `q` satisfies `ok`, polled; panics
/// after `limit` with what it found.
async fn seen(
    server: &Server,
    q: &str,
    limit: Duration,
    what: &str,
    ok: impl Fn(&[(String, String)]) -> bool,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let h = hits(server, q).await;
        if ok(&h) {
            println!("{what}: {:.0} ms", t0.elapsed().as_secs_f64() * 1e3);
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{what}: not within {limit:?}; last hits {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `PUT /kb/docs/{name}` on `server`: the status and body.
async fn put(server: &Server, name: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    server.put(&format!("/kb/docs/{name}"), body).await
}

fn has_doc(doc: &'static str) -> impl Fn(&[(String, String)]) -> bool {
    move |h| h.iter().any(|(d, _)| d == doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_knowledge_base_over_nats() {
    let mut nats = Nats::start().await;
    let docs = temp("docs");
    for f in ["hours.md", "menu.md", "orders.md"] {
        std::fs::copy(common::data(&format!("kb/docs/{f}")), docs.join(f)).unwrap();
    }
    let index_a = temp("index-a");
    let a = serve(
        &nats,
        &[
            "--kb-dir",
            docs.to_str().unwrap(),
            "--kb-index-dir",
            index_a.to_str().unwrap(),
        ],
    );
    // B has no folder and an index in memory: all it knows comes from NATS.
    let b = serve(&nats, &[]);
    let open = "What time does the bakery open";
    seen(
        &b,
        open,
        Duration::from_secs(20),
        "A's folder reached B at start",
        |h| h.iter().any(|(d, t)| d == "hours.md" && t.contains("6:45")),
    )
    .await;

    let http = reqwest::Client::new();
    // An upload through A is found on B.
    let (status, body) = put(
        &a,
        "parking.txt",
        "Parking is free behind the bakery on Elm Court.",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    seen(
        &b,
        "Where can I park",
        WITHIN,
        "PUT on A → search on B",
        has_doc("parking.txt"),
    )
    .await;

    // An upload through B (a new hours.md) replaces A's copy.
    let update = std::fs::read(common::data("kb/update.md")).unwrap();
    let (status, body) = put(&b, "hours.md", update).await;
    assert_eq!(status, 200, "{body}");
    seen(&a, open, WITHIN, "PUT on B → search on A", |h| {
        h.iter().any(|(d, t)| d == "hours.md" && t.contains("7:30"))
            && !h.iter().any(|(_, t)| t.contains("6:45"))
    })
    .await;

    // A file added to A's folder reaches B.
    std::fs::write(
        docs.join("gifts.md"),
        "# Gift cards\nThe bakery sells gift cards in any amount from 10 dollars.",
    )
    .unwrap();
    seen(
        &b,
        "Do you sell gift cards",
        WITHIN + Duration::from_millis(600), // the folder's poll and settle
        "folder of A → search on B",
        has_doc("gifts.md"),
    )
    .await;

    // Another system puts an object straight into the bucket; a hostile one
    // (binary) is refused by both and breaks nothing.
    let client = async_nats::connect(&nats.url).await.unwrap();
    let store = jetstream::new(client)
        .get_object_store("voxloop_kb")
        .await
        .expect("the servers created the voxloop_kb bucket");
    store
        .put("junk.md", &mut &b"\x00\x01\x02binary\xff"[..])
        .await
        .unwrap();
    store
        .put(
            object_store::ObjectMetadata {
                name: "allergens.md".into(),
                ..Default::default()
            },
            &mut &b"# Allergens\nEvery loaf may contain sesame and walnuts."[..],
        )
        .await
        .unwrap();
    for (s, who) in [(&a, "A"), (&b, "B")] {
        seen(
            s,
            "Does the bread contain sesame",
            WITHIN,
            &format!("object put by another system → search on {who}"),
            has_doc("allergens.md"),
        )
        .await;
    }
    let (_, listing) = a.get("/kb/docs").await;
    assert!(!listing.contains("junk.md"), "{listing}");

    // A delete through B leaves no chunk on A.
    let r = http
        .delete(format!("{}/kb/docs/parking.txt", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    seen(
        &a,
        "Where can I park",
        WITHIN,
        "DELETE on B → gone on A",
        |h| !h.iter().any(|(d, _)| d == "parking.txt"),
    )
    .await;
    let (_, listing) = a.get("/kb/docs").await;
    assert!(!listing.contains("parking.txt"), "{listing}");

    // A third server started now gets the whole shared base from the bucket.
    let c = serve(&nats, &[]);
    for (q, doc) in [
        ("Do you sell gift cards", "gifts.md"),
        ("Does the bread contain sesame", "allergens.md"),
        ("cardamom knot price", "menu.md"),
    ] {
        seen(
            &c,
            q,
            Duration::from_secs(20),
            &format!("{doc} on a new server"),
            has_doc(doc),
        )
        .await;
    }
    let (_, listing) = c.get("/kb/docs").await;
    assert!(!listing.contains("parking.txt"), "{listing}");
    drop(c);

    // NATS goes away: an upload is refused with a readable error and
    // changes nothing; searches go on from the local index.
    nats.stop();
    let late = "# Classes\nThe bakery teaches a bread class every Saturday morning.";
    let (status, body) = put(&a, "classes.md", late).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("kb_shared_unavailable"), "{body}");
    let (_, listing) = a.get("/kb/docs").await;
    assert!(!listing.contains("classes.md"), "{listing}");
    seen(
        &a,
        "Do you sell gift cards",
        WITHIN,
        "search on A without NATS",
        has_doc("gifts.md"),
    )
    .await;
    // NATS is back: the retried upload goes through and reaches B.
    nats.restart().await;
    let t0 = Instant::now();
    loop {
        let (status, body) = put(&a, "classes.md", late).await;
        if status == 201 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "upload still refused after NATS came back: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "upload accepted {:.1} s after NATS restarted",
        t0.elapsed().as_secs_f64()
    );
    seen(
        &b,
        "Is there a bread class",
        Duration::from_secs(15),
        "upload after the outage → search on B",
        has_doc("classes.md"),
    )
    .await;
    let _ = std::fs::remove_dir_all(&docs);
    let _ = std::fs::remove_dir_all(&index_a);
}
