//! Decode audio files (WAV, MP3, OGG/Vorbis, FLAC) with symphonia.

use std::fs::File;
use std::path::{Path, PathBuf};

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use super::resample::{ResampleError, resample_clip};

/// An audio file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AudioFileError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a supported audio file ({reason})")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: no audio track")]
    NoAudio { path: PathBuf },
    #[error("{path}: {source}")]
    Resample {
        path: PathBuf,
        source: ResampleError,
    },
}

/// Decode a file to mono f32 samples at its own rate. Returns `(samples, rate)`.
///
/// Multi-channel audio is averaged to mono. Corrupt packets inside an
/// otherwise readable file are skipped, as players do.
pub fn decode_file(path: &Path) -> Result<(Vec<f32>, u32), AudioFileError> {
    let fmt_err = |reason: String| AudioFileError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|source| AudioFileError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| fmt_err(e.to_string()))?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| AudioFileError::NoAudio {
            path: path.to_path_buf(),
        })?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| AudioFileError::NoAudio {
            path: path.to_path_buf(),
        })?;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| fmt_err(e.to_string()))?;
    let track_id = track.id;

    let mut mono = Vec::new();
    let mut rate = 0u32;
    let mut interleaved: Vec<f32> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(fmt_err(e.to_string())),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(b) => b,
            Err(SymError::DecodeError(_)) => continue,
            Err(e) => return Err(fmt_err(e.to_string())),
        };
        let spec = buf.spec();
        rate = spec.rate();
        let channels = spec.channels().count().max(1);
        interleaved.resize(buf.samples_interleaved(), 0.0);
        buf.copy_to_slice_interleaved(&mut interleaved);
        mono.extend(
            interleaved
                .chunks_exact(channels)
                .map(|c| c.iter().sum::<f32>() / channels as f32),
        );
    }
    if rate == 0 {
        return Err(AudioFileError::NoAudio {
            path: path.to_path_buf(),
        });
    }
    Ok((mono, rate))
}

/// Decode a file to mono f32 at `rate` Hz.
pub fn decode_file_mono(path: &Path, rate: u32) -> Result<Vec<f32>, AudioFileError> {
    let (samples, from) = decode_file(path)?;
    resample_clip(&samples, from, rate).map_err(|source| AudioFileError::Resample {
        path: path.to_path_buf(),
        source,
    })
}

/// Write mono f32 samples as a 16-bit PCM WAV file (for `--out` options and test artifacts).
pub fn write_wav(path: &Path, samples: &[f32], rate: u32) -> std::io::Result<()> {
    let pcm = super::level::f32_to_i16(samples);
    let data_len = (pcm.len() * 2) as u32;
    let mut bytes = Vec::with_capacity(44 + pcm.len() * 2);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data_len).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes()); // PCM
    bytes.extend_from_slice(&1u16.to_le_bytes()); // mono
    bytes.extend_from_slice(&rate.to_le_bytes());
    bytes.extend_from_slice(&(rate * 2).to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data_len.to_le_bytes());
    for s in pcm {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_round_trip_and_resample() {
        let dir = std::env::temp_dir().join(format!("voxloop-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tone.wav");
        let x: Vec<f32> = (0..16_000).map(|i| 0.25 * (i as f32 * 0.1).sin()).collect();
        write_wav(&path, &x, 16_000).unwrap();
        let (y, rate) = decode_file(&path).unwrap();
        assert_eq!(rate, 16_000);
        assert_eq!(y.len(), x.len());
        assert!((y[100] - x[100]).abs() < 1e-3);
        let z = decode_file_mono(&path, 48_000).unwrap();
        assert!((z.len() as i64 - 48_000).abs() <= 3);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_and_garbage_files_are_clear_errors() {
        let err = decode_file(Path::new("/nonexistent/x.wav")).unwrap_err();
        assert!(matches!(err, AudioFileError::Open { .. }), "{err}");
        let dir = std::env::temp_dir().join(format!("voxloop-garbage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("garbage.wav");
        std::fs::write(&path, b"this is not audio at all, just text").unwrap();
        let err = decode_file(&path).unwrap_err();
        assert!(matches!(err, AudioFileError::Format { .. }), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
