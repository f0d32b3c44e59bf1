// Audio level meters: an AnalyserNode on a MediaStream, read on demand.
// Used for the microphone and for the assistant's audio.

/** Silence floor of the meters, in dBFS. */
export const FLOOR_DB = -60;

export class LevelMeter {
  /**
   * @param {AudioContext} ctx
   * @param {MediaStream} stream any stream with an audio track (local or remote)
   */
  constructor(ctx, stream) {
    this.source = ctx.createMediaStreamSource(stream);
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 1024; // ~21 ms at 48 kHz
    this.buffer = new Float32Array(this.analyser.fftSize);
    // An analyser needs no output: browsers pull it while its input is live.
    // Playback goes through the <audio> element, not through this graph.
    this.source.connect(this.analyser);
  }

  /** RMS of the last ~21 ms, 0 … 1 (full scale). */
  rms() {
    this.analyser.getFloatTimeDomainData(this.buffer);
    let sum = 0;
    for (const x of this.buffer) sum += x * x;
    return Math.sqrt(sum / this.buffer.length);
  }

  disconnect() {
    this.source.disconnect();
    this.analyser.disconnect();
  }
}

/** An RMS value on the meter's scale: FLOOR_DB … 0 dBFS → 0 … 1. */
export function meterFraction(rms) {
  if (!(rms > 0)) return 0;
  const db = 20 * Math.log10(rms);
  return Math.min(1, Math.max(0, (db - FLOOR_DB) / -FLOOR_DB));
}
