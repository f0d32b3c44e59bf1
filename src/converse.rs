//! `voxloop converse IN.wav`: the speech pipeline on a file, in real time,
//! without a network: the same [`speech::run`] the live sessions use, fed
//! from the file and drained by a paced player.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::audio::{VOICED_THRESHOLD, decode_file_mono};
use crate::config::Config;
use crate::events::{Event, Source, Timings};
use crate::metrics::Metrics;
use crate::pipeline::playout::OutQueue;
use crate::pipeline::speech::{self, SpeechDeps};
use crate::{FRAME_MS, PIPELINE_FRAME, PIPELINE_RATE};

#[derive(Debug, thiserror::Error)]
pub enum ConverseError {
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioFileError),
    #[error(transparent)]
    Speech(#[from] crate::engines::LoadError),
}

/// What one file's turn produced.
#[derive(Debug, Clone, Default)]
pub struct ConverseReport {
    pub transcript: Option<String>,
    pub reply: Option<String>,
    /// Knowledge-base chunks the reply was grounded on.
    pub sources: Vec<Source>,
    pub timings: Option<Timings>,
    /// Last voiced input sample fed → first voiced reply sample played.
    pub voice_to_voice: Option<Duration>,
    /// The reply audio at 48 kHz.
    pub reply_audio: Vec<f32>,
}

/// Load the engines once for several files.
pub async fn load(config: &Config) -> Result<SpeechDeps, ConverseError> {
    let deps = SpeechDeps::load(Arc::new(config.clone()), Arc::new(Metrics::default())).await?;
    // No shared bucket here: the folder's change feed has no follower.
    drop(deps.kb.as_ref().and_then(|kb| kb.take_feed()));
    Ok(deps)
}

/// Say `path` to a fresh conversation and wait for the reply to finish playing.
pub async fn converse_file(
    deps: &SpeechDeps,
    path: &Path,
    timeout: Duration,
) -> Result<ConverseReport, ConverseError> {
    let input = decode_file_mono(path, PIPELINE_RATE)?;
    let (tx, rx) = mpsc::channel::<Vec<f32>>(256);
    let (ev_tx, mut ev_rx) = mpsc::channel::<Event>(1024);
    let out = Arc::new(Mutex::new(OutQueue::default()));
    let cancel = CancellationToken::new();
    // No prompts or typed messages here: the control channel stays empty.
    let (_control, control_rx) = mpsc::channel(1);
    let task = tokio::spawn(speech::run(
        rx,
        control_rx,
        out.clone(),
        ev_tx,
        deps.clone(),
        cancel.clone(),
    ));

    let last_voiced = crate::audio::last_voiced(&input);
    let mut report = ConverseReport::default();
    let frame = Duration::from_millis(u64::from(FRAME_MS));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(frame);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut fed = 0usize;
    let mut last_voiced_at: Option<Instant> = None;
    let mut first_voiced_out: Option<Instant> = None;
    let mut reply_done = false;
    let mut quiet_after_reply = 0u32;
    while started.elapsed() < timeout {
        ticker.tick().await;
        // Feed one 20 ms frame of the file, then silence.
        let chunk: Vec<f32> = if fed < input.len() {
            let end = (fed + PIPELINE_FRAME).min(input.len());
            let c = input[fed..end].to_vec();
            if last_voiced.is_some_and(|lv| lv >= fed && lv < end) {
                last_voiced_at = Some(Instant::now());
            }
            fed = end;
            c
        } else {
            vec![0.0; PIPELINE_FRAME]
        };
        if tx.send(chunk).await.is_err() {
            break;
        }
        // Play one 20 ms frame of output.
        if let Some(f) = out.lock().ok().and_then(|mut q| q.pop_frame()) {
            if first_voiced_out.is_none() && f.iter().any(|x| x.abs() > VOICED_THRESHOLD) {
                first_voiced_out = Some(Instant::now());
            }
            report.reply_audio.extend(f);
            quiet_after_reply = 0;
        } else if reply_done {
            quiet_after_reply += 1;
        }
        while let Ok(ev) = ev_rx.try_recv() {
            match ev {
                Event::Transcript { text, .. } => report.transcript = Some(text),
                Event::Reply { text, sources, .. } => {
                    report.reply = Some(text);
                    report.sources = sources;
                }
                Event::Timings(t) => {
                    report.timings = Some(t);
                    reply_done = true;
                }
                Event::Busy { .. } => reply_done = true,
                _ => {}
            }
        }
        // Done once the reply has played out, or when nothing was understood
        // well after the file ended.
        if reply_done && quiet_after_reply >= 10 {
            break;
        }
        if report.transcript.is_none()
            && fed >= input.len()
            && started.elapsed()
                > Duration::from_secs_f64(input.len() as f64 / f64::from(PIPELINE_RATE) + 10.0)
        {
            break;
        }
    }
    cancel.cancel();
    let _ = task.await;
    if let (Some(a), Some(b)) = (last_voiced_at, first_voiced_out) {
        report.voice_to_voice = Some(b.saturating_duration_since(a));
    }
    Ok(report)
}
