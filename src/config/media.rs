//! The media sections of [`super::Config`]: `[rtc]` (sockets and ICE),
//! `[audio]` (Opus and packets) and `[echo]` (the echo pipeline).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtcConfig {
    /// Local IPs to bind media sockets on (`VOXLOOP_RTC_BIND`, comma-separated).
    /// Loopback by default; add a real interface to serve other machines.
    pub udp_bind: Vec<IpAddr>,
    /// Public IPs to advertise for a 1:1 NAT (`VOXLOOP_RTC_PUBLIC_IPS`).
    pub public_ips: Vec<String>,
    /// ICE connectivity-check interval in ms (`VOXLOOP_RTC_ICE_CHECK_MS`).
    pub ice_check_interval_ms: u64,
    /// A peer that has not connected this long after its offer was answered
    /// is dropped and its slot freed, ms (`VOXLOOP_RTC_CONNECT_TIMEOUT_MS`).
    pub connect_timeout_ms: u64,
    /// A connected peer that loses its path may recover for this long
    /// before the session ends, ms (`VOXLOOP_RTC_DISCONNECT_GRACE_MS`).
    pub disconnect_grace_ms: u64,
    /// Discontinuous transmission (`VOXLOOP_RTC_DTX`): while the audio sent
    /// is silence, one packet goes out every 400 ms instead of every 20 ms,
    /// and the SDP asks peers to do the same (`usedtx=1`).
    pub dtx: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioConfig {
    /// Opus bitrate of the audio we send, bits/s (`VOXLOOP_OPUS_BITRATE`).
    pub opus_bitrate: i32,
    /// Opus encoder complexity, 0-10 (`VOXLOOP_OPUS_COMPLEXITY`): 3 costs a
    /// sixth of libopus' default 10 with the same echo correlation.
    pub opus_complexity: i32,
    /// Longest audio packet we send, ms: 20, 40 or 60
    /// (`VOXLOOP_AUDIO_PACKET_MS`). Queued audio (a reply, an echo) goes
    /// out this many ms at a time; live audio and the end of a queue go out
    /// 20 ms at a time. Every packet costs the media path about as much as
    /// encoding it, so 40 halves the packets of a reply.
    pub packet_ms: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EchoConfig {
    /// Frame level above which the echo gate hears speech, dBFS.
    pub threshold_dbfs: f32,
    /// Silence that ends an utterance, ms.
    pub hangover_ms: u32,
    /// Longest utterance kept; longer speech is played back in pieces, ms.
    pub max_utterance_ms: u32,
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            udp_bind: vec![IpAddr::from([127, 0, 0, 1])],
            public_ips: vec![],
            ice_check_interval_ms: 20,
            connect_timeout_ms: 10_000,
            disconnect_grace_ms: 5_000,
            dtx: true,
        }
    }
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            opus_bitrate: 48_000,
            // As `audio::codec::DEFAULT_COMPLEXITY` (config imports nothing).
            opus_complexity: 3,
            packet_ms: 20,
        }
    }
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            threshold_dbfs: -40.0,
            hangover_ms: 500,
            max_utterance_ms: 30_000,
        }
    }
}
