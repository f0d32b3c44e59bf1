//! The audio of a peer: Opus frames out as RTP, the remote track decoded in.
//!
//! Outbound frames are packetized here rather than by the engine's sample
//! track, because DTX needs the RTP timestamp to move on over the frames
//! held back while the sequence number does not (a sequence gap is loss).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rtc::rtp::{Header, Packet};
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::audio::OpusDecoder;

/// RTP clock ticks in one 20 ms Opus frame (Opus' RTP clock is 48 kHz).
const FRAME_TICKS: u32 = 48 * crate::FRAME_MS;

/// One decoded inbound audio frame (mono at the peer's decode rate) with
/// its RTP facts.
#[derive(Debug, Clone)]
pub struct InboundFrame {
    pub pcm: Vec<f32>,
    pub rtp_timestamp: u32,
    pub sequence: u16,
    /// The sender resumed after a DTX pause (the RTP marker bit): a
    /// timestamp jump before this packet is a pause, not lost audio.
    pub marker: bool,
    pub arrival: Instant,
}

/// Sequence numbers and timestamps of the outbound stream.
#[derive(Debug)]
pub(super) struct RtpOut {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
}

impl RtpOut {
    /// Random starting points, as RFC 3550 asks.
    pub(super) fn new(ssrc: u32) -> Self {
        Self {
            ssrc,
            sequence: rand::random(),
            timestamp: rand::random(),
        }
    }

    /// The packet for `frames` 20 ms frames sent after `paused` frames held
    /// back. The first packet after a pause carries the marker bit, which
    /// starts a talk spurt (RFC 3551 §4.1).
    pub(super) fn packet(
        &mut self,
        payload_type: u8,
        payload: Vec<u8>,
        paused: u32,
        frames: u32,
    ) -> Packet {
        self.timestamp = self
            .timestamp
            .wrapping_add(paused.wrapping_mul(FRAME_TICKS));
        let header = Header {
            version: 2,
            marker: paused > 0,
            payload_type,
            sequence_number: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
            ..Default::default()
        };
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self
            .timestamp
            .wrapping_add(frames.wrapping_mul(FRAME_TICKS));
        Packet {
            header,
            payload: Bytes::from(payload),
        }
    }
}

/// Whether an SDP asks for DTX (`usedtx=1`) on the Opus payload type `pt`.
pub(super) fn wants_dtx(sdp: &str, pt: u8) -> bool {
    let prefix = format!("a=fmtp:{pt} ");
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix(&prefix))
        .flat_map(|params| params.split(';'))
        .any(|p| p.trim() == "usedtx=1")
}

