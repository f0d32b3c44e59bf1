//! Pure accounting for the load tester: percentiles, and glitches in a
//! received RTP audio stream. No IO, no clocks of its own: callers pass the
//! arrival instants, so every rule here is unit-tested on made-up streams.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The value at quantile `q` (0..=1) of `values`, interpolating linearly
/// between the two nearest ranks (numpy's default); `None` when empty.
/// NaNs are ignored.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let q = q.clamp(0.0, 1.0);
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

/// p50 / p95 / p99, mean and max of a set of values (milliseconds or percent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Dist {
    pub n: usize,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub mean: Option<f64>,
    pub max: Option<f64>,
}

impl Dist {
    pub fn of(values: &[f64]) -> Self {
        let v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        let mean = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        Self {
            n: v.len(),
            p50: percentile(&v, 0.50),
            p95: percentile(&v, 0.95),
            p99: percentile(&v, 0.99),
            mean,
            max: v.iter().copied().reduce(f64::max),
        }
    }
}

/// Counts of what went wrong in a received stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlitchCounts {
    /// Packets received (each RTP sequence number once).
    pub frames: u64,
    /// Packets that arrived after the playout time a jitter buffer of
    /// `late_after` would have given them.
    pub late_frames: u64,
    /// Packets that never came (sequence-number gaps).
    pub lost_frames: u64,
    /// Breaks in the media timeline: a sequence gap, or a timestamp jump of
    /// more than a frame and a half between consecutive packets.
    pub gaps: u64,
    /// Audible events: each gap, and each run of consecutive late frames.
    pub glitches: u64,
}

impl GlitchCounts {
    pub fn add(&mut self, o: &GlitchCounts) {
        self.frames += o.frames;
        self.late_frames += o.late_frames;
        self.lost_frames += o.lost_frames;
        self.gaps += o.gaps;
        self.glitches += o.glitches;
    }

    /// `self - earlier`, for the counts of a window of a running tracker.
    pub fn since(&self, earlier: &GlitchCounts) -> GlitchCounts {
        GlitchCounts {
            frames: self.frames.saturating_sub(earlier.frames),
            late_frames: self.late_frames.saturating_sub(earlier.late_frames),
            lost_frames: self.lost_frames.saturating_sub(earlier.lost_frames),
            gaps: self.gaps.saturating_sub(earlier.gaps),
            glitches: self.glitches.saturating_sub(earlier.glitches),
        }
    }
}

/// RTP clock rate of the audio (Opus is always 48 kHz on the wire).
const RTP_RATE: f64 = 48_000.0;
/// RTP timestamp step of one 20 ms frame.
const FRAME_TICKS: i64 = 960;

/// Finds late frames and gaps in one received stream from RTP timestamps and
/// arrival times, the way a receiver's jitter buffer would suffer them.
///
/// Model: a buffer of depth `late_after` plays each packet at
/// `rtp_time + best_transit + late_after`, where `best_transit` is the
/// smallest `arrival - rtp_time` seen (the fastest any packet came). A packet
/// arriving after its playout time is late; the buffer then re-syncs to it
/// (as adaptive jitter buffers do), so one sender stall counts as one glitch
/// and not as every frame after it. The voxloop server sends a frame every
/// 20 ms (or two or three in one packet, `audio.packet_ms`) except in a DTX
/// pause, which ends with a marked packet: any other break in the stream is
/// a real one.
#[derive(Debug, Clone)]
pub struct GlitchTracker {
    late_after: f64,
    origin: Option<Instant>,
    last_seq: Option<u16>,
    last_ts: Option<u32>,
    /// Unwrapped RTP timestamp of the last packet, in ticks from the first.
    ext_ts: i64,
    /// Latest allowed transit (seconds): best transit + buffer depth.
    playout_offset: Option<f64>,
    in_late_run: bool,
    counts: GlitchCounts,
}

impl GlitchTracker {
    pub fn new(late_after: Duration) -> Self {
        Self {
            late_after: late_after.as_secs_f64(),
            origin: None,
            last_seq: None,
            last_ts: None,
            ext_ts: 0,
            playout_offset: None,
            in_late_run: false,
            counts: GlitchCounts::default(),
        }
    }

    pub fn counts(&self) -> GlitchCounts {
        self.counts
    }

