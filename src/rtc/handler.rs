//! The engine's per-connection callbacks (`PeerConnectionEventHandler`):
//! ICE, connection state, the `events` data channel and the remote audio
//! track, handed to the peer's owner as [`PeerEvent`]s.

use std::sync::Arc;

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::{Mutex, mpsc};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState,
};

use super::peer::{EVENTS_LABEL, PeerEvent};
use super::signaling::IceCandidate;

/// The engine's callbacks for one connection, turned into [`PeerEvent`]s
/// for the peer's owner and into the remote track and data channel the
/// [`Peer`](super::Peer) reads.
pub(super) struct Handler {
    pub(super) events: mpsc::Sender<PeerEvent>,
    pub(super) tracks: mpsc::Sender<Arc<dyn TrackRemote>>,
    pub(super) data: Arc<Mutex<Option<Arc<dyn DataChannel>>>>,
    pub(super) rt: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self
                    .events
                    .try_send(PeerEvent::LocalCandidate(IceCandidate {
                        candidate: init.candidate,
                        sdp_mid: init.sdp_mid,
                        sdp_mline_index: init.sdp_mline_index,
                        username_fragment: init.username_fragment,
                    }));
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize local candidate"),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.events.try_send(PeerEvent::GatheringComplete);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(%state, "peer connection state");
        let ev = match state {
            RTCPeerConnectionState::Connected => PeerEvent::Connected,
            RTCPeerConnectionState::Disconnected => PeerEvent::Disconnected,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                PeerEvent::Ended(state.to_string())
            }
            _ => return,
        };
        // State changes wait for room rather than being dropped with the
        // candidates and data messages: a lost `Ended` left a session (and
        // its slot) alive with no peer. They are few, and the owner always
        // drains the queue; an owner that is gone makes this return at once.
        let _ = self.events.send(ev).await;
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let label = dc.label().await.unwrap_or_default();
        if label != EVENTS_LABEL {
            tracing::debug!(%label, "ignoring extra data channel");
            return;
        }
        spawn_data_channel(&self.rt, dc, self.data.clone(), self.events.clone());
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if track.kind().await != RtpCodecKind::Audio {
            return;
        }
        if self.tracks.try_send(track).is_err() {
            tracing::debug!("ignoring an extra audio track");
        }
    }
}

pub(super) fn spawn_data_channel(
    rt: &tokio::runtime::Handle,
    dc: Arc<dyn DataChannel>,
    slot: Arc<Mutex<Option<Arc<dyn DataChannel>>>>,
    events: mpsc::Sender<PeerEvent>,
) {
    rt.spawn(async move {
        *slot.lock().await = Some(dc.clone());
        while let Some(ev) = dc.poll().await {
            match ev {
                DataChannelEvent::OnOpen => {
                    let _ = events.try_send(PeerEvent::DataOpen);
                }
                DataChannelEvent::OnMessage(msg) => match String::from_utf8(msg.data.to_vec()) {
                    Ok(text) => {
                        let _ = events.try_send(PeerEvent::DataMessage(text));
                    }
                    Err(_) => tracing::debug!("dropping non-UTF-8 data channel message"),
                },
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
        slot.lock().await.take();
    });
}
