//! `GET /ws`: JSON signaling over a WebSocket (DESIGN.md §2), trickle ICE both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};

use super::access::{self, Caller};
use super::listen::ClientAddr;
use super::{AppState, Opened, PeerStep, next_peer_step};
use crate::auth::Grant;
use crate::rtc::signaling::Action;
use crate::rtc::{ErrorCode, Negotiation, ServerMessage, SignalError, parse_client_message};

/// Frames above this are refused by the WebSocket layer itself (the socket
/// closes). Messages between `max_message_bytes` and this get an `error`
/// message and the socket stays open.
const WS_HARD_LIMIT: usize = 4 * 1024 * 1024;

/// `?token=` (the other place a WebSocket token may come from is the
/// `voxloop.token.<JWT>` subprotocol, see `access`).
#[derive(Debug, serde::Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

pub async fn handler(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
) -> Response {
    // Checked before the upgrade, so a refused client gets an HTTP status
    // and a readable body, as with WHIP.
    let token = query
        .token
        .as_deref()
        .or_else(|| access::ws_protocol_token(&headers));
    let caller = match state
        .access
        .check_origin(&headers)
        .and_then(|()| state.access.require(token, Grant::Join))
    {
        Ok(c) => c,
        Err(e) => return state.refuse(e),
    };
    ws.protocols([access::WS_PROTOCOL])
        .max_message_size(WS_HARD_LIMIT)
        .max_frame_size(WS_HARD_LIMIT)
        .on_upgrade(move |socket| run(state, socket, caller, client))
}

/// The next step of the socket's session, once it has one.
async fn peer_step(live: &mut Option<Opened>) -> PeerStep {
    match live {
        Some(l) => next_peer_step(l).await,
        None => std::future::pending().await,
    }
}

/// What a signaling socket knows about its client.
struct Signaler {
    caller: Caller,
    addr: Option<SocketAddr>,
    /// Remote candidates taken so far (`limits.candidates_per_session`).
    candidates: usize,
}

async fn run(state: Arc<AppState>, socket: WebSocket, caller: Caller, addr: Option<SocketAddr>) {
    let mut client = Signaler {
        caller,
        addr,
        candidates: 0,
    };
    let (mut tx, mut rx) = socket.split();
    let mut negotiation = Negotiation::default();
    let mut live: Option<Opened> = None;
    // A socket that never offers would otherwise hold its connection forever.
    let idle = Duration::from_millis(state.config.http.ws_idle_timeout_ms);
    let mut idle_until = Instant::now() + idle;

    let reason = loop {
        let out: Option<ServerMessage> = tokio::select! {
            _ = tokio::time::sleep_until(idle_until.into()), if live.is_none() => {
                let e = SignalError::new(ErrorCode::Timeout, format!("no offer within {} ms; closing", idle.as_millis()));
                state.record_error(&e);
                let _ = send(&mut tx, &e.to_message()).await;
                break "idle";
            }
            msg = rx.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break "socket closed",
                Some(Ok(Message::Text(text))) => {
                    idle_until = Instant::now() + idle;
                    match handle_text(&state, &mut client, &mut negotiation, &mut live, text.as_str()).await {
                        Ok(Step::Reply(msgs)) => {
                            let mut failed = false;
                            for m in msgs {
                                failed |= send(&mut tx, &m).await.is_err();
                            }
                            if failed {
                                break "socket write failed";
                            }
                            None
                        }
                        Ok(Step::Close) => break "bye",
                        Err(e) => {
                            state.record_error(&e);
                            Some(e.to_message())
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let e = SignalError::new(ErrorCode::Binary, "binary frames are not part of the protocol; send JSON text");
                    state.record_error(&e);
                    Some(e.to_message())
                }
                Some(Ok(_)) => None, // ping/pong: handled by axum
            },
            step = peer_step(&mut live) => match step {
                PeerStep::Candidate(candidate) => Some(ServerMessage::Candidate { candidate }),
                PeerStep::Continue => None,
                PeerStep::End(reason) => break reason,
            },
        };
        if let Some(m) = out
            && send(&mut tx, &m).await.is_err()
        {
            break "socket write failed";
        }
    };

    if let Some(l) = live {
        state.close_session(l.session, l.slot, reason).await;
    }
    let _ = tx.close().await;
}

enum Step {
    Reply(Vec<ServerMessage>),
    Close,
}

async fn handle_text(
    state: &Arc<AppState>,
    client: &mut Signaler,
    negotiation: &mut Negotiation,
    live: &mut Option<Opened>,
    text: &str,
) -> Result<Step, SignalError> {
    let msg = parse_client_message(text, state.config.max_message_bytes)?;
    match negotiation.on_message(msg)? {
        Action::Answer { sdp, session_id } => {
            let slot = state.admit(&client.caller, session_id.as_deref(), client.addr)?;
            let opened = state.open_session(slot, &sdp).await?;
            negotiation.answered();
            let reply = vec![
                ServerMessage::Session {
                    id: opened.slot.id.clone(),
                },
                ServerMessage::Answer {
                    sdp: opened.answer.clone(),
                },
            ];
            *live = Some(opened);
            Ok(Step::Reply(reply))
        }
        Action::AddCandidate(c) => {
            client.candidates += 1;
            let cap = state.config.limits.candidates_per_session;
            if client.candidates > cap {
                return Err(SignalError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "more than {cap} candidates on one socket (limits.candidates_per_session)"
                    ),
                ));
            }
            if let Some(l) = live.as_ref() {
                l.session
                    .peer
                    .add_remote_candidate(c)
                    .await
                    .map_err(|e| SignalError::new(ErrorCode::BadCandidate, e.to_string()))?;
            }
            Ok(Step::Reply(vec![]))
        }
        Action::Close => Ok(Step::Close),
    }
}

async fn send<S>(tx: &mut S, msg: &ServerMessage) -> Result<(), ()>
where
    S: futures::Sink<Message> + Unpin,
{
    let text = serde_json::to_string(msg).map_err(|_| ())?;
    tx.send(Message::Text(text.into())).await.map_err(|_| ())
}
