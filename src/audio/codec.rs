//! Opus at 48 kHz mono, one 20 ms frame per packet (the WebRTC audio profile).

use super::level::is_digital_silence;
use crate::{WIRE_FRAME, WIRE_RATE};

/// Largest Opus packet we produce; RFC 6716 caps a frame at 1275 bytes.
const MAX_PACKET: usize = 1500;
/// Longest frame a peer may send.
const MAX_DECODED_MS: u32 = 120;

/// An Opus encoder or decoder failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    #[error("expected a {expected}-sample frame, got {got}")]
    FrameSize { expected: usize, got: usize },
}

/// Opus complexity by default: 0-10. 10 (libopus' own default) costs
/// 265 µs a frame on this machine, over half of an echo server's CPU; 3
/// costs 40 µs and its echo correlation is as high (docs/BENCHMARKS.md).
pub const DEFAULT_COMPLEXITY: i32 = 3;

/// Encodes 20 ms mono frames at 48 kHz.
pub struct OpusEncoder {
    inner: opus::Encoder,
    out: Vec<u8>,
    /// The packet the last frame of digital silence encoded to.
    last_silence: Option<Vec<u8>>,
    /// The encoder gave that packet twice in a row: it has settled (the
    /// tail of the sound before has decayed) and it is sent as it is.
    settled: bool,
}

impl OpusEncoder {
    /// An encoder at `bitrate` bits per second and [`DEFAULT_COMPLEXITY`].
    /// `Application::Audio` keeps the waveform close to the input, which the
    /// echo test measures; the band stops at 12 kHz (super-wideband), above
    /// anything we send (16 kHz pipeline audio, 22 kHz speech synthesis).
    pub fn new(bitrate: i32) -> Result<Self, CodecError> {
        let mut inner =
            opus::Encoder::new(WIRE_RATE, opus::Channels::Mono, opus::Application::Audio)?;
        inner.set_bitrate(opus::Bitrate::Bits(bitrate))?;
        inner.set_inband_fec(true)?;
        inner.set_complexity(DEFAULT_COMPLEXITY)?;
        inner.set_max_bandwidth(opus::Bandwidth::Superwideband)?;
        Ok(Self {
            inner,
            out: vec![0; MAX_PACKET],
            last_silence: None,
            settled: false,
        })
    }

    /// Set the complexity, 0 (cheapest) to 10.
    pub fn set_complexity(&mut self, complexity: i32) -> Result<(), CodecError> {
        self.inner.set_complexity(complexity)?;
        Ok(())
    }

    /// The last frame was digital silence and encoded to the packet the
    /// encoder keeps sending for it.
    pub fn settled(&self) -> bool {
        self.settled
    }

    /// Encode one frame of [`WIRE_FRAME`] samples.
    ///
    /// A session sends silence most of the time, and encoding it costs as
    /// much as speech: once the encoder has settled on a packet for digital
    /// silence, that packet is sent again without encoding.
    pub fn encode(&mut self, frame: &[f32]) -> Result<Vec<u8>, CodecError> {
        if frame.len() != WIRE_FRAME {
            return Err(CodecError::FrameSize {
                expected: WIRE_FRAME,
                got: frame.len(),
            });
        }
        let silent = frame.iter().all(|&x| x == 0.0);
        if !silent {
            self.settled = false;
            self.last_silence = None;
        } else if self.settled
            && let Some(packet) = &self.last_silence
        {
            return Ok(packet.clone());
        }
        let n = self.inner.encode_float(frame, &mut self.out)?;
        let packet = self.out[..n].to_vec();
        if silent {
            self.settled = self.last_silence.as_ref() == Some(&packet);
            self.last_silence = Some(packet.clone());
        }
        Ok(packet)
    }
}

/// Joins consecutive 20 ms packets of one encoder into one packet of
/// several frames (RFC 6716 §3.2): one RTP packet, one encryption and one
/// system call instead of several, which is most of what a packet costs
/// the media path.
pub struct PacketJoiner {
    inner: opus::Repacketizer,
    out: Vec<u8>,
}

impl PacketJoiner {
    pub fn new() -> Result<Self, CodecError> {
        Ok(Self {
            inner: opus::Repacketizer::new()?,
            out: vec![0; MAX_PACKET * 3],
        })
    }

