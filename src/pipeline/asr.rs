//! Speech recognition with whisper.cpp (whisper-rs): the model is loaded once
//! and shared; each pool thread keeps its own decoder state.

use std::ffi::c_void;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use super::pool::{Busy, WorkerPool};
use crate::PIPELINE_RATE;

#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("cannot load Whisper model {path}: {message}")]
    Load { path: String, message: String },
    #[error("whisper failed: {0}")]
    Whisper(String),
    #[error(transparent)]
    Busy(#[from] Busy),
}

/// One transcription and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    pub audio: Duration,
    pub elapsed: Duration,
}

/// ASR settings.
#[derive(Debug, Clone)]
pub struct AsrOptions {
    /// Threads whisper uses per transcription.
    pub threads: i32,
    /// Concurrent transcriptions (each holds a decoder state, ~30 MB for tiny).
    pub workers: usize,
    /// Transcriptions that may wait for a worker.
    pub queue: usize,
    /// Shrink the encoder window to the clip length instead of 30 s.
    pub fit_audio_ctx: bool,
}

impl Default for AsrOptions {
    fn default() -> Self {
        Self {
            threads: 2,
            workers: 1,
            queue: 8,
            fit_audio_ctx: true,
        }
    }
}

/// Whisper context shared by a pool of decoder threads.
pub struct Asr {
    pool: WorkerPool<WhisperState>,
    ctx: Arc<WhisperContext>,
    options: AsrOptions,
}

impl Asr {
    pub fn load(path: &Path, options: AsrOptions) -> Result<Self, AsrError> {
        let load_err = |message: String| AsrError::Load {
            path: path.display().to_string(),
            message,
        };
        whisper_rs::install_logging_hooks();
        let mut params = WhisperContextParameters::default();
        params.use_gpu(false);
        let ctx =
            WhisperContext::new_with_params(path, params).map_err(|e| load_err(e.to_string()))?;
        let ctx = Arc::new(ctx);
        let c = ctx.clone();
        let pool = WorkerPool::new("asr", options.workers, options.queue, move |_| {
            super::priority::bulk_thread();
            c.create_state().map_err(|e| e.to_string())
        })
        .map_err(load_err)?;
        Ok(Self { pool, ctx, options })
    }

    /// Transcribe 16 kHz mono audio on the pool. Empty or sub-100 ms audio gives "".
    pub async fn transcribe(&self, pcm: Vec<f32>) -> Result<Transcript, AsrError> {
        self.transcribe_holding(pcm, Arc::new(())).await
    }

    /// [`Asr::transcribe`], holding `alive` until the job has run or been
    /// skipped: a caller that gave up on it can tell when it stops counting
    /// in [`Asr::pending`]. A caller that gives up (drops this future)
    /// stops the job: skipped if queued, aborted inside whisper.cpp if
    /// running, so a transcript nobody waits for does not hold the cores
    /// the turn path needs next.
    pub async fn transcribe_holding(
        &self,
        pcm: Vec<f32>,
        alive: Arc<()>,
    ) -> Result<Transcript, AsrError> {
        let opts = self.options.clone();
        let max_ctx = self.ctx.n_audio_ctx();
        let wanted = Arc::new(());
        let probe = Arc::downgrade(&wanted);
        let result = self
            .pool
            .run(move |state| {
                let _alive = alive;
                run_whisper(state, &pcm, &opts, max_ctx, &probe)
            })
            .await;
        drop(wanted);
        result?
    }

    /// Jobs queued or running.
    pub fn pending(&self) -> usize {
        self.pool.pending()
    }
}

