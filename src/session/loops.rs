//! The session's tasks: inbound audio to the pipeline, the echo pipeline,
//! events to the data channel and the bus, and the paced outbound audio
//! (see the module above for how they fit together).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{EventOut, INBOUND_FILL_MAX, INBOUND_GRACE, SessionContext};
use crate::audio::{
    DtxEncoder, OpusEncoder, Outgoing, Pacer, PacketJoiner, is_digital_silence, resample_clip,
};
use crate::events::{Event, State};
use crate::hub::SessionEvents;
use crate::metrics::Metrics;
use crate::pipeline::playout::OutQueue;
use crate::pipeline::{EchoEvent, EchoGate, next_input};
use crate::prompt::{Control, DropReason, PromptOutcome};
use crate::rtc::{GapFill, Peer, RemoteAudio};
use crate::{PIPELINE_FRAME, PIPELINE_RATE, WIRE_FRAME, WIRE_RATE};

/// Decoded 16 kHz frames (the peer decodes at the pipeline's rate) to the
/// pipeline, with the gaps of a stalled stream filled with silence.
pub(super) async fn inbound_loop(
    mut audio: RemoteAudio,
    pcm_tx: mpsc::Sender<Vec<f32>>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let silence = vec![0.0f32; PIPELINE_FRAME];
    let mut gap = GapFill::new(
        Duration::from_millis(u64::from(crate::FRAME_MS)),
        INBOUND_GRACE,
        INBOUND_FILL_MAX,
    );
    loop {
        let deadline = gap.next_deadline();
        let (mut pcm, frames) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            f = audio.recv() => match f {
                Some(f) => {
                    gap.on_frame(Instant::now(), is_digital_silence(&f.pcm));
                    Metrics::inc(&metrics.audio_frames_in);
                    (f.pcm, 1)
                }
                None => break,
            },
            _ = sleep_until_opt(deadline) => (silence.clone(), gap.fill(Instant::now())),
        };
        for i in 0..frames {
            let chunk = if i + 1 == frames {
                std::mem::take(&mut pcm)
            } else {
                pcm.clone()
            };
            if !chunk.is_empty() && pcm_tx.try_send(chunk).is_err() {
                Metrics::inc(&metrics.inbound_frames_dropped);
            }
        }
    }
}

/// Sleep until `at`, or forever without one.
pub(super) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

pub(super) async fn forward_events(
    mut rx: mpsc::Receiver<Event>,
    out: Arc<EventOut>,
    bus_events: Arc<SessionEvents>,
) {
    while let Some(ev) = rx.recv().await {
        bus_events.mirror(&ev);
        out.send(&ev).await;
    }
}

