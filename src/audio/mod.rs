//! Codec-free audio building blocks: file decoding, resampling, Opus, pacing
//! and signal measures. Nothing here knows about WebRTC or sessions, so each
//! piece is unit-tested on plain buffers.

pub mod codec;
pub mod dtx;
pub mod file;
pub mod level;
pub mod pacer;
pub mod resample;

pub use codec::{CodecError, OpusDecoder, OpusEncoder, PacketJoiner};
pub use dtx::{DtxEncoder, Outgoing};
pub use file::{AudioFileError, decode_file, decode_file_mono, write_wav};
pub use level::{
    DIGITAL_SILENCE, VOICED_THRESHOLD, dbfs, first_voiced, is_digital_silence, last_voiced, rms,
};
pub use pacer::{Pacer, Tick};
pub use resample::{ResampleError, resample_clip};
