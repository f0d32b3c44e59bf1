//! The OpenAI-compatible LLM backend against a local stand-in server (an
//! Ollama-like server cannot run here): request format, streaming, errors,
//! cancellation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use voxloop::pipeline::llm::{ChatMessage, Finish, LlmEvent, Role};
use voxloop::pipeline::llm::{HttpLlm, HttpLlmOptions};

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<serde_json::Value>>>);

async fn completions(State(seen): State<Seen>, body: Bytes) -> Response {
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    seen.0.lock().unwrap().push(req.clone());
    let model = req["model"].as_str().unwrap_or_default();
    if model == "broken" {
        return (StatusCode::INTERNAL_SERVER_ERROR, "model exploded").into_response();
    }
    let words: Vec<String> = if model == "chatty" {
        (0..200).map(|i| format!(" word{i}")).collect()
    } else {
        ["The", " capital", " of France", " is Paris."]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let stream = futures::stream::unfold(0usize, move |i| {
        let words = words.clone();
        async move {
            if i > words.len() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            let line = if i == words.len() {
                "data: [DONE]\n\n".to_string()
            } else {
                let chunk = serde_json::json!({"choices": [{"index": 0, "delta": {"content": words[i]}, "finish_reason": null}]});
                format!("data: {chunk}\n\n")
            };
            Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), i + 1))
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn fake_server() -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/v1"), seen)
}

fn backend(url: &str, model: &str) -> HttpLlm {
    HttpLlm::new(HttpLlmOptions {
        url: url.into(),
        model: model.into(),
        api_key: Some("test-key".into()),
        concurrency: 2,
        queue: 2,
        max_tokens: 64,
        temperature: 0.0,
        timeout: Duration::from_secs(10),
    })
}

fn question() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, "Be brief."),
        ChatMessage::new(Role::User, "What is the capital of France?"),
    ]
}

#[tokio::test]
async fn streams_tokens_in_openai_format() {
    let (url, seen) = fake_server().await;
    let llm = backend(&url, "qwen2.5:0.5b");
    let mut g = llm.generate(question(), None).unwrap();
    let mut tokens = Vec::new();
    let done = loop {
        match g.events.recv().await.expect("events") {
            LlmEvent::Token(t) => tokens.push(t),
            LlmEvent::Done(c) => break c,
        }
    };
    assert_eq!(tokens.len(), 4, "{tokens:?}");
    assert_eq!(done.text, "The capital of France is Paris.");
    assert_eq!(done.finish, Finish::Stop);
    assert!(done.first_token.is_some());
    let req = seen.0.lock().unwrap()[0].clone();
    assert_eq!(req["model"], "qwen2.5:0.5b");
    assert_eq!(req["stream"], true);
    assert_eq!(req["messages"][0]["role"], "system");
    assert_eq!(
        req["messages"][1]["content"],
        "What is the capital of France?"
    );
}

#[tokio::test]
async fn errors_and_dead_servers_end_the_generation_cleanly() {
    let (url, _) = fake_server().await;
    let c = backend(&url, "broken")
        .generate(question(), None)
        .unwrap()
        .collect()
        .await;
    match c.finish {
        Finish::Error(e) => assert!(e.contains("500"), "{e}"),
        other => panic!("{other:?}"),
    }
    // Nothing listens on port 9 of loopback.
    let c = backend("http://127.0.0.1:9/v1", "x")
        .generate(question(), None)
        .unwrap()
        .collect()
        .await;
    assert!(matches!(c.finish, Finish::Error(_)), "{:?}", c.finish);
}

#[tokio::test]
async fn cancel_stops_the_stream_and_queue_limits_apply() {
    let (url, _) = fake_server().await;
    let llm = backend(&url, "chatty");
    let mut g = llm.generate(question(), None).unwrap();
    let mut seen = 0;
    while seen < 3 {
        if let Some(LlmEvent::Token(_)) = g.events.recv().await {
            seen += 1;
        }
    }
    g.cancel();
    let mut after = 0;
    let c = loop {
        match g.events.recv().await.unwrap() {
            LlmEvent::Token(_) => after += 1,
            LlmEvent::Done(c) => break c,
        }
    };
    assert_eq!(c.finish, Finish::Cancelled);
    assert!(after <= 1, "{after} tokens after cancel");
    // concurrency 2 + queue 2: the fifth request is refused at once.
    let held: Vec<_> = (0..4)
        .map(|_| llm.generate(question(), None).unwrap())
        .collect();
    assert!(llm.generate(question(), None).is_err());
    for g in held {
        g.cancel();
        g.collect().await;
    }
}
