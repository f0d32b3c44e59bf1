//! Opus at 48 kHz mono, one 20 ms frame per packet (the WebRTC audio profile).

use crate::{WIRE_FRAME, WIRE_RATE};

/// Largest Opus packet we produce; RFC 6716 caps a frame at 1275 bytes.
const MAX_PACKET: usize = 1500;
/// Longest frame a peer may send (120 ms at 48 kHz).
const MAX_DECODED: usize = 5760;

/// An Opus encoder or decoder failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    #[error("expected a {expected}-sample frame, got {got}")]
    FrameSize { expected: usize, got: usize },
}

/// Encodes 20 ms mono frames at 48 kHz.
pub struct OpusEncoder {
    inner: opus::Encoder,
    out: Vec<u8>,
}

impl OpusEncoder {
    /// An encoder at `bitrate` bits per second. `Application::Audio` keeps the
    /// waveform close to the input, which the echo test measures.
    pub fn new(bitrate: i32) -> Result<Self, CodecError> {
        let mut inner =
            opus::Encoder::new(WIRE_RATE, opus::Channels::Mono, opus::Application::Audio)?;
        inner.set_bitrate(opus::Bitrate::Bits(bitrate))?;
        inner.set_inband_fec(true)?;
        Ok(Self {
            inner,
            out: vec![0; MAX_PACKET],
        })
    }

    /// Encode one frame of [`WIRE_FRAME`] samples.
    pub fn encode(&mut self, frame: &[f32]) -> Result<Vec<u8>, CodecError> {
        if frame.len() != WIRE_FRAME {
            return Err(CodecError::FrameSize {
                expected: WIRE_FRAME,
                got: frame.len(),
            });
        }
        let n = self.inner.encode_float(frame, &mut self.out)?;
        Ok(self.out[..n].to_vec())
    }
}

/// Decodes Opus packets (any frame size up to 120 ms) to 48 kHz mono.
pub struct OpusDecoder {
    inner: opus::Decoder,
    buf: Vec<f32>,
}

impl OpusDecoder {
    pub fn new() -> Result<Self, CodecError> {
        Ok(Self {
            inner: opus::Decoder::new(WIRE_RATE, opus::Channels::Mono)?,
            buf: vec![0.0; MAX_DECODED],
        })
    }

    /// Decode one packet. A corrupt packet is an error, never a panic.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<f32>, CodecError> {
        if packet.is_empty() {
            return self.conceal(WIRE_FRAME);
        }
        let n = self.inner.decode_float(packet, &mut self.buf, false)?;
        Ok(self.buf[..n].to_vec())
    }

    /// Packet-loss concealment for `samples` missing samples (a multiple of 2.5 ms).
    pub fn conceal(&mut self, samples: usize) -> Result<Vec<f32>, CodecError> {
        let samples = samples.min(MAX_DECODED);
        let n = self
            .inner
            .decode_float(&[], &mut self.buf[..samples], false)?;
        Ok(self.buf[..n].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_a_tone() {
        let mut enc = OpusEncoder::new(48_000).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mut energy_in = 0.0f32;
        let mut energy_out = 0.0f32;
        for f in 0..50 {
            let frame: Vec<f32> = (0..WIRE_FRAME)
                .map(|i| {
                    let t = (f * WIRE_FRAME + i) as f32 / WIRE_RATE as f32;
                    0.3 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
                })
                .collect();
            let pkt = enc.encode(&frame).unwrap();
            assert!(!pkt.is_empty() && pkt.len() < MAX_PACKET);
            let out = dec.decode(&pkt).unwrap();
            assert_eq!(out.len(), WIRE_FRAME);
            if f > 5 {
                energy_in += frame.iter().map(|x| x * x).sum::<f32>();
                energy_out += out.iter().map(|x| x * x).sum::<f32>();
            }
        }
        let ratio = energy_out / energy_in;
        assert!((0.7..1.3).contains(&ratio), "energy ratio {ratio}");
    }

    #[test]
    fn garbage_and_wrong_sizes_are_errors_not_panics() {
        let mut enc = OpusEncoder::new(32_000).unwrap();
        assert!(enc.encode(&[0.0; 100]).is_err());
        let mut dec = OpusDecoder::new().unwrap();
        for garbage in [&[0xffu8; 3][..], &[0x0b, 0xff, 0xff, 0xff, 0xff][..]] {
            // Either an error or some decoded samples; never a panic.
            let _ = dec.decode(garbage);
        }
        assert_eq!(dec.decode(&[]).unwrap().len(), WIRE_FRAME);
    }
}
