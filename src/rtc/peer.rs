//! One WebRTC peer connection with one Opus track each way and one data channel.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::{Mutex, mpsc};
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, RTCIceCandidateInit, RTCIceCandidateType,
    RTCSessionDescription, Registry, SettingEngineBuilder,
};

use super::handler::{Handler, spawn_data_channel};
use super::media::{RemoteAudio, RtpOut, set_usedtx, wants_dtx};
use super::signaling::IceCandidate;
use crate::config::RtcConfig;

/// Label of the JSON event channel; the client creates it before its offer.
pub const EVENTS_LABEL: &str = "events";
/// Opus payload type we offer (the value browsers use).
const OPUS_PT: u8 = 111;
/// Remote audio tracks waiting to be read (a browser sends one; the
/// engine buffers each track's packets).
const TRACK_QUEUE: usize = 4;
const EVENT_QUEUE: usize = 256;

/// Media-engine settings from the `[rtc]` config section.
#[derive(Debug, Clone)]
pub struct RtcSettings {
    /// Local addresses to bind one UDP socket each on; loopback by default.
    pub udp_bind: Vec<IpAddr>,
    /// Public addresses to advertise instead of the bound ones (1:1 NAT).
    pub public_ips: Vec<String>,
    /// Interval between ICE connectivity checks.
    pub ice_check_interval: Duration,
    /// Rate inbound audio is decoded to: the server's pipelines run at
    /// 16 kHz, which libopus decodes to natively (no resampling).
    pub decode_rate: u32,
    /// Ask the remote peer for DTX (`usedtx=1` in our SDP): it sends
    /// (almost) nothing while it is silent.
    pub dtx: bool,
}

impl From<&RtcConfig> for RtcSettings {
    fn from(c: &RtcConfig) -> Self {
        Self {
            udp_bind: c.udp_bind.clone(),
            public_ips: c.public_ips.clone(),
            ice_check_interval: Duration::from_millis(c.ice_check_interval_ms.max(1)),
            decode_rate: crate::PIPELINE_RATE,
            dtx: c.dtx,
        }
    }
}

/// The `[rtc]` defaults: loopback, 20 ms checks, 16 kHz decoding, DTX.
impl Default for RtcSettings {
    fn default() -> Self {
        Self::from(&RtcConfig::default())
    }
}

/// A peer connection operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("invalid SDP: {0}")]
    Sdp(String),
    #[error("invalid ICE candidate: {0}")]
    Candidate(String),
    #[error("webrtc: {0}")]
    Engine(String),
}

fn engine<E: std::fmt::Display>(e: E) -> PeerError {
    PeerError::Engine(e.to_string())
}

/// Something that happened on the connection, for the session to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    LocalCandidate(IceCandidate),
    GatheringComplete,
    Connected,
    /// ICE lost the path; it may come back (`Connected` again) or fail.
    Disconnected,
    /// Failed or closed: the session is over.
    Ended(String),
    DataOpen,
    DataMessage(String),
}

/// The receiving ends a peer's owner reads from.
pub struct PeerStreams {
    pub events: mpsc::Receiver<PeerEvent>,
    pub audio: RemoteAudio,
}

/// The address of an ICE candidate line if it is an mDNS name (`<uuid>.local`).
/// A candidate line is `candidate:<foundation> <component> <transport> <priority> <address> <port> typ …`.
fn mdns_name(candidate: &str) -> Option<&str> {
    let address = candidate.split_whitespace().nth(4)?;
    address
        .to_ascii_lowercase()
        .ends_with(".local")
        .then_some(address)
}

