//! Whisper-style log-mel features (80 Slaney mel bands, 25 ms window, 10 ms
//! hop), as the Smart Turn v3.2 model expects them.

use std::f64::consts::PI;
use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const N_MELS: usize = 80;
const SAMPLE_RATE: f64 = 16_000.0;

/// Slaney mel scale (linear below 1 kHz, logarithmic above), as librosa's default.
fn hz_to_mel(f: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if f >= min_log_hz {
        min_log_mel + (f / min_log_hz).ln() / logstep
    } else {
        f / f_sp
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if m >= min_log_mel {
        min_log_hz * (logstep * (m - min_log_mel)).exp()
    } else {
        f_sp * m
    }
}

/// The 80 × 201 Slaney-normalized triangular filterbank for 16 kHz, n_fft 400.
pub fn mel_filters() -> Vec<Vec<f32>> {
    let n_bins = N_FFT / 2 + 1;
    let fft_freqs: Vec<f64> = (0..n_bins)
        .map(|k| k as f64 * SAMPLE_RATE / N_FFT as f64)
        .collect();
    let (mel_min, mel_max) = (hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2.0));
    let mel_pts: Vec<f64> = (0..N_MELS + 2)
        .map(|i| mel_to_hz(mel_min + (mel_max - mel_min) * i as f64 / (N_MELS + 1) as f64))
        .collect();
    (0..N_MELS)
        .map(|m| {
            let (lo, c, hi) = (mel_pts[m], mel_pts[m + 1], mel_pts[m + 2]);
            let enorm = 2.0 / (hi - lo);
            fft_freqs
                .iter()
                .map(|&f| {
                    let lower = (f - lo) / (c - lo);
                    let upper = (hi - f) / (hi - c);
                    (lower.min(upper).max(0.0) * enorm) as f32
                })
                .collect()
        })
        .collect()
}

/// Computes log-mel spectrograms; reuse one per thread (it caches the FFT plan).
pub struct MelExtractor {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    filters: Vec<Vec<f32>>,
}

impl Default for MelExtractor {
    fn default() -> Self {
        Self::new()
    }
}

impl MelExtractor {
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        // Periodic Hann window.
        let window = (0..N_FFT)
            .map(|i| (0.5 - 0.5 * (2.0 * PI * i as f64 / N_FFT as f64).cos()) as f32)
            .collect();
        Self {
            fft,
            window,
            filters: mel_filters(),
        }
    }

    /// Whisper log-mel of `audio`: centered frames with reflect padding,
    /// power spectrum, mel, log10, clamp to (max − 8), (x + 4) / 4. The last
    /// frame is dropped, as Whisper does. Returns `[N_MELS][frames]` flattened row-major.
    pub fn log_mel(&self, audio: &[f32]) -> (Vec<f32>, usize) {
        let pad = N_FFT / 2;
        let n = audio.len();
        let padded: Vec<f32> = (0..n + 2 * pad)
            .map(|i| {
                // Reflect padding (mirror without repeating the edge sample).
                let j = i as isize - pad as isize;
                let j = if j < 0 {
                    -j
                } else if j >= n as isize {
                    2 * (n as isize - 1) - j
                } else {
                    j
                };
                audio
                    .get(j.clamp(0, n.saturating_sub(1) as isize) as usize)
                    .copied()
                    .unwrap_or(0.0)
            })
            .collect();
        let frames = 1 + n / HOP; // centered framing
        let out_frames = frames.saturating_sub(1);
        let mut mel = vec![0.0f32; N_MELS * out_frames];
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut power = vec![0.0f32; N_FFT / 2 + 1];
        for t in 0..out_frames {
            let start = t * HOP;
            for (k, x) in input.iter_mut().enumerate() {
                *x = padded.get(start + k).copied().unwrap_or(0.0) * self.window[k];
            }
            if self.fft.process(&mut input, &mut spectrum).is_err() {
                continue;
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (m, filt) in self.filters.iter().enumerate() {
                let e: f32 = filt.iter().zip(&power).map(|(w, p)| w * p).sum();
                mel[m * out_frames + t] = e.max(1e-10).log10();
            }
        }
        let max = mel.iter().copied().fold(f32::MIN, f32::max);
        for v in &mut mel {
            *v = (v.max(max - 8.0) + 4.0) / 4.0;
        }
        (mel, out_frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filterbank_shape_and_slaney_norm() {
        let f = mel_filters();
        assert_eq!(f.len(), 80);
        assert!(f.iter().all(|r| r.len() == 201));
        // Every filter has some weight, and weights are non-negative.
        assert!(f.iter().all(|r| r.iter().any(|&w| w > 0.0)));
        assert!(f.iter().flatten().all(|&w| w >= 0.0));
        // Slaney normalization: area of each filter ≈ 1 in Hz * (bin spacing / 2).
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-9);
        assert!((mel_to_hz(hz_to_mel(3210.0)) - 3210.0).abs() < 1e-6);
    }

    #[test]
    fn eight_seconds_give_800_frames_and_a_tone_lands_in_its_band() {
        let x: Vec<f32> = (0..128_000)
            .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin())
            .collect();
        let (mel, frames) = MelExtractor::new().log_mel(&x);
        assert_eq!(frames, 800);
        assert_eq!(mel.len(), 80 * 800);
        // The band holding 440 Hz is the loudest in a middle frame.
        let t = 400;
        let loudest = (0..80)
            .max_by(|&a, &b| mel[a * frames + t].total_cmp(&mel[b * frames + t]))
            .unwrap();
        let centre = mel_to_hz(hz_to_mel(0.0) + (hz_to_mel(8000.0)) * (loudest + 1) as f64 / 81.0);
        assert!(
            (300.0..600.0).contains(&centre),
            "band {loudest} centre {centre} Hz"
        );
    }
}
