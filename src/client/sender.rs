//! A client's audio going out: one 20 ms frame encoded and sent, by the
//! paced [`super::Client::send_pcm`] or by an [`AudioSender`] on its owner's clock.

use std::sync::Arc;
use std::time::Instant;

use super::{ClientError, Shared};
use crate::WIRE_FRAME;
use crate::audio::DtxEncoder;
use crate::rtc::Peer;

/// Sends 20 ms frames on a [`super::Client`]'s track; see
/// [`super::Client::audio_sender`].
pub struct AudioSender {
    pub(super) peer: Arc<Peer>,
    pub(super) encoder: DtxEncoder,
    pub(super) shared: Arc<Shared>,
}

impl AudioSender {
    /// Encode and send one frame ([`WIRE_FRAME`] samples at 48 kHz; shorter is
    /// padded with silence, longer is cut).
    pub async fn send_frame(&mut self, frame: &[f32]) -> Result<(), ClientError> {
        if let Some(why) = self.shared.ended() {
            return Err(ClientError::Ended(why));
        }
        send_frame(&mut self.encoder, &self.peer, frame).await?;
        Ok(())
    }
}

/// Encode one frame (padded with silence to [`WIRE_FRAME`], or cut) and
/// send it unless DTX holds it back. Returns when it was encoded.
pub(super) async fn send_frame(
    encoder: &mut DtxEncoder,
    peer: &Peer,
    frame: &[f32],
) -> Result<Instant, ClientError> {
    let mut pcm = frame[..frame.len().min(WIRE_FRAME)].to_vec();
    pcm.resize(WIRE_FRAME, 0.0);
    let out = encoder
        .encode(&pcm)
        .map_err(|e| ClientError::Audio(e.to_string()))?;
    let encoded = Instant::now();
    if let Some(out) = out {
        peer.send_opus(out.packet, out.paused, 1).await?;
    }
    Ok(encoded)
}
