//! Signal measures shared by the echo gate, the tests and the latency meter.

/// "Voiced" amplitude of DESIGN.md §5: |x| > 300/32767 (about -41 dBFS).
///
/// One threshold everywhere, so latency figures compare with other tools
/// measured the same way.
pub const VOICED_THRESHOLD: f32 = 300.0 / 32767.0;

/// Root mean square of a buffer (0 for an empty one).
/// Samples under this (-120 dBFS, below 16-bit resolution) are digital
/// silence: libopus' synthesis filters leave such a residue.
pub const DIGITAL_SILENCE: f32 = 1e-6;

/// Every sample is digital silence.
pub fn is_digital_silence(samples: &[f32]) -> bool {
    samples.iter().all(|x| x.abs() < DIGITAL_SILENCE)
}

pub fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    (sum / samples.len() as f64).sqrt() as f32
}

/// Level in dBFS of an RMS value (-120 for silence).
pub fn dbfs(rms: f32) -> f32 {
    if rms <= 1e-6 {
        -120.0
    } else {
        20.0 * rms.log10()
    }
}

/// Index of the first voiced sample, if any.
pub fn first_voiced(samples: &[f32]) -> Option<usize> {
    samples.iter().position(|x| x.abs() > VOICED_THRESHOLD)
}

/// Index of the last voiced sample, if any.
pub fn last_voiced(samples: &[f32]) -> Option<usize> {
    samples.iter().rposition(|x| x.abs() > VOICED_THRESHOLD)
}

/// Convert 16-bit PCM to f32 in [-1, 1).
pub fn i16_to_f32(samples: &[i16]) -> Vec<f32> {
    samples.iter().map(|&s| f32::from(s) / 32768.0).collect()
}

/// Convert f32 to 16-bit PCM, clamping out-of-range values.
pub fn f32_to_i16(samples: &[f32]) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_of_full_scale_square_is_one() {
        let sq: Vec<f32> = (0..100)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert!((rms(&sq) - 1.0).abs() < 1e-6);
        assert_eq!(rms(&[]), 0.0);
        assert!((dbfs(1.0)).abs() < 1e-6);
    }

    #[test]
    fn voiced_bounds() {
        let mut x = vec![0.0f32; 10];
        x[3] = 0.5;
        x[7] = -0.2;
        assert_eq!(first_voiced(&x), Some(3));
        assert_eq!(last_voiced(&x), Some(7));
        assert_eq!(first_voiced(&[0.001; 5]), None);
    }

    #[test]
    fn pcm_round_trip() {
        let x = [0.0f32, 0.5, -0.5, 1.5, -1.5];
        let y = i16_to_f32(&f32_to_i16(&x));
        assert!((y[1] - 0.5).abs() < 1e-3);
        assert!((y[3] - 1.0).abs() < 1e-3);
        assert!((y[4] + 1.0).abs() < 1e-3);
    }
}