    /// The packets as one, or `None` when they cannot share one (the
    /// encoder changed mode or band between them, or they would last over
    /// 120 ms): send them one by one.
    pub fn join(&mut self, packets: &[&[u8]]) -> Option<Vec<u8>> {
        let n = self.inner.combine(packets, &mut self.out).ok()?;
        Some(self.out[..n].to_vec())
    }
}

/// Decodes Opus packets (any frame size up to 120 ms) to mono at one of
/// Opus' rates (8, 12, 16, 24 or 48 kHz). libopus decodes at 16 kHz
/// natively: the speech pipeline's rate costs no resampling.
pub struct OpusDecoder {
    inner: opus::Decoder,
    buf: Vec<f32>,
    /// Samples in 20 ms at the output rate.
    frame: usize,
    /// The last packet, if it decoded to digital silence: the same packet again
    /// is silence again, without decoding (a peer's encoder repeats one
    /// packet for as long as its input is silent).
    silence: Vec<u8>,
}

impl OpusDecoder {
    /// A decoder to `rate` Hz.
    pub fn new(rate: u32) -> Result<Self, CodecError> {
        let ms = |ms: u32| (rate / 1000 * ms) as usize;
        Ok(Self {
            inner: opus::Decoder::new(rate, opus::Channels::Mono)?,
            buf: vec![0.0; ms(MAX_DECODED_MS)],
            frame: ms(crate::FRAME_MS),
            silence: Vec::new(),
        })
    }

    /// Samples in one 20 ms frame at this decoder's rate.
    pub fn frame_len(&self) -> usize {
        self.frame
    }