    /// One received frame. Repeats of the last sequence number (the client's
    /// loss concealment delivers extra frames under the next packet's number)
    /// are not packets and are ignored, but for the later frames of a packet
    /// of several (the same number, the timestamp a frame on). `marker`:
    /// the packet ends a DTX pause, so its timestamp may jump.
    pub fn push(&mut self, sequence: u16, rtp_timestamp: u32, marker: bool, arrival: Instant) {
        if let Some(prev) = self.last_seq {
            let step = sequence.wrapping_sub(prev);
            if step == 0
                && let Some(t) = self.last_ts
                && rtp_timestamp.wrapping_sub(t) == FRAME_TICKS as u32
            {
                // A later frame of a packet of several: the packet's number,
                // its timestamp a frame on. It came with the packet, on time
                // or late with it.
                self.last_ts = Some(rtp_timestamp);
                self.ext_ts += FRAME_TICKS;
                self.counts.frames += 1;
                self.counts.late_frames += u64::from(self.in_late_run);
                return;
            }
            if step == 0 || step > 0x8000 {
                return; // duplicate, concealment, or reordered-late packet
            }
            let mut gap = false;
            if step > 1 {
                self.counts.lost_frames += u64::from(step - 1);
                gap = true;
            }
            if let Some(prev_ts) = self.last_ts {
                let dts = i64::from(rtp_timestamp.wrapping_sub(prev_ts) as i32);
                self.ext_ts += dts;
                if !marker && dts > FRAME_TICKS * i64::from(step) + FRAME_TICKS / 2 {
                    gap = true;
                }
            }
            if gap {
                self.counts.gaps += 1;
                self.counts.glitches += 1;
            }
        }
        self.last_seq = Some(sequence);
        self.last_ts = Some(rtp_timestamp);
        self.counts.frames += 1;

        let origin = *self.origin.get_or_insert(arrival);
        let transit =
            arrival.saturating_duration_since(origin).as_secs_f64() - self.ext_ts as f64 / RTP_RATE;
        let allowed = transit + self.late_after;
        match self.playout_offset {
            Some(offset) if transit > offset => {
                self.counts.late_frames += 1;
                if !self.in_late_run {
                    self.counts.glitches += 1;
                    self.in_late_run = true;
                }
                self.playout_offset = Some(allowed);
            }
            Some(offset) => {
                self.in_late_run = false;
                self.playout_offset = Some(offset.min(allowed));
            }
            None => self.playout_offset = Some(allowed),
        }
    }
}

