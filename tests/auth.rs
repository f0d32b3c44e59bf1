//! Join tokens against the real binary (issue 14): each way a token can be
//! wrong is refused with its own readable error, a valid one joins over
//! WHIP and over the WebSocket, admin routes need admin, a session's own
//! token may end it, other pages and host names are kept out, and a
//! non-loopback bind will not start without auth.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{AUTH_KEY, Server, mint_token};
use serde_json::Value;
use voxloop::auth::{Claims, Grant, KeySet, unix_now};
use voxloop::client::Signaling;

/// POST an offer to `/whip` with `token` (and `?session=`): status, body
/// and the session's `Location` if one was made.
async fn whip(
    server: &Server,
    offer: &str,
    token: Option<&str>,
    session: Option<&str>,
) -> (u16, String, Option<String>) {
    let mut url = format!("{}/whip", server.url);
    if let Some(s) = session {
        url.push_str(&format!("?session={s}"));
    }
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/sdp")
        .body(offer.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("POST /whip");
    let location = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_string);
    (r.status().as_u16(), r.text().await.expect("body"), location)
}

/// The `code` of a refusal body (WHIP's signaling shape or the REST shape).
fn code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    v["code"]
        .as_str()
        .or(v["error"]["code"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// What is wrong, the token, the session asked for, the status and code wanted.
type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, u16, &'a str);

fn signed(key: &str, claims: &Claims) -> String {
    KeySet::new([("default", key)])
        .expect("key")
        .mint(claims, None)
        .expect("mint")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_and_each_refusal_says_why() {
    let server = Server::start(&["--pipeline", "echo"], &[("VOXLOOP_AUTH_KEY", AUTH_KEY)]);
    let (_peer, _streams, offer) = common::real_offer().await;
    let ann = mint_token(&["--identity", "ann"]);
    let ann_bound = mint_token(&["--identity", "ann", "--session", "ann-session-1"]);
    let prompter = mint_token(&["--identity", "backend", "--grant", "prompt"]);
    let admin = mint_token(&["--identity", "ops", "--grant", "admin"]);
    let now = unix_now();
    let expired = signed(
        AUTH_KEY,
        &Claims {
            sub: "ann".into(),
            sid: None,
            grants: vec![Grant::Join],
            exp: now - 600,
            nbf: None,
            iat: now - 4200,
        },
    );
    let wrong_key = signed(
        "some-other-key-0123456789-0123456789-01234",
        &Claims {
            sub: "ann".into(),
            sid: None,
            grants: vec![Grant::Join],
            exp: now + 600,
            nbf: None,
            iat: now,
        },
    );
    let cases: &[Case] = &[
        ("no token", None, None, 401, "no_token"),
        ("expired", Some(&expired), None, 401, "token_expired"),
        ("wrong key", Some(&wrong_key), None, 401, "bad_token"),
        ("garbage", Some("not.a.jwt"), None, 401, "bad_token"),
        ("missing grant", Some(&prompter), None, 403, "missing_grant"),
        (
            "wrong session",
            Some(&ann_bound),
            Some("bob-session-1"),
            403,
            "wrong_session",
        ),
        (
            "resume without binding",
            Some(&ann),
            Some("bob-session-1"),
            403,
            "wrong_session",
        ),
    ];
    for (what, token, session, status, want) in cases {
        let (got, body, _) = whip(&server, &offer, *token, *session).await;
        println!("{what}: {got} {body}");
        assert_eq!((got, code(&body).as_str()), (*status, *want), "{what}");
    }

    // A valid token joins, over WHIP (bound: it gets its own id) ...
    let (status, _, _) = whip(&server, &offer, Some(&ann_bound), None).await;
    assert_eq!(status, 201);
    // ... and over the WebSocket, where a token-less upgrade is refused.
    assert!(
        Signaling::connect(&server.url).await.is_err(),
        "a token-less socket opened"
    );
    let sig = Signaling::connect_with_token(&server.url, Some(&ann)).await;
    assert!(sig.is_ok(), "a socket with a valid token was refused");

    // Admin routes: listing sessions and /metrics.
    let http = reqwest::Client::new();
    let list = |t: &str| {
        http.get(format!("{}/sessions", server.url))
            .bearer_auth(t.to_string())
            .send()
    };
    let r = list(&ann).await.expect("GET /sessions");
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(code(&r.text().await.unwrap()), "missing_grant");
    let r = list(&admin).await.expect("GET /sessions");
    assert_eq!(r.status().as_u16(), 200);
    let live: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(
        live["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == "ann-session-1"),
        "{live}"
    );
    let (status, _) = server.get("/metrics").await;
    assert_eq!(status, 401);

    // Ending a session: not with someone else's token, yes with its own.
    let bob = mint_token(&["--identity", "bob"]);
    let end = |t: &str| {
        http.delete(format!("{}/whip/ann-session-1", server.url))
            .bearer_auth(t.to_string())
            .send()
    };
    let r = end(&bob).await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(code(&r.text().await.unwrap()), "wrong_session");
    // Prompting it: the prompt grant may, a stranger may not.
    let prompt = |t: &str| {
        http.post(format!("{}/sessions/ann-session-1/prompt", server.url))
            .bearer_auth(t.to_string())
            .header("content-type", "application/json")
            .body(r#"{"text":"Hello there."}"#)
            .send()
    };
    assert_eq!(prompt(&bob).await.unwrap().status().as_u16(), 403);
    assert_eq!(prompt(&prompter).await.unwrap().status().as_u16(), 202);
    assert_eq!(end(&ann_bound).await.unwrap().status().as_u16(), 200);

    // Other pages and host names.
    let r = http
        .post(format!("{}/whip", server.url))
        .bearer_auth(&ann)
        .header("origin", "http://evil.example")
        .header("content-type", "application/sdp")
        .body(offer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(code(&r.text().await.unwrap()), "origin_not_allowed");
    let r = http
        .get(format!("{}/healthz", server.url))
        .header("host", "rebound.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(code(&r.text().await.unwrap()), "host_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_may_resume_its_own_identitys_session_only() {
    let server = Server::start(&["--pipeline", "echo"], &[("VOXLOOP_AUTH_KEY", AUTH_KEY)]);
    let (_peer, _streams, offer) = common::real_offer().await;
    let ann = mint_token(&["--identity", "ann"]);
    let bob = mint_token(&["--identity", "bob"]);
    let (status, _, _) = whip(&server, &offer, Some(&ann), Some("ann-tab-0001")).await;
    assert_eq!(
        status, 403,
        "an unbound token cannot pick an id nobody held"
    );
    // A session of ann's, which she ends (nobody connects to it).
    let (status, body, location) = whip(&server, &offer, Some(&ann), None).await;
    assert_eq!(status, 201, "{body}");
    let location = location.expect("a Location");
    let id = location.trim_start_matches("/whip/").to_string();
    let r = reqwest::Client::new()
        .delete(format!("{}{location}", server.url))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        server.slots_free(Duration::from_secs(5)).await.is_some(),
        "ann's session did not end"
    );
    let (status, body, _) = whip(&server, &offer, Some(&bob), Some(&id)).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (403, "wrong_session"),
        "bob takes over ann's id"
    );
    let (status, body, _) = whip(&server, &offer, Some(&ann), Some(&id)).await;
    assert_eq!(status, 201, "ann resumes her own id: {body}");
}

#[test]
fn a_public_bind_needs_auth() {
    let out = Command::new(env!("CARGO_BIN_EXE_voxloop"))
        .args(["serve", "--pipeline", "echo", "--bind", "0.0.0.0:0"])
        .env_remove("VOXLOOP_CONFIG")
        .env_remove("VOXLOOP_AUTH_KEY")
        .env("VOXLOOP_NATS_URL", "")
        .output()
        .expect("run voxloop serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refusing to serve 0.0.0.0:0 without authentication"),
        "{stderr}"
    );
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("refusing"))
        .unwrap_or_default();
    println!("{line}");
}
