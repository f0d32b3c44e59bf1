//! Sample-rate conversion of whole clips with rubato's FFT resampler (fixed
//! ratios: 16 kHz pipeline → 48 kHz wire, 22.05 kHz TTS → 48 kHz). Inbound
//! audio needs none: the Opus decoder gives 16 kHz itself.

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

/// A resampler could not be built or failed on a buffer.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    #[error("cannot build a {from} Hz -> {to} Hz resampler: {reason}")]
    Construction { from: u32, to: u32, reason: String },
    #[error("resampling failed: {0}")]
    Process(String),
}

/// Resample a whole clip, trimming the filter delay so output aligns with input.
pub fn resample_clip(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>, ResampleError> {
    if from == to || input.is_empty() {
        return Ok(input.to_vec());
    }
    let mut rs =
        Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Both).map_err(|e| {
            ResampleError::Construction {
                from,
                to,
                reason: e.to_string(),
            }
        })?;
    let adapter = InterleavedSlice::new(input, 1, input.len())
        .map_err(|e| ResampleError::Process(e.to_string()))?;
    let out = rs
        .process_all(&adapter, input.len(), None)
        .map_err(|e| ResampleError::Process(e.to_string()))?;
    Ok(out.take_data())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;

    fn tone(rate: u32, hz: f32, secs: f32) -> Vec<f32> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .map(|i| 0.5 * (2.0 * PI * hz * i as f32 / rate as f32).sin())
            .collect()
    }

    /// SNR in dB of `y` against `x`, skipping `edge` samples at both ends.
    fn snr_db(x: &[f32], y: &[f32], edge: usize) -> f32 {
        let n = x.len().min(y.len());
        let (mut sig, mut noise) = (0.0f64, 0.0f64);
        for i in edge..n - edge {
            sig += f64::from(x[i]).powi(2);
            noise += f64::from(x[i] - y[i]).powi(2);
        }
        (10.0 * (sig / noise.max(1e-20)).log10()) as f32
    }

    #[test]
    fn tone_survives_48k_16k_48k_clip() {
        let x = tone(48_000, 1000.0, 1.0);
        let down = resample_clip(&x, 48_000, 16_000).unwrap();
        assert!(
            (down.len() as i64 - 16_000).abs() <= 2,
            "len {}",
            down.len()
        );
        let up = resample_clip(&down, 16_000, 48_000).unwrap();
        let snr = snr_db(&x, &up, 2400);
        assert!(snr >= 30.0, "SNR {snr:.1} dB");
    }

    #[test]
    fn empty_and_identity() {
        assert!(resample_clip(&[], 48_000, 16_000).unwrap().is_empty());
        assert_eq!(
            resample_clip(&[0.1, 0.2], 16_000, 16_000).unwrap(),
            vec![0.1, 0.2]
        );
    }
}
