//! The accept loop: hyper with a header-read timeout, a cap on open
//! connections, and a bounded wait for connections at shutdown.
//!
//! Why not `axum::serve`: it gives hyper no timer, so hyper's header
//! timeout is off (a slowloris client or an idle socket holds its
//! connection forever), it has no connection cap, and its graceful shutdown
//! waits for every connection without a deadline.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// Resolves once shutdown began (or the accept loop is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it at once.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// What the accept loop enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Serve `app` on `listener` until `shutdown` resolves with a deadline,
/// then give open connections until then to finish. New connections are
/// accepted while `shutdown` runs (a draining server still answers, if only
/// with `draining`). Handlers see the client's address as
/// `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = std::time::Instant>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // hyper's own HTTP/1 builder, not hyper-util's auto one: auto first
    // reads the client's preface to pick a version, with no timer, so a
    // socket that never sends a byte was never timed out. Browsers speak
    // HTTP/1.1 to a plain-http origin.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let (stopping, stop) = watch::channel(false);
    tokio::pin!(shutdown);
    let deadline = loop {
        // At the cap, stop accepting: newcomers wait in the kernel's backlog
        // until a connection closes (the header timeout closes idle ones).
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break std::time::Instant::now(),
            },
            d = &mut shutdown => break d,
        };
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            d = &mut shutdown => break d,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(remote));
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {})) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stopped(&mut stop) => {
                    // Finish the request in flight, take no new one.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    };
    drop(listener);
    let _ = stopping.send(true);
    // Every connection holds a permit until it closes.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = permits.acquire_many(all) => tracing::info!("all connections closed"),
        _ = tokio::time::sleep_until(deadline.into()) => {
            tracing::warn!("connections still open at the drain deadline; leaving them");
        }
    }
}

/// The client's address as the accept loop recorded it (`None` when the
/// router runs without it, as in a unit test).
pub struct ClientAddr(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|ConnectInfo(a)| *a),
        ))
    }
}