fn run_whisper(
    state: &mut WhisperState,
    pcm: &[f32],
    opts: &AsrOptions,
    max_ctx: i32,
    wanted: &Weak<()>,
) -> Result<Transcript, AsrError> {
    let started = Instant::now();
    let audio = Duration::from_secs_f64(pcm.len() as f64 / f64::from(PIPELINE_RATE));
    // Whisper needs at least ~100 ms; treat shorter input as silence.
    if pcm.len() < PIPELINE_RATE as usize / 10 {
        return Ok(Transcript {
            text: String::new(),
            audio,
            elapsed: started.elapsed(),
        });
    }
    let fit = opts
        .fit_audio_ctx
        .then(|| audio_ctx_for(pcm.len(), max_ctx));
    let mut text = decode(state, pcm, opts, fit, wanted)?;
    // A shrunken encoder window occasionally sends the decoder into a loop
    // ("What is…? What is…? …"). One that went round whole ("Thank you,
    // that is all for today. Thank you, that is all for today.") is cut to
    // one round; any other is decoded again with the full window, which
    // costs three to four times the first decode (0.8 s here, with every
    // other session's inference waiting behind it).
    if fit.is_some() && looped(&text, audio) {
        match one_round(&text).filter(|once| !looped(once, audio)) {
            Some(once) => {
                tracing::debug!(
                    words = text.split_whitespace().count(),
                    kept = once.split_whitespace().count(),
                    "ASR loop went round whole; kept one round"
                );
                text = once;
            }
            None => {
                tracing::debug!(
                    words = text.split_whitespace().count(),
                    "ASR loop; retrying with the full window"
                );
                text = decode(state, pcm, opts, None, wanted)?;
            }
        }
    }
    Ok(Transcript {
        text: clean(&text),
        audio,
        elapsed: started.elapsed(),
    })
}

/// whisper.cpp's abort callback: `data` is the job's `&Weak<()>`, whose
/// `Arc` the caller drops when it gives up.
unsafe extern "C" fn given_up(data: *mut c_void) -> bool {
    // SAFETY: `decode` passes a pointer to a `Weak<()>` that outlives the
    // `full` call, the only time whisper.cpp calls this.
    let wanted = unsafe { &*(data as *const Weak<()>) };
    wanted.strong_count() == 0
}

fn decode(
    state: &mut WhisperState,
    pcm: &[f32],
    opts: &AsrOptions,
    audio_ctx: Option<i32>,
    wanted: &Weak<()>,
) -> Result<String, AsrError> {
    let mut fp = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
    fp.set_language(Some("en"));
    fp.set_translate(false);
    fp.set_no_context(true);
    // One 30 s window: a single segment without timestamps is fastest. Longer
    // audio needs timestamps, which is how whisper.cpp seeks to the next window.
    let one_window = pcm.len() <= 30 * PIPELINE_RATE as usize;
    fp.set_no_timestamps(one_window);
    fp.set_single_segment(one_window);
    fp.set_print_special(false);
    fp.set_print_progress(false);
    fp.set_print_realtime(false);
    fp.set_print_timestamps(false);
    fp.set_suppress_blank(true);
    fp.set_suppress_nst(true);
    fp.set_temperature(0.0);
    fp.set_temperature_inc(0.0);
    if let Some(ctx) = audio_ctx {
        fp.set_audio_ctx(ctx);
    }
    // Not whisper-rs' `set_abort_callback_safe`: its trampoline reads the
    // boxed closure as the closure itself.
    // SAFETY: `given_up` matches whisper.cpp's abort callback, and `wanted`
    // outlives `fp`'s use in `full` below.
    unsafe {
        fp.set_abort_callback(Some(given_up));
        fp.set_abort_callback_user_data(wanted as *const Weak<()> as *mut c_void);
    }
    {
        let _turn = super::gate::bulk().enter();
        // Chosen now, after the wait: the load may have changed meanwhile.
        fp.set_n_threads(super::cpu_share::threads(opts.threads));
        state
            .full(fp, pcm)
            .map_err(|e| AsrError::Whisper(e.to_string()))?;
    }
    let mut text = String::new();
    for seg in state.as_iter() {
        // Whisper's own verdict that a segment holds no speech (noise it
        // would otherwise "transcribe" as made-up sentences).
        if seg.no_speech_probability() > NO_SPEECH_THRESHOLD {
            continue;
        }
        if let Ok(s) = seg.to_str_lossy() {
            text.push_str(&s);
        }
    }
    Ok(text)
}