    /// Decode one packet. A corrupt packet is an error, never a panic.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<f32>, CodecError> {
        if packet.is_empty() {
            return self.conceal();
        }
        if packet == self.silence.as_slice() {
            return Ok(vec![0.0; self.frame]);
        }
        let n = self.inner.decode_float(packet, &mut self.buf, false)?;
        let pcm = self.buf[..n].to_vec();
        self.silence.clear();
        if n == self.frame && is_digital_silence(&pcm) {
            self.silence.extend_from_slice(packet);
        }
        Ok(pcm)
    }

    /// Packet-loss concealment for one missing 20 ms frame.
    pub fn conceal(&mut self) -> Result<Vec<f32>, CodecError> {
        let n = self
            .inner
            .decode_float(&[], &mut self.buf[..self.frame], false)?;
        Ok(self.buf[..n].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PIPELINE_FRAME, PIPELINE_RATE};

    fn tone(f: usize) -> Vec<f32> {
        (0..WIRE_FRAME)
            .map(|i| {
                let t = (f * WIRE_FRAME + i) as f32 / WIRE_RATE as f32;
                0.3 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
            })
            .collect()
    }

    #[test]
    fn round_trip_keeps_a_tone_at_48_and_16_khz() {
        for (rate, frame) in [(WIRE_RATE, WIRE_FRAME), (PIPELINE_RATE, PIPELINE_FRAME)] {
            let mut enc = OpusEncoder::new(48_000).unwrap();
            let mut dec = OpusDecoder::new(rate).unwrap();
            assert_eq!(dec.frame_len(), frame);
            let mut energy_in = 0.0f32;
            let mut energy_out = 0.0f32;
            for f in 0..50 {
                let frame_in = tone(f);
                let pkt = enc.encode(&frame_in).unwrap();
                assert!(!pkt.is_empty() && pkt.len() < MAX_PACKET);
                let out = dec.decode(&pkt).unwrap();
                assert_eq!(out.len(), frame);
                if f > 5 {
                    // Mean power, so the two rates compare.
                    energy_in += frame_in.iter().map(|x| x * x).sum::<f32>() / WIRE_FRAME as f32;
                    energy_out += out.iter().map(|x| x * x).sum::<f32>() / frame as f32;
                }
            }
            let ratio = energy_out / energy_in;
            assert!(
                (0.7..1.3).contains(&ratio),
                "{rate} Hz: energy ratio {ratio}"
            );
        }
    }

    #[test]
    fn settled_silence_is_reused_and_decodes_to_silence() {
        let mut enc = OpusEncoder::new(48_000).unwrap();
        let mut plain = OpusEncoder::new(48_000).unwrap();
        let mut dec = OpusDecoder::new(WIRE_RATE).unwrap();
        let zero = vec![0.0f32; WIRE_FRAME];
        for round in 0..2 {
            for f in 0..20 {
                enc.encode(&tone(f)).unwrap();
                plain.encode(&tone(f)).unwrap();
            }
            let packets: Vec<Vec<u8>> = (0..60).map(|_| enc.encode(&zero).unwrap()).collect();
            // The decaying tail of the tone, then one packet again and again.
            let settle = packets.windows(2).position(|w| w[0] == w[1]).unwrap();
            assert!(settle > 0, "round {round}: the tone's tail was not encoded");
            assert!(enc.settled, "round {round}");
            let settled = &packets[settle];
            assert!(packets[settle..].iter().all(|p| p == settled));
            // It is what the encoder itself sends for silence, frame after frame.
            let fresh: Vec<Vec<u8>> = (0..60).map(|_| plain.inner_encode(&zero)).collect();
            assert!(
                fresh[settle..].iter().all(|p| p == settled),
                "round {round}"
            );
            let mut peak = 0.0f32;
            for p in &packets[settle..] {
                let out = dec.decode(p).unwrap();
                peak = out.iter().fold(peak, |m, x| m.max(x.abs()));
            }
            assert!(peak < 1e-3, "settled silence decodes to {peak}");
            // Digital silence, recognised by its packet and not decoded again.
            assert_eq!(dec.silence, *settled, "round {round}");
            assert!(dec.decode(settled).unwrap().iter().all(|&x| x == 0.0));
            let mut dec16 = OpusDecoder::new(PIPELINE_RATE).unwrap();
            for p in &packets[settle..] {
                dec16.decode(p).unwrap();
            }
            assert_eq!(dec16.silence, *settled, "round {round}, 16 kHz");
        }
    }

    impl OpusEncoder {
        /// Encode without the silence shortcut.
        fn inner_encode(&mut self, frame: &[f32]) -> Vec<u8> {
            let n = self.inner.encode_float(frame, &mut self.out).unwrap();
            self.out[..n].to_vec()
        }
    }

    #[test]
    fn joined_packets_decode_as_the_frames_did() {
        let mut enc = OpusEncoder::new(48_000).unwrap();
        let mut joiner = PacketJoiner::new().unwrap();
        let packets: Vec<Vec<u8>> = (0..6).map(|f| enc.encode(&tone(f)).unwrap()).collect();
        let mut one_by_one = OpusDecoder::new(WIRE_RATE).unwrap();
        let mut joined = OpusDecoder::new(WIRE_RATE).unwrap();
        for group in [&packets[..2], &packets[2..5], &packets[5..]] {
            let parts: Vec<&[u8]> = group.iter().map(Vec::as_slice).collect();
            let packet = joiner.join(&parts).unwrap();
            assert_eq!(opus::packet::get_nb_frames(&packet).unwrap(), group.len());
            let expected: Vec<f32> = parts
                .iter()
                .flat_map(|p| one_by_one.decode(p).unwrap())
                .collect();
            assert_eq!(expected.len(), WIRE_FRAME * group.len());
            // The same frames, so the same samples, bit for bit.
            assert_eq!(joined.decode(&packet).unwrap(), expected);
        }
        // Frames of different bands cannot share a packet.
        let mut narrow = OpusEncoder::new(48_000).unwrap();
        narrow
            .inner
            .set_max_bandwidth(opus::Bandwidth::Narrowband)
            .unwrap();
        let other = narrow.encode(&tone(0)).unwrap();
        assert_eq!(joiner.join(&[&packets[0], &other]), None);
        assert_eq!(joiner.join(&[b"\xff\xff".as_slice()]), None);
    }

    #[test]
    fn garbage_and_wrong_sizes_are_errors_not_panics() {
        let mut enc = OpusEncoder::new(32_000).unwrap();
        assert!(enc.encode(&[0.0; 100]).is_err());
        assert!(enc.set_complexity(11).is_err());
        for rate in [WIRE_RATE, PIPELINE_RATE] {
            let mut dec = OpusDecoder::new(rate).unwrap();
            for garbage in [&[0xffu8; 3][..], &[0x0b, 0xff, 0xff, 0xff, 0xff][..]] {
                // Either an error or some decoded samples; never a panic.
                let _ = dec.decode(garbage);
            }
            assert_eq!(dec.decode(&[]).unwrap().len(), dec.frame_len());
        }
        assert!(OpusDecoder::new(44_100).is_err());
    }
}
