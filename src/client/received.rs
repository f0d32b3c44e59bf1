//! What a client receives: the decoded frames, kept on the sender's
//! timeline.

use std::sync::Arc;
use std::time::Instant;

use super::Shared;
use crate::FRAME_MS;

/// One received 20 ms frame.
#[derive(Debug, Clone)]
pub struct ReceivedFrame {
    pub pcm: Vec<f32>,
    pub arrival: Instant,
    pub rtp_timestamp: u32,
    pub sequence: u16,
    /// The sender resumed after a DTX pause with this packet.
    pub marker: bool,
}

/// Longest DTX pause filled with silence in the received audio (a
/// sender's timestamp jump beyond it is not believed).
const MAX_DTX_FILL: u32 = 250;

/// Keep the received frames, with a DTX pause (a marked packet whose
/// timestamp jumped) filled with as many frames of silence as it lasted,
/// as a receiver's playout does: the received audio keeps the sender's
/// timeline. The fill frames carry the marked packet's numbers.
pub(super) async fn record_audio(mut audio: crate::rtc::RemoteAudio, shared: Arc<Shared>) {
    let mut last_ts: Option<u32> = None;
    while let Some(f) = audio.recv().await {
        let frame = |pcm| ReceivedFrame {
            pcm,
            arrival: f.arrival,
            rtp_timestamp: f.rtp_timestamp,
            sequence: f.sequence,
            marker: f.marker,
        };
        let paused = match last_ts {
            Some(prev) if f.marker => dtx_pause(prev, f.rtp_timestamp),
            _ => 0,
        };
        last_ts = Some(f.rtp_timestamp);
        if let Ok(mut r) = shared.received.lock() {
            for _ in 0..paused {
                r.push(frame(vec![0.0; f.pcm.len()]));
            }
            r.push(frame(f.pcm));
        }
    }
}

/// 20 ms frames a DTX pause held back between two packets' timestamps.
fn dtx_pause(prev: u32, ts: u32) -> u32 {
    let ticks = ts.wrapping_sub(prev);
    if ticks > u32::MAX / 2 {
        return 0; // backwards: reordered
    }
    let frames = ticks / (48 * FRAME_MS);
    frames.saturating_sub(1).min(MAX_DTX_FILL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_is_the_frames_between_two_timestamps() {
        assert_eq!(dtx_pause(1000, 1000 + 960), 0);
        assert_eq!(dtx_pause(u32::MAX - 100, 20 * 960 - 101), 19);
        // Backwards (reordered) or absurdly far: no fill, or a bounded one.
        assert_eq!(dtx_pause(5000, 4000), 0);
        assert_eq!(dtx_pause(0, 1 << 30), MAX_DTX_FILL);
    }
}