/// Whether the decoder looped: more words than anyone says in this much
/// audio (5 words/s + 4), or a clause of three words or more said twice.
/// A loop that went round once ("Thank you, that is all for today. Thank
/// you, that is all for today." from 3 s of audio) stays under the word
/// rate; a speaker who does repeat a clause costs one decode more.
fn looped(text: &str, audio: Duration) -> bool {
    text.split_whitespace().count() as f64 > audio.as_secs_f64() * 5.0 + 4.0
        || crate::text::repeat_at([], text).is_some()
}

/// The first round of a text that is one stretch of three words or more
/// said again, whole, perhaps more than once and cut short at the end
/// ("A B C. A B C. A B"): words compared without case or punctuation.
/// None when the text is anything else, or its repeat is not whole.
fn one_round(text: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    // One per word (a word of punctuation alone is ""), so indices match.
    let bare: Vec<String> = words
        .iter()
        .map(|w| crate::text::normalize_words(w).pop().unwrap_or_default())
        .collect();
    (3..=words.len() / 2)
        .find(|&p| (p..bare.len()).all(|i| bare[i] == bare[i - p]))
        .map(|p| words[..p].join(" "))
}

/// Segments Whisper rates above this no-speech probability are dropped
/// (0.6 is Whisper's reference threshold).
const NO_SPEECH_THRESHOLD: f32 = 0.6;

/// Encoder frames added beyond the clip. Measured on the shared questions with
/// tiny.en: +64 and +128 sent the decoder into loops on most clips, +256 on
/// one, +384 on none (at ~0.3 s per clip instead of ~1.1 s for the full window).
const AUDIO_CTX_MARGIN: i32 = 384;

/// Encoder frames for a clip: 50 per second plus a margin, capped at the model's 1500.
pub fn audio_ctx_for(samples: usize, max_ctx: i32) -> i32 {
    let frames =
        (samples as f64 / f64::from(PIPELINE_RATE) * 50.0).ceil() as i32 + AUDIO_CTX_MARGIN;
    frames.min(max_ctx).max(1)
}

/// Trim and drop whisper's non-speech markers like "[BLANK_AUDIO]" or "(music)".
pub fn clean(text: &str) -> String {
    let mut out = String::new();
    let mut depth = 0i32;
    for c in text.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth = (depth - 1).max(0),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_removed() {
        assert_eq!(clean(" [BLANK_AUDIO] "), "");
        assert_eq!(clean(" Hello (coughs) world. "), "Hello world.");
    }

    #[test]
    fn loop_detector() {
        let one = Duration::from_secs(1);
        assert!(!looped("What is the capital of France?", 2 * one));
        assert!(!looped("Hello, hello. Can you hear me?", 2 * one));
        assert!(looped(
            "Thank you, that is all for today. Thank you, that is all for today.",
            3 * one
        ));
        assert!(looped(
            &"What is the capital of France? ".repeat(5),
            2 * one
        ));
    }

    #[test]
    fn a_loop_that_went_round_whole_keeps_one_round() {
        let cases = [
            // The loop Whisper makes of q07 in load-test sessions (2.6 s of audio).
            (
                " Thank you, that is all for today. Thank you, that is all for today.",
                Some("Thank you, that is all for today."),
            ),
            (
                "What is the capital of France? What is the capital of France? What is the",
                Some("What is the capital of France?"),
            ),
            // Case and punctuation of the repeat may differ.
            ("Turn it off, turn it off.", Some("Turn it off,")),
            // Not one whole round: the full window decides.
            ("What is the capital of France? What is the", None),
            ("I went to the shop and then I went to the shop", None),
            ("Hello, hello. Can you hear me?", None),
            ("no no", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(one_round(text).as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn audio_ctx_scales_with_length() {
        assert_eq!(audio_ctx_for(16_000, 1500), 50 + AUDIO_CTX_MARGIN);
        assert_eq!(audio_ctx_for(16_000 * 60, 1500), 1500);
    }
}