/// Wait up to `timeout` for ICE gathering to finish, consuming `events`.
/// Returns whether it finished, and the other events seen meanwhile (local
/// candidates are dropped: they are in the local SDP once gathering is done).
pub async fn wait_gathered(
    events: &mut mpsc::Receiver<PeerEvent>,
    timeout: Duration,
) -> (bool, Vec<PeerEvent>) {
    let mut other = Vec::new();
    let done = tokio::time::timeout(timeout, async {
        while let Some(ev) = events.recv().await {
            match ev {
                PeerEvent::GatheringComplete => return true,
                PeerEvent::LocalCandidate(_) => {}
                ev => other.push(ev),
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    (done, other)
}

/// A live peer connection.
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    rtp: std::sync::Mutex<RtpOut>,
    payload_type: std::sync::Mutex<u8>,
    /// Whether the SDP we give asks the peer for DTX.
    dtx: bool,
    data: Arc<Mutex<Option<Arc<dyn DataChannel>>>>,
    events: mpsc::Sender<PeerEvent>,
    closed: AtomicBool,
    rt: tokio::runtime::Handle,
}

fn opus_codec(dtx: bool) -> RTCRtpCodec {
    let fmtp = if dtx {
        "minptime=10;useinbandfec=1;usedtx=1"
    } else {
        "minptime=10;useinbandfec=1"
    };
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: fmtp.to_owned(),
        rtcp_feedback: vec![],
    }
}

impl Peer {
    async fn build(settings: &RtcSettings) -> Result<(Self, PeerStreams), PeerError> {
        let rt = tokio::runtime::Handle::current();
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        let (tracks_tx, tracks_rx) = mpsc::channel(TRACK_QUEUE);
        let data = Arc::new(Mutex::new(None));

        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: opus_codec(settings.dtx),
                    payload_type: OPUS_PT,
                },
                RtpCodecKind::Audio,
            )
            .map_err(engine)?;
        // RTCP sender and receiver reports only. The engine's defaults add
        // NACK (negotiated for video only, so never used on this audio-only
        // connection, but it watched every packet) and transport-wide
        // congestion control feedback (a browser's bandwidth estimate,
        // which a fixed-rate Opus stream does not need): 2-3 % of an echo
        // server's CPU (docs/BENCHMARKS.md, "Media cost per session").
        let registry = configure_rtcp_reports(Registry::new());
        // No mDNS: resolving a browser's `<uuid>.local` candidates would send
        // multicast queries on the network, and every peer would bind port 5353.
        // Such candidates are skipped (see `add_remote_candidate`).
        let mut se = SettingEngineBuilder::new()
            .with_ice_connection_attempts(Some(settings.ice_check_interval), None)
            // A check from the other side that comes before its trickled
            // candidate makes a peer-reflexive pair, which the engine would
            // not nominate for 1 s (pion's default): 20 of 56 of the load
            // tester's sessions connected in ~1040 ms instead of ~25. Browsers
            // nominate such a pair at once, and so do we (`Some(ZERO)`: `None`
            // means the default).
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            .with_multicast_dns_mode(MulticastDnsMode::Disabled);
        if !settings.public_ips.is_empty() {
            se = se.with_nat_1to1_ips(settings.public_ips.clone(), RTCIceCandidateType::Host);
        }
        let handler = Arc::new(Handler {
            events: ev_tx.clone(),
            tracks: tracks_tx,
            data: data.clone(),
            rt: rt.clone(),
        });
        let addrs: Vec<String> = settings
            .udp_bind
            .iter()
            .map(|ip| std::net::SocketAddr::new(*ip, 0).to_string())
            .collect();
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(se.build())
            .with_handler(handler)
            .with_udp_addrs(addrs)
            .build()
            .await
            .map_err(engine)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let ssrc = rand::random::<u32>();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "voxloop".to_owned(),
            "voxloop-audio".to_owned(),
            "voxloop-audio".to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: opus_codec(settings.dtx),
                ..Default::default()
            }],
        )));
        let peer = Self {
            pc,
            track,
            rtp: std::sync::Mutex::new(RtpOut::new(ssrc)),
            payload_type: std::sync::Mutex::new(OPUS_PT),
            dtx: settings.dtx,
            data,
            events: ev_tx,
            closed: AtomicBool::new(false),
            rt,
        };
        if let Err(e) = peer
            .pc
            .add_track(peer.track.clone() as Arc<dyn TrackLocal>)
            .await
        {
            peer.close().await;
            return Err(engine(e));
        }
        Ok((
            peer,
            PeerStreams {
                events: ev_rx,
                audio: RemoteAudio::new(tracks_rx, settings.decode_rate),
            },
        ))
    }

    /// Server side: answer a remote offer. Returns the peer, its streams and the answer SDP.
    ///
    /// The answer is returned at once (trickle ICE); local candidates follow as
    /// [`PeerEvent::LocalCandidate`]. Use [`Peer::local_sdp`] after
    /// [`PeerEvent::GatheringComplete`] for a non-trickle answer (WHIP).
    pub async fn answer(
        settings: &RtcSettings,
        offer_sdp: &str,
    ) -> Result<(Self, PeerStreams, String), PeerError> {
        let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
            .map_err(|e| PeerError::Sdp(e.to_string()))?;
        let (peer, streams) = Self::build(settings).await?;
        match peer.negotiate_answer(offer).await {
            Ok(sdp) => Ok((peer, streams, sdp)),
            Err(e) => {
                peer.close().await;
                Err(e)
            }
        }
    }

    async fn negotiate_answer(&self, offer: RTCSessionDescription) -> Result<String, PeerError> {
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| PeerError::Sdp(e.to_string()))?;
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(|e| PeerError::Sdp(e.to_string()))?;
        let sdp = answer.sdp.clone();
        self.pc
            .set_local_description(answer)
            .await
            .map_err(engine)?;
        self.resolve_payload_type().await;
        let sdp = set_usedtx(&sdp, self.payload(), self.dtx);
        Ok(self.local_sdp().await.unwrap_or(sdp))
    }

    /// Client side: create a peer with the events data channel and return its offer SDP.
    pub async fn offer(settings: &RtcSettings) -> Result<(Self, PeerStreams, String), PeerError> {
        let (peer, streams) = Self::build(settings).await?;
        match peer.create_offer().await {
            Ok(sdp) => Ok((peer, streams, sdp)),
            Err(e) => {
                peer.close().await;
                Err(e)
            }
        }
    }

    async fn create_offer(&self) -> Result<String, PeerError> {
        let dc = self
            .pc
            .create_data_channel(EVENTS_LABEL, None)
            .await
            .map_err(engine)?;
        spawn_data_channel(&self.rt, dc, self.data.clone(), self.events.clone());
        let offer = self.pc.create_offer(None).await.map_err(engine)?;
        let sdp = offer.sdp.clone();
        self.pc.set_local_description(offer).await.map_err(engine)?;
        Ok(sdp)
    }

    /// Client side: apply the server's answer.
    pub async fn accept_answer(&self, sdp: &str) -> Result<(), PeerError> {
        let answer = RTCSessionDescription::answer(sdp.to_owned())
            .map_err(|e| PeerError::Sdp(e.to_string()))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| PeerError::Sdp(e.to_string()))?;
        self.resolve_payload_type().await;
        Ok(())
    }

    async fn resolve_payload_type(&self) {
        for sender in self.pc.get_senders().await {
            if let Ok(params) = sender.get_parameters().await
                && let Some(codec) = params.rtp_parameters.codecs.first()
            {
                if let Ok(mut pt) = self.payload_type.lock() {
                    *pt = codec.payload_type;
                }
                return;
            }
        }
    }

    /// The current local description (with the candidates gathered so
    /// far), asking for DTX or not as configured.
    pub async fn local_sdp(&self) -> Option<String> {
        let sdp = self.pc.local_description().await?.sdp;
        Some(set_usedtx(&sdp, self.payload(), self.dtx))
    }

    fn payload(&self) -> u8 {
        self.payload_type.lock().map(|g| *g).unwrap_or(OPUS_PT)
    }

    /// Add a remote candidate from signaling; `None` marks the end of candidates.
    pub async fn add_remote_candidate(&self, c: Option<IceCandidate>) -> Result<(), PeerError> {
        let Some(c) = c else {
            return Ok(());
        };
        if let Some(name) = mdns_name(&c.candidate) {
            // Browsers hide host addresses behind mDNS names by default. The
            // browser's connectivity checks still reach our candidates, and we
            // answer them at their source address (a peer-reflexive candidate),
            // so skipping the name costs nothing on a reachable path.
            tracing::info!(
                %name,
                "ignoring an mDNS ICE candidate (the server does not resolve .local names; \
                 the browser's own connectivity checks find the path)"
            );
            return Ok(());
        }
        self.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate: c.candidate,
                sdp_mid: c.sdp_mid,
                sdp_mline_index: c.sdp_mline_index,
                username_fragment: c.username_fragment,
                ..Default::default()
            })
            .await
            .map_err(|e| PeerError::Candidate(e.to_string()))
    }

    /// Send one Opus packet of `frames` 20 ms frames, after `paused` frames
    /// that DTX held back (0 in a continuous stream).
    pub async fn send_opus(
        &self,
        packet: Vec<u8>,
        paused: u32,
        frames: u32,
    ) -> Result<(), PeerError> {
        let pt = self.payload();
        let packet = self
            .rtp
            .lock()
            .map_err(|_| PeerError::Engine("RTP state poisoned".into()))?
            .packet(pt, packet, paused, frames);
        self.track.write_rtp(packet).await.map_err(engine)
    }

    /// The remote description asks for DTX on our Opus stream (`usedtx=1`).
    pub async fn remote_wants_dtx(&self) -> bool {
        match self.pc.remote_description().await {
            Some(d) => wants_dtx(&d.sdp, self.payload()),
            None => false,
        }
    }

    /// Send a text message on the events data channel. Returns false when it is not open.
    pub async fn send_data(&self, text: &str) -> bool {
        let dc = self.data.lock().await.clone();
        match dc {
            Some(dc) => dc.send_text(text).await.is_ok(),
            None => false,
        }
    }

    /// Close the connection and release its sockets. Idempotent.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.pc.close().await {
            tracing::debug!(error = %e, "peer close");
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Dropping without close() leaks sockets and driver state in the
        // engine; make every path release them.
        if !self.closed.swap(true, Ordering::SeqCst) {
            let pc = self.pc.clone();
            self.rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mdns_name;

    #[test]
    fn recognizes_mdns_candidates() {
        assert_eq!(
            mdns_name(
                "candidate:1 1 udp 2122194687 2f5a9c3e-7b1d-4a3e-9a51-0d0f6e4b1c2a.local 54321 typ host generation 0"
            ),
            Some("2f5a9c3e-7b1d-4a3e-9a51-0d0f6e4b1c2a.local")
        );
        assert_eq!(
            mdns_name("candidate:1 1 UDP 2122194687 ABC.LOCAL 5000 typ host"),
            Some("ABC.LOCAL")
        );
        assert_eq!(
            mdns_name("candidate:1 1 udp 2122194687 127.0.0.1 5000 typ host"),
            None
        );
        assert_eq!(
            mdns_name(
                "candidate:1 1 udp 1685987071 203.0.113.7 5000 typ srflx raddr 0.0.0.0 rport 0"
            ),
            None
        );
        assert_eq!(mdns_name("garbage"), None);
    }
}
