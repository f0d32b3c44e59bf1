//! A virtual user's microphone: its own task that never stops, sending one
//! 20 ms frame on every pacer deadline, from the current utterance or
//! silence (as a browser does between utterances), and saying when the
//! utterance's last voiced sample went out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::audio::{Pacer, last_voiced};
use crate::client::AudioSender;
use crate::{FRAME_MS, WIRE_FRAME};

/// One frame's time.
const TICK: Duration = Duration::from_millis(FRAME_MS as u64);

/// Messages from the microphone task.
#[derive(Debug)]
pub(super) enum MicEvent {
    /// The frame holding the utterance's last voiced sample went out.
    LastVoiced(Instant),
    /// The whole utterance went out.
    Finished,
    /// Sending failed; the microphone stopped.
    Failed(String),
}

/// The microphone: one frame every 20 ms, from the current utterance or silence.
pub(super) async fn microphone(
    mut sender: AudioSender,
    mut clips: mpsc::Receiver<Arc<Vec<f32>>>,
    events: mpsc::UnboundedSender<MicEvent>,
    cancel: CancellationToken,
) {
    let silence = vec![0.0f32; WIRE_FRAME];
    let mut pacer = Pacer::new(Instant::now(), TICK);
    // (clip, next sample, index of the last voiced sample)
    let mut current: Option<(Arc<Vec<f32>>, usize, usize)> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(pacer.next_deadline())) => {}
        }
        pacer.on_wake(Instant::now());
        if current.is_none()
            && let Ok(clip) = clips.try_recv()
        {
            let last = last_voiced(&clip).unwrap_or(0);
            current = Some((clip, 0, last));
        }
        let (frame, span) = match &current {
            Some((clip, pos, _)) => {
                let end = (*pos + WIRE_FRAME).min(clip.len());
                (&clip[*pos..end], Some((*pos, end)))
            }
            None => (&silence[..], None),
        };
        if let Err(e) = sender.send_frame(frame).await {
            let _ = events.send(MicEvent::Failed(e.to_string()));
            return;
        }
        let sent = Instant::now();
        if let (Some((start, end)), Some((clip, pos, last))) = (span, current.as_mut()) {
            if (start..end).contains(last) {
                let _ = events.send(MicEvent::LastVoiced(sent));
            }
            *pos = end;
            if *pos >= clip.len() {
                current = None;
                let _ = events.send(MicEvent::Finished);
            }
        }
    }
}
