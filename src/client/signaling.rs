//! The signaling socket alone: `/ws`'s JSON protocol, for the client and
//! for tests of the protocol itself.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{ClientError, to_json};
use crate::rtc::ServerMessage;
use crate::rtc::signaling::ClientMessage as SignalMessage;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `http://host:port` → `ws://host:port/ws`.
pub fn ws_url(server: &str) -> Result<String, ClientError> {
    let base = server.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}/ws"))
    } else if let Some(rest) = base.strip_prefix("ws://") {
        Ok(format!("ws://{}/ws", rest.trim_end_matches("/ws")))
    } else {
        Err(ClientError::Url(server.to_string()))
    }
}

/// A bare signaling socket that speaks the JSON protocol (for tests of the protocol itself).
pub struct Signaling {
    ws: Ws,
}

impl Signaling {
    pub async fn connect(server: &str) -> Result<Self, ClientError> {
        Self::connect_with_token(server, None).await
    }

    /// Connect with a join token (a server with auth on), sent as the
    /// `voxloop.token.<JWT>` subprotocol as the web page does.
    pub async fn connect_with_token(
        server: &str,
        token: Option<&str>,
    ) -> Result<Self, ClientError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = ws_url(server)?;
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::Socket(e.to_string()))?;
        if let Some(t) = token {
            let protocols = format!("voxloop, voxloop.token.{t}");
            let value = protocols
                .parse()
                .map_err(|_| ClientError::Socket("the token is not a valid header value".into()))?;
            req.headers_mut().insert("sec-websocket-protocol", value);
        }
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| ClientError::Socket(e.to_string()))?;
        Ok(Self { ws })
    }

    /// Send a protocol message.
    pub async fn send(&mut self, msg: &SignalMessage) -> Result<(), ClientError> {
        self.send_text(to_json(msg)?).await
    }

    /// Send raw text, valid or not.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), ClientError> {
        self.ws
            .send(Message::text(text.into()))
            .await
            .map_err(|e| ClientError::Socket(e.to_string()))
    }

    pub async fn send_binary(&mut self, data: Vec<u8>) -> Result<(), ClientError> {
        self.ws
            .send(Message::binary(data))
            .await
            .map_err(|e| ClientError::Socket(e.to_string()))
    }

    /// Next server message, skipping pings. `Ok(None)` when the socket closed.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Option<ServerMessage>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| ClientError::Timeout(timeout, "a signaling message"))?;
            match msg {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Err(e)) => return Err(ClientError::Socket(e.to_string())),
                Some(Ok(Message::Text(t))) => {
                    let m: ServerMessage = serde_json::from_str(t.as_str())
                        .map_err(|e| ClientError::Socket(format!("bad server message: {e}")))?;
                    return Ok(Some(m));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Next message that is not a trickled candidate.
    pub async fn recv_non_candidate(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<ServerMessage>, ClientError> {
        loop {
            match self.recv(timeout).await? {
                Some(ServerMessage::Candidate { .. }) => continue,
                other => return Ok(other),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls() {
        assert_eq!(
            ws_url("http://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(
            ws_url("http://127.0.0.1:8080/").unwrap(),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(ws_url("ws://h:1/ws").unwrap(), "ws://h:1/ws");
        assert!(ws_url("ftp://x").is_err());
    }
}
