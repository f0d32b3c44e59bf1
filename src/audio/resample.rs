//! Sample-rate conversion with rubato's FFT resampler (fixed ratios only:
//! 48 kHz wire ↔ 16 kHz pipeline, 22.05 kHz TTS → 48 kHz).

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

/// A resampler could not be built or failed on a buffer.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    #[error("cannot build a {from} Hz -> {to} Hz resampler: {reason}")]
    Construction { from: u32, to: u32, reason: String },
    #[error("resampling failed: {0}")]
    Process(String),
}

/// Streaming mono resampler that accepts buffers of any length.
///
/// Input is collected into the resampler's fixed chunk; whole chunks are
/// converted as soon as they are complete, so the added latency is at most
/// one chunk plus the filter delay (about 5 ms for 20 ms chunks).
pub struct StreamResampler {
    inner: Fft<f32>,
    from: u32,
    to: u32,
    pending: Vec<f32>,
    out_buf: Vec<f32>,
}

impl StreamResampler {
    /// A resampler from `from` Hz to `to` Hz taking `chunk` input samples per step.
    pub fn new(from: u32, to: u32, chunk: usize) -> Result<Self, ResampleError> {
        let inner = Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input)
            .map_err(|e| ResampleError::Construction {
                from,
                to,
                reason: e.to_string(),
            })?;
        let out_max = inner.output_frames_max();
        Ok(Self {
            inner,
            from,
            to,
            pending: Vec::with_capacity(chunk * 2),
            out_buf: vec![0.0; out_max],
        })
    }

    /// Input rate in Hz.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Feed samples; returns whatever output is ready.
    pub fn push(&mut self, input: &[f32]) -> Result<Vec<f32>, ResampleError> {
        self.pending.extend_from_slice(input);
        let mut out = Vec::new();
        loop {
            let need = self.inner.input_frames_next();
            if self.pending.len() < need {
                break;
            }
            self.step(need, None, &mut out)?;
        }
        Ok(out)
    }

    /// Convert what is buffered plus the filter's delay line, padding with
    /// silence, so the tail of an utterance is not left inside the resampler.
    pub fn flush(&mut self) -> Result<Vec<f32>, ResampleError> {
        let mut out = Vec::new();
        let need = self.inner.input_frames_next();
        let have = self.pending.len();
        if have > 0 {
            self.pending.resize(need, 0.0);
            self.step(need, Some(have), &mut out)?;
        }
        // Drain the delay line with silence.
        let mut drained = 0;
        let delay = self.inner.output_delay();
        while drained < delay {
            let need = self.inner.input_frames_next();
            self.pending.resize(need, 0.0);
            let before = out.len();
            self.step(need, None, &mut out)?;
            drained += out.len() - before;
        }
        self.inner.reset();
        Ok(out)
    }

    fn step(
        &mut self,
        need: usize,
        partial: Option<usize>,
        out: &mut Vec<f32>,
    ) -> Result<(), ResampleError> {
        let input = InterleavedSlice::new(&self.pending[..need], 1, need)
            .map_err(|e| ResampleError::Process(e.to_string()))?;
        let frames_out = self.out_buf.len();
        let mut output = InterleavedSlice::new_mut(&mut self.out_buf, 1, frames_out)
            .map_err(|e| ResampleError::Process(e.to_string()))?;
        let indexing = partial.map(|p| Indexing::new().partial_len(p));
        let (_, written) = self
            .inner
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .map_err(|e| ResampleError::Process(e.to_string()))?;
        out.extend_from_slice(&self.out_buf[..written]);
        self.pending.drain(..need);
        Ok(())
    }
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
    fn tone_survives_streaming_round_trip() {
        let x = tone(48_000, 1000.0, 1.0);
        let mut down = StreamResampler::new(48_000, 16_000, 960).unwrap();
        let mut up = StreamResampler::new(16_000, 48_000, 320).unwrap();
        let mut y = Vec::new();
        // Feed in odd-sized pieces to exercise the internal buffering.
        for piece in x.chunks(777) {
            let d = down.push(piece).unwrap();
            y.extend(up.push(&d).unwrap());
        }
        let d = down.flush().unwrap();
        y.extend(up.push(&d).unwrap());
        y.extend(up.flush().unwrap());
        // Align on the combined filter delay by cross-correlation.
        let best = (0..2000)
            .max_by(|&a, &b| {
                let ca: f32 = x[..20_000].iter().zip(&y[a..]).map(|(p, q)| p * q).sum();
                let cb: f32 = x[..20_000].iter().zip(&y[b..]).map(|(p, q)| p * q).sum();
                ca.total_cmp(&cb)
            })
            .unwrap();
        let snr = snr_db(&x, &y[best..], 2400);
        assert!(snr >= 30.0, "SNR {snr:.1} dB at delay {best}");
        assert!(y.len() >= x.len(), "tail lost: {} < {}", y.len(), x.len());
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