/// Percent `part` of `whole` (0 when `whole` is 0).
pub fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Duration = Duration::from_millis(20);

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.5));
        assert!((percentile(&v, 0.95).unwrap() - 95.05).abs() < 1e-9);
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        // Order does not matter; NaN is ignored.
        assert_eq!(percentile(&[3.0, f64::NAN, 1.0, 2.0], 0.5), Some(2.0));
        let d = Dist::of(&[1.0, 2.0, 3.0, 10.0]);
        assert_eq!(d.n, 4);
        assert_eq!(d.p50, Some(2.5));
        assert_eq!(d.mean, Some(4.0));
        assert_eq!(d.max, Some(10.0));
        assert_eq!(Dist::of(&[]).p95, None);
    }

    /// A stream of `n` frames from `seq0`/`ts0`, one every 20 ms from `t0`,
    /// with `jitter(i)` added to each arrival.
    fn feed(
        t: &mut GlitchTracker,
        t0: Instant,
        seq0: u16,
        ts0: u32,
        n: u32,
        jitter: impl Fn(u32) -> Duration,
    ) {
        for i in 0..n {
            t.push(
                seq0.wrapping_add(i as u16),
                ts0.wrapping_add(i * 960),
                false,
                t0 + F * i + jitter(i),
            );
        }
    }

    #[test]
    fn a_steady_stream_has_no_glitches_even_across_wraps() {
        let mut t = GlitchTracker::new(Duration::from_millis(40));
        let t0 = Instant::now();
        // Starts just before both the sequence and the timestamp wrap.
        feed(&mut t, t0, 65_500, u32::MAX - 960 * 10, 500, |i| {
            Duration::from_millis(u64::from(i % 3) * 5) // 0..10 ms jitter
        });
        let c = t.counts();
        assert_eq!(c.frames, 500);
        assert_eq!(
            c,
            GlitchCounts {
                frames: 500,
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_sender_stall_is_one_glitch_not_every_frame_after_it() {
        let mut t = GlitchTracker::new(Duration::from_millis(40));
        let t0 = Instant::now();
        // Frames 100.. arrive 150 ms later than their timestamps say (the
        // sender stalled, then went on with contiguous timestamps).
        feed(&mut t, t0, 1, 0, 300, |i| {
            if i >= 100 {
                Duration::from_millis(150)
            } else {
                Duration::ZERO
            }
        });
        let c = t.counts();
        assert_eq!(c.late_frames, 1, "{c:?}");
        assert_eq!(c.glitches, 1);
        assert_eq!(c.gaps, 0);
    }

    #[test]
    fn a_burst_of_late_frames_is_one_glitch() {
        let mut t = GlitchTracker::new(Duration::from_millis(40));
        let t0 = Instant::now();
        // The receiver was descheduled: frames 50..55 all arrive at once,
        // 100 ms after frame 50 was due.
        feed(&mut t, t0, 1, 0, 200, |i| {
            if (50..55).contains(&i) {
                Duration::from_millis(100) - F * (i - 50)
            } else {
                Duration::ZERO
            }
        });
        let c = t.counts();
        assert!(c.late_frames >= 1 && c.late_frames <= 5, "{c:?}");
        assert_eq!(c.glitches, 1, "{c:?}");
    }

    #[test]
    fn lost_packets_and_timestamp_jumps_are_gaps() {
        let mut t = GlitchTracker::new(Duration::from_millis(40));
        let t0 = Instant::now();
        feed(&mut t, t0, 1, 0, 10, |_| Duration::ZERO);
        // Packets 11..=13 lost; 14 arrives on time.
        t.push(14, 13 * 960, false, t0 + F * 13);
        // Concealment repeats of 14 are ignored.
        t.push(14, 13 * 960, false, t0 + F * 13);
        let c = t.counts();
        assert_eq!((c.lost_frames, c.gaps, c.glitches, c.frames), (3, 1, 1, 11));
        // Contiguous sequence but the timestamp jumps 3 frames ahead.
        t.push(15, 17 * 960, false, t0 + F * 17);
        let c = t.counts();
        assert_eq!((c.lost_frames, c.gaps, c.late_frames), (3, 2, 0));
        // A reordered old packet is ignored.
        t.push(5, 4 * 960, false, t0 + F * 18);
        assert_eq!(t.counts().frames, 12);
        // A DTX pause: the marked packet's timestamp jumps, on time.
        t.push(16, 40 * 960, true, t0 + F * 40);
        t.push(17, 41 * 960, false, t0 + F * 41);
        let c = t.counts();
        assert_eq!((c.gaps, c.glitches, c.late_frames, c.frames), (2, 2, 0, 14));
    }

    #[test]
    fn the_frames_of_a_packet_of_several_arrive_together_on_time() {
        let mut t = GlitchTracker::new(Duration::from_millis(10));
        let t0 = Instant::now();
        // 40 ms packets: two frames under one number, both at the packet's
        // arrival, one packet every 40 ms; then 20 ms packets again.
        for i in 0..50u32 {
            for k in 0..2 {
                t.push(i as u16, (2 * i + k) * 960, false, t0 + F * (2 * i));
            }
        }
        feed(&mut t, t0 + F * 100, 50, 100 * 960, 10, |_| Duration::ZERO);
        let c = t.counts();
        assert_eq!(
            c,
            GlitchCounts {
                frames: 110,
                ..Default::default()
            }
        );
        // A 40 ms packet 30 ms late: both its frames are late, one glitch.
        t.push(
            60,
            110 * 960,
            false,
            t0 + F * 110 + Duration::from_millis(30),
        );
        t.push(
            60,
            111 * 960,
            false,
            t0 + F * 110 + Duration::from_millis(30),
        );
        let c = t.counts();
        assert_eq!((c.late_frames, c.glitches, c.gaps), (2, 1, 0), "{c:?}");
    }

    #[test]
    fn jitter_within_the_buffer_is_not_late() {
        let mut t = GlitchTracker::new(Duration::from_millis(40));
        let t0 = Instant::now();
        feed(&mut t, t0, 1, 0, 100, |i| {
            Duration::from_millis(u64::from(i % 4) * 12)
        });
        assert_eq!(t.counts().late_frames, 0);
        let mut tight = GlitchTracker::new(Duration::from_millis(10));
        feed(&mut tight, t0, 1, 0, 100, |i| {
            Duration::from_millis(u64::from(i % 4) * 12)
        });
        assert!(
            tight.counts().late_frames > 0,
            "36 ms of jitter beats a 10 ms buffer"
        );
    }

    #[test]
    fn window_counts() {
        let a = GlitchCounts {
            frames: 10,
            late_frames: 2,
            lost_frames: 1,
            gaps: 1,
            glitches: 2,
        };
        let b = GlitchCounts {
            frames: 25,
            late_frames: 2,
            lost_frames: 4,
            gaps: 2,
            glitches: 3,
        };
        let d = b.since(&a);
        assert_eq!(
            (d.frames, d.late_frames, d.lost_frames, d.gaps, d.glitches),
            (15, 0, 3, 1, 1)
        );
        let mut s = a;
        s.add(&d);
        assert_eq!(s, b);
        assert_eq!(pct(1, 4), 25.0);
        assert_eq!(pct(1, 0), 0.0);
    }
}
