//! Discontinuous transmission (DTX) for the Opus frames a peer sends.
//!
//! A voice session is silent most of the time, and every 20 ms packet costs
//! a wake-up, an encryption and a system call on both ends whatever it
//! carries. While the sound is settled digital silence (the encoder repeats
//! one packet), [`DtxEncoder`] holds the packets back and lets one through
//! every [`UPDATE_FRAMES`] frames (400 ms, the interval of libopus' own DTX),
//! which keeps the stream visibly alive for the receiver. The frames held
//! back travel with the next packet as `paused`, so the RTP timestamp moves
//! on over the pause without a sequence gap, which is what receivers take as
//! DTX rather than loss (RFC 7587 §3.1.3).

use super::codec::{CodecError, OpusEncoder};
use crate::WIRE_FRAME;

/// One packet goes out in every this many frames of settled silence.
pub const UPDATE_FRAMES: u32 = 20;

/// A packet to send, after `paused` 20 ms frames that were held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub packet: Vec<u8>,
    pub paused: u32,
}

/// An [`OpusEncoder`] that holds back settled silence when DTX is on.
pub struct DtxEncoder {
    encoder: OpusEncoder,
    dtx: bool,
    paused: u32,
}

impl DtxEncoder {
    pub fn new(encoder: OpusEncoder, dtx: bool) -> Self {
        Self {
            encoder,
            dtx,
            paused: 0,
        }
    }

    /// While the sound is settled silence: how many more silent frames
    /// would be held back before the next update goes out. A sender can
    /// sleep through them and [`DtxEncoder::held`] them.
    pub fn idle_frames(&self) -> Option<u32> {
        (self.dtx && self.encoder.settled())
            .then(|| (UPDATE_FRAMES - 1).saturating_sub(self.paused))
    }

    /// `n` silent frames were held back without being given to
    /// [`DtxEncoder::encode`] (see [`DtxEncoder::idle_frames`]).
    pub fn held(&mut self, n: u32) {
        self.paused += n;
    }

    /// Encode one frame of [`WIRE_FRAME`] samples: `None` when it is held back.
    pub fn encode(&mut self, frame: &[f32]) -> Result<Option<Outgoing>, CodecError> {
        let hold = self.dtx
            && self.encoder.settled()
            && self.paused + 1 < UPDATE_FRAMES
            && frame.len() == WIRE_FRAME
            && frame.iter().all(|&x| x == 0.0);
        if hold {
            self.paused += 1;
            return Ok(None);
        }
        let packet = self.encoder.encode(frame)?;
        Ok(Some(Outgoing {
            packet,
            paused: std::mem::take(&mut self.paused),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(f: usize) -> Vec<f32> {
        (0..WIRE_FRAME)
            .map(|i| {
                let t = (f * WIRE_FRAME + i) as f32 / crate::WIRE_RATE as f32;
                0.3 * (2.0 * std::f32::consts::PI * 300.0 * t).sin()
            })
            .collect()
    }

    /// Feed `frames` and return, per frame, whether a packet went out and
    /// the pause it carried.
    fn run(enc: &mut DtxEncoder, frames: &[Vec<f32>]) -> Vec<Option<u32>> {
        frames
            .iter()
            .map(|f| enc.encode(f).unwrap().map(|o| o.paused))
            .collect()
    }

    #[test]
    fn settled_silence_sends_one_packet_in_twenty_and_sound_resumes_at_once() {
        let mut enc = DtxEncoder::new(OpusEncoder::new(48_000).unwrap(), true);
        let zero = vec![0.0f32; WIRE_FRAME];
        let speech: Vec<Vec<f32>> = (0..25).map(tone).collect();
        assert!(run(&mut enc, &speech).iter().all(|s| *s == Some(0)));
        // The tone's tail is sent until the encoder settles (about 600 ms
        // after a tone; the codec's filters decay), then one
        // packet in every UPDATE_FRAMES, carrying the frames held before it.
        let quiet = run(&mut enc, &vec![zero.clone(); 200]);
        let first_held = quiet.iter().position(Option::is_none).unwrap();
        assert!(
            (1..50).contains(&first_held),
            "settled after {first_held} frames"
        );
        let rest = &quiet[first_held..];
        let sent: Vec<u32> = rest.iter().flatten().copied().collect();
        assert!(sent.len() >= 8, "{} packets in 180 frames", sent.len());
        assert!(sent.iter().all(|&p| p == UPDATE_FRAMES - 1), "{sent:?}");
        // Every frame is accounted for: sent, or held and carried.
        let held = rest.iter().filter(|s| s.is_none()).count() as u32;
        let carried: u32 = sent.iter().sum();
        assert!(held >= carried && held - carried < UPDATE_FRAMES);
        // Sound goes out on its first frame, carrying the pause so far.
        let pending = held - carried;
        assert_eq!(enc.encode(&tone(0)).unwrap().unwrap().paused, pending);
        assert_eq!(enc.encode(&tone(1)).unwrap().unwrap().paused, 0);
    }

    #[test]
    fn without_dtx_every_frame_is_sent() {
        let mut enc = DtxEncoder::new(OpusEncoder::new(48_000).unwrap(), false);
        let zero = vec![0.0f32; WIRE_FRAME];
        assert!(
            run(&mut enc, &vec![zero.clone(); 100])
                .iter()
                .all(|s| *s == Some(0))
        );
        assert_eq!(enc.idle_frames(), None);
        let mut enc = DtxEncoder::new(OpusEncoder::new(48_000).unwrap(), true);
        assert!(
            run(&mut enc, &vec![zero.clone(); 40])
                .iter()
                .any(Option::is_none)
        );
        // Idle: the frames left before the next update, which a sender may
        // sleep through; the update then carries them.
        let left = enc.idle_frames().unwrap();
        assert!(left < UPDATE_FRAMES);
        enc.held(left);
        assert_eq!(enc.idle_frames(), Some(0));
        let update = enc.encode(&zero).unwrap().unwrap();
        assert_eq!(update.paused, UPDATE_FRAMES - 1);
        assert_eq!(enc.idle_frames(), Some(UPDATE_FRAMES - 1));
        // A wrong-sized frame is the encoder's error, not held back.
        assert!(enc.encode(&[0.0; 10]).is_err());
    }
}