/// The echo pipeline: play each utterance back once the user stops.
pub(super) async fn echo_loop(
    mut input: mpsc::Receiver<Vec<f32>>,
    mut control: mpsc::Receiver<Control>,
    queue: Arc<Mutex<OutQueue>>,
    events: mpsc::Sender<Event>,
    ctx: SessionContext,
    cancel: CancellationToken,
) {
    let mut gate = EchoGate::new(&ctx.config.echo);
    let mut pending: Vec<f32> = Vec::with_capacity(PIPELINE_FRAME * 2);
    loop {
        let pcm = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(c) = control.recv() => {
                match c {
                    // Echo has no voice of its own: prompts cannot be spoken here.
                    Control::Prompt(d) => {
                        let _ = d.done.send(PromptOutcome::Dropped(DropReason::NoSpeech));
                    }
                    Control::Draining { deadline_ms } => {
                        let _ = events.send(Event::Draining { deadline_ms }).await;
                    }
                    Control::Text(_) => {}
                }
                continue;
            }
            f = next_input(&mut input, gate.speaking()) => match f {
                Some(p) => p,
                None => break,
            },
        };
        pending.extend_from_slice(&pcm);
        while pending.len() >= PIPELINE_FRAME {
            let f: Vec<f32> = pending.drain(..PIPELINE_FRAME).collect();
            match gate.push(&f) {
                Some(EchoEvent::SpeechStarted) => {
                    let _ = events.try_send(Event::state(State::UserSpeaking));
                }
                Some(EchoEvent::Utterance(u)) => {
                    Metrics::inc(&ctx.metrics.utterances);
                    let ms = u.len() as u64 * 1000 / u64::from(PIPELINE_RATE);
                    tracing::info!(ms, "utterance; echoing it back");
                    match resample_clip(&u, PIPELINE_RATE, WIRE_RATE) {
                        Ok(pcm48) => {
                            if let Ok(mut q) = queue.lock() {
                                q.push(&pcm48);
                            }
                            let _ = events.try_send(Event::State {
                                state: State::Speaking,
                                utterance_ms: Some(ms),
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot resample utterance"),
                    }
                }
                None => {}
            }
        }
    }
}

/// The paced sender. `ready` is told when audio is queued (see
/// [`OutQueue::with_ready`]).
pub(super) async fn outbound_loop(
    peer: Arc<Peer>,
    queue: Arc<Mutex<OutQueue>>,
    ready: Arc<Notify>,
    events: mpsc::Sender<Event>,
    connected: Arc<Notify>,
    ctx: SessionContext,
    cancel: CancellationToken,
) {
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = connected.notified() => {}
    }
    let audio = &ctx.config.audio;
    let encoder = OpusEncoder::new(audio.opus_bitrate).and_then(|mut e| {
        e.set_complexity(audio.opus_complexity)?;
        Ok(e)
    });
    let mut encoder = match encoder {
        Ok(e) => DtxEncoder::new(e, ctx.config.rtc.dtx),
        Err(e) => {
            tracing::error!(error = %e, "cannot create Opus encoder; session has no output");
            return;
        }
    };
    let mut joiner = match PacketJoiner::new() {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, "cannot create an Opus repacketizer; session has no output");
            return;
        }
    };
    let max_frames = (audio.packet_ms / crate::FRAME_MS).max(1) as usize;
    let silence = vec![0.0f32; WIRE_FRAME];
    let period = Duration::from_millis(u64::from(crate::FRAME_MS));
    let mut pacer = Pacer::new(Instant::now(), period);
    let mut send_errors = 0u64;
    let mut playing = false;
    loop {
        // Settled silence under DTX and nothing queued: sleep until the next
        // update is due or audio comes, rather than waking every 20 ms to
        // hold a frame back (most of a listening session's wake-ups).
        if let Some(idle) = encoder.idle_frames().filter(|&n| n > 0)
            && !playing
            && queue.lock().is_ok_and(|q| q.is_empty())
        {
            let until = pacer.deadline_after(u64::from(idle));
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ready.notified() => {}
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(until)) => {}
            }
            let passed = pacer.pass(Instant::now(), u64::from(idle));
            encoder.held(passed as u32);
            ctx.metrics
                .audio_frames_held
                .fetch_add(passed, Ordering::Relaxed);
        }
        let deadline = tokio::time::Instant::from_std(pacer.next_deadline());
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => {}
        }
        let tick = pacer.on_wake(Instant::now());
        if tick.late {
            Metrics::inc(&ctx.metrics.late_frames_out);
        }
        if tick.skipped > 0 {
            ctx.metrics
                .skipped_frames_out
                .fetch_add(tick.skipped, Ordering::Relaxed);
        }
        // Queued audio is there already: the frames after this one go in
        // the same packet, up to `audio.packet_ms`.
        let (frames, drained) = queue
            .lock()
            .map(|mut q| {
                let mut frames: Vec<Vec<f32>> = Vec::with_capacity(max_frames);
                while frames.len() < max_frames
                    && let Some(f) = q.pop_frame()
                {
                    frames.push(f);
                }
                (frames, q.is_empty())
            })
            .unwrap_or_else(|_| (Vec::new(), true));
        let active = !frames.is_empty();
        pacer.sent_ahead(frames.len().saturating_sub(1) as u64);
        let mut parts = Vec::with_capacity(max_frames);
        for pcm in frames
            .iter()
            .map(Vec::as_slice)
            .chain((!active).then_some(&silence[..]))
        {
            match encoder.encode(pcm) {
                Ok(Some(out)) => parts.push(out),
                Ok(None) => Metrics::inc(&ctx.metrics.audio_frames_held),
                Err(e) => tracing::warn!(error = %e, "Opus encode failed"),
            }
        }
        if std::mem::replace(&mut playing, active) && !active && drained {
            // The last queued audio has gone out (not merely held while the
            // user speaks): the assistant is listening again.
            let _ = events.try_send(Event::state(State::Listening));
        }
        for (packet, paused, frames) in packets(&mut joiner, parts) {
            match peer.send_opus(packet, paused, frames).await {
                Ok(()) => {
                    ctx.metrics
                        .audio_frames_out
                        .fetch_add(u64::from(frames), Ordering::Relaxed);
                }
                Err(e) => {
                    send_errors += 1;
                    if send_errors == 1 || send_errors.is_power_of_two() {
                        tracing::debug!(error = %e, send_errors, "sending audio failed");
                    }
                }
            }
        }
    }
}

/// The RTP packets for consecutive encoded frames, as (payload, frames
/// held back before it, frames in it). Frames join into one packet up to
/// the next one DTX held frames back before; frames that cannot join go
/// one per packet.
fn packets(joiner: &mut PacketJoiner, parts: Vec<Outgoing>) -> Vec<(Vec<u8>, u32, u32)> {
    let mut out = Vec::with_capacity(1);
    let mut rest = parts.as_slice();
    while let Some(first) = rest.first() {
        let n = 1 + rest[1..].iter().take_while(|p| p.paused == 0).count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        let all: Vec<&[u8]> = group.iter().map(|p| p.packet.as_slice()).collect();
        match (n > 1).then(|| joiner.join(&all)).flatten() {
            Some(joined) => out.push((joined, first.paused, n as u32)),
            None => out.extend(group.iter().map(|p| (p.packet.clone(), p.paused, 1))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_join_up_to_a_pause_and_go_alone_when_they_cannot() {
        let mut enc = OpusEncoder::new(48_000).unwrap();
        let tone: Vec<f32> = (0..WIRE_FRAME)
            .map(|i| 0.3 * (i as f32 * 0.05).sin())
            .collect();
        let part = |enc: &mut OpusEncoder, paused| Outgoing {
            packet: enc.encode(&tone).unwrap(),
            paused,
        };
        let mut joiner = PacketJoiner::new().unwrap();
        let parts = vec![
            part(&mut enc, 1),
            part(&mut enc, 0),
            part(&mut enc, 3),
            part(&mut enc, 0),
            part(&mut enc, 0),
        ];
        let got: Vec<(u32, u32)> = packets(&mut joiner, parts)
            .iter()
            .map(|(_, paused, frames)| (*paused, *frames))
            .collect();
        assert_eq!(got, [(1, 2), (3, 3)]);
        // Packets that cannot share one (SILK narrowband and CELT
        // fullband: the encoder changed mode) go one by one, as they were.
        let toc = |b: u8| Outgoing {
            packet: vec![b, 1],
            paused: 0,
        };
        let got = packets(&mut joiner, vec![toc(0x08), toc(0xf8)]);
        assert_eq!(got, [(vec![0x08, 1], 0, 1), (vec![0xf8, 1], 0, 1)]);
        assert!(packets(&mut joiner, Vec::new()).is_empty());
    }
}