/// `sdp` with `usedtx` on the Opus payload type's fmtp line set to `on`.
///
/// An answer repeats the offer's fmtp parameters, so a browser's offer
/// (no `usedtx`) would get no DTX back, and our client's offer would get
/// DTX from a server that has it off. The engine refuses a changed local
/// description, so the text sent to the peer carries the change.
pub(super) fn set_usedtx(sdp: &str, pt: u8, on: bool) -> String {
    let prefix = format!("a=fmtp:{pt} ");
    let mut out = String::with_capacity(sdp.len() + 10);
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        match body.strip_prefix(&prefix) {
            Some(params) => {
                let mut kept: Vec<&str> = params
                    .split(';')
                    .map(str::trim)
                    .filter(|p| !p.is_empty() && !p.starts_with("usedtx="))
                    .collect();
                if on {
                    kept.push("usedtx=1");
                }
                out.push_str(&prefix);
                out.push_str(&kept.join(";"));
                out.push_str(&line[body.len()..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// The remote audio, decoded into frames at the peer's decode rate as the
/// owner reads them.
///
/// Decoding happens in the reader's own task rather than in one of its own
/// that forwards frames over a channel: one task wake-up fewer per packet,
/// which is a visible share of an echo server (docs/BENCHMARKS.md, "Media
/// cost per session"). The engine queues up to 256 packets per track ahead
/// of the reader. Tracks are read one at a time (a browser sends one); a
/// track that ends makes way for the next.
pub struct RemoteAudio {
    tracks: mpsc::Receiver<Arc<dyn TrackRemote>>,
    track: Option<Arc<dyn TrackRemote>>,
    decoder: Option<OpusDecoder>,
    last_seq: Option<u16>,
    /// Concealed frames for lost packets, then the packet's own frame.
    ready: VecDeque<InboundFrame>,
}

impl RemoteAudio {
    pub(super) fn new(tracks: mpsc::Receiver<Arc<dyn TrackRemote>>, rate: u32) -> Self {
        let decoder = OpusDecoder::new(rate)
            .map_err(|e| tracing::error!(error = %e, rate, "cannot create Opus decoder; no inbound audio"))
            .ok();
        Self {
            tracks,
            track: None,
            decoder,
            last_seq: None,
            ready: VecDeque::new(),
        }
    }

    /// The next frame; `None` once the peer is gone. Cancel-safe: a
    /// `select!` that drops the future loses no packet (the state lives
    /// here, and each await is a channel receive).
    pub async fn recv(&mut self) -> Option<InboundFrame> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Some(f);
            }
            let Some(track) = self.track.clone() else {
                self.track = Some(self.tracks.recv().await?);
                self.last_seq = None;
                continue;
            };
            match track.poll().await {
                Some(TrackRemoteEvent::OnRtpPacket(packet)) => self.on_packet(&packet),
                Some(_) => {}
                None => self.track = None,
            }
        }
    }

    fn on_packet(&mut self, packet: &Packet) {
        let Some(decoder) = self.decoder.as_mut() else {
            return;
        };
        let seq = packet.header.sequence_number;
        let arrival = Instant::now();
        let frame = |pcm| InboundFrame {
            pcm,
            rtp_timestamp: packet.header.timestamp,
            sequence: seq,
            marker: packet.header.marker,
            arrival,
        };
        if let Some(prev) = self.last_seq {
            let gap = seq.wrapping_sub(prev);
            if gap == 0 || gap > 0x8000 {
                return; // duplicate or reordered-late packet
            }
            // Conceal up to 5 lost frames; a longer gap is a pause, not loss.
            for _ in 1..gap.min(6) {
                if let Ok(pcm) = decoder.conceal() {
                    self.ready.push_back(frame(pcm));
                }
            }
        }
        self.last_seq = Some(seq);
        match decoder.decode(&packet.payload) {
            // A packet of several frames (a peer that sends 40 or 60 ms at a
            // time) is split into 20 ms frames on the sender's timeline:
            // the same sequence number, the timestamp a frame on each time.
            Ok(pcm) => {
                for (k, chunk) in (0u32..).zip(pcm.chunks(decoder.frame_len())) {
                    let mut f = frame(chunk.to_vec());
                    f.rtp_timestamp = f.rtp_timestamp.wrapping_add(k * FRAME_TICKS);
                    f.marker &= k == 0;
                    self.ready.push_back(f);
                }
            }
            Err(e) => tracing::debug!(error = %e, "dropping undecodable Opus packet"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_moves_the_timestamp_on_without_a_sequence_gap() {
        let mut out = RtpOut::new(7);
        let a = out.packet(111, vec![1], 0, 1);
        let b = out.packet(111, vec![2], 0, 2);
        let c = out.packet(111, vec![3], 19, 1);
        let d = out.packet(111, vec![4], 0, 1);
        let seqs: Vec<u16> = [&a, &b, &c, &d]
            .iter()
            .map(|p| {
                p.header
                    .sequence_number
                    .wrapping_sub(a.header.sequence_number)
            })
            .collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
        let ts = |p: &Packet| p.header.timestamp.wrapping_sub(a.header.timestamp);
        // b holds two frames: c comes 40 ms and a 380 ms pause after it.
        assert_eq!([ts(&b), ts(&c), ts(&d)], [960, 960 * 22, 960 * 23]);
        let markers: Vec<bool> = [&a, &b, &c, &d].iter().map(|p| p.header.marker).collect();
        assert_eq!(markers, [false, false, true, false]);
        assert!(
            [&a, &b, &c, &d].iter().all(|p| p.header.ssrc == 7
                && p.header.payload_type == 111
                && p.header.version == 2)
        );
    }

    #[test]
    fn a_packet_of_several_frames_is_read_as_20_ms_frames_on_its_timeline() {
        use crate::audio::{OpusEncoder, PacketJoiner};
        let mut enc = OpusEncoder::new(48_000).unwrap();
        let tone: Vec<f32> = (0..crate::WIRE_FRAME)
            .map(|i| 0.3 * (i as f32 * 0.05).sin())
            .collect();
        let frames: Vec<Vec<u8>> = (0..3).map(|_| enc.encode(&tone).unwrap()).collect();
        let parts: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let joined = PacketJoiner::new().unwrap().join(&parts).unwrap();
        let (_tx, rx) = mpsc::channel(1);
        let mut audio = RemoteAudio::new(rx, crate::PIPELINE_RATE);
        let mut out = RtpOut::new(9);
        out.sequence = 5;
        out.timestamp = 1000;
        audio.on_packet(&out.packet(111, joined, 2, 3));
        audio.on_packet(&out.packet(111, frames[0].clone(), 0, 1));
        let got: Vec<(u16, u32, bool, usize)> = audio
            .ready
            .iter()
            .map(|f| (f.sequence, f.rtp_timestamp, f.marker, f.pcm.len()))
            .collect();
        let ts = 1000 + 2 * 960;
        assert_eq!(
            got,
            [
                (5, ts, true, 320),
                (5, ts + 960, false, 320),
                (5, ts + 1920, false, 320),
                (6, ts + 2880, false, 320),
            ]
        );
    }

    #[test]
    fn finds_usedtx_on_the_opus_payload_type_only() {
        let sdp = "v=0\r\na=rtpmap:111 opus/48000/2\r\n\
                   a=fmtp:111 minptime=10;useinbandfec=1; usedtx=1\r\n";
        assert!(wants_dtx(sdp, 111));
        assert!(!wants_dtx(sdp, 109));
        assert!(!wants_dtx("a=fmtp:111 minptime=10;usedtx=0\r\n", 111));
        assert!(!wants_dtx("a=fmtp:111 minptime=10;useinbandfec=1\r\n", 111));
        assert!(!wants_dtx("garbage", 111));
    }

    #[test]
    fn sets_usedtx_on_the_opus_line_and_keeps_the_rest() {
        let offer = "v=0\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=fmtp:63 111/111\r\n";
        let on = set_usedtx(offer, 111, true);
        assert_eq!(
            on,
            "v=0\r\na=fmtp:111 minptime=10;useinbandfec=1;usedtx=1\r\na=fmtp:63 111/111\r\n"
        );
        assert!(wants_dtx(&on, 111));
        let off = set_usedtx(&on, 111, false);
        assert_eq!(off, offer);
        assert_eq!(set_usedtx(&on, 111, true), on);
        // No line for the payload type: unchanged.
        assert_eq!(set_usedtx(offer, 96, true), offer);
        assert_eq!(set_usedtx("", 111, true), "");
    }
}
