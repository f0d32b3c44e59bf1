//! The receive side's clock for an inbound stream that stops.
//!
//! A client that stops sending (a muted track, Opus DTX, a WHIP tool whose
//! file ended) is silent. Without packets nothing tells the speech loop that
//! time passes except `pipeline::next_input`'s stall rule, which speaks up
//! 100 ms late and in 100 ms steps, so an end of turn after such a client's
//! last word came up to ~200 ms later than after a live microphone's silence
//! (measured with `scripts/third_party_client.py --tail none`). `GapFill`
//! says how many 20 ms frames of silence stand for the missing packets, one
//! frame per frame time once a short grace for jitter has passed, as a
//! receiver's playout clock would render them. It stops once `max` of
//! silence (real silent frames and fill alike) followed the last sound, so a
//! client muted for good costs nothing, and neither does a DTX client's
//! update packet every 400 ms through a long silence. Sans-IO: the caller
//! owns the clock.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct GapFill {
    frame: Duration,
    grace: Duration,
    max_frames: u32,
    last: Option<Instant>,
    /// Frames of silence given since the last real frame.
    given: u32,
    /// Frames of silence (real or given) since the last frame with sound.
    quiet: u32,
}

impl GapFill {
    /// `frame`: one packet's duration; `grace`: how late a packet may be
    /// before it counts as missing; `max`: the longest gap filled.
    pub fn new(frame: Duration, grace: Duration, max: Duration) -> Self {
        let max_frames = (max.as_micros() / frame.as_micros().max(1)) as u32;
        Self {
            frame,
            grace: grace.max(frame),
            max_frames,
            last: None,
            given: 0,
            quiet: 0,
        }
    }

    /// A real frame arrived at `now`; `silent`: it carried no sound.
    pub fn on_frame(&mut self, now: Instant, silent: bool) {
        self.last = Some(now);
        self.given = 0;
        self.quiet = if silent {
            self.quiet.saturating_add(1)
        } else {
            0
        };
    }

    /// When [`GapFill::fill`] has frames to give; `None` before the first
    /// frame and once `max` of silence followed the last sound.
    pub fn next_deadline(&self) -> Option<Instant> {
        let last = self.last?;
        if self.quiet >= self.max_frames {
            return None;
        }
        Some((last + self.frame * (self.given + 1)).max(last + self.grace))
    }

    /// Frames of silence to give at `now` (a late call gives the backlog:
    /// the pipeline counts silence in audio time).
    pub fn fill(&mut self, now: Instant) -> u32 {
        let Some(last) = self.last else { return 0 };
        let since = now.saturating_duration_since(last);
        if since < self.grace {
            return 0;
        }
        let due = (since.as_micros() / self.frame.as_micros().max(1)) as u32;
        let room = self.max_frames.saturating_sub(self.quiet);
        let n = due.saturating_sub(self.given).min(room);
        self.given += n;
        self.quiet += n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Duration = Duration::from_millis(20);

    fn gap() -> GapFill {
        GapFill::new(F, Duration::from_millis(60), Duration::from_millis(200))
    }

    #[test]
    fn nothing_before_the_first_frame_or_within_the_grace() {
        let t0 = Instant::now();
        let mut g = gap();
        assert_eq!(g.next_deadline(), None);
        assert_eq!(g.fill(t0 + Duration::from_secs(5)), 0);
        g.on_frame(t0, false);
        assert_eq!(g.next_deadline(), Some(t0 + Duration::from_millis(60)));
        assert_eq!(g.fill(t0 + Duration::from_millis(59)), 0);
        // A packet that comes within the grace starts the count again.
        g.on_frame(t0 + Duration::from_millis(50), false);
        assert_eq!(g.fill(t0 + Duration::from_millis(100)), 0);
    }

    #[test]
    fn after_the_grace_one_frame_per_frame_time_up_to_max() {
        let t0 = Instant::now();
        let ms = |m| t0 + Duration::from_millis(m);
        let mut g = gap();
        g.on_frame(t0, false);
        // At 60 ms the frames due at 20, 40 and 60 ms are missing.
        assert_eq!(g.fill(ms(60)), 3);
        assert_eq!(g.next_deadline(), Some(ms(80)));
        assert_eq!(g.fill(ms(79)), 0);
        assert_eq!(g.fill(ms(80)), 1);
        // A late wake-up gives the backlog, never more than max (10 frames).
        assert_eq!(g.fill(ms(150)), 3);
        assert_eq!(g.fill(ms(1000)), 3);
        assert_eq!(g.next_deadline(), None);
        assert_eq!(g.fill(ms(2000)), 0);
        // A real frame re-arms it.
        g.on_frame(ms(2000), false);
        assert_eq!(g.fill(ms(2060)), 3);
    }

    #[test]
    fn silent_update_packets_do_not_re_arm_it() {
        let t0 = Instant::now();
        let ms = |m| t0 + Duration::from_millis(m);
        let mut g = gap();
        // The last word, then a DTX client's update packet every 400 ms.
        g.on_frame(t0, false);
        assert_eq!(g.fill(ms(400)), 10);
        g.on_frame(ms(400), true);
        assert_eq!(g.next_deadline(), None);
        assert_eq!(g.fill(ms(800)), 0);
        // Silent packets that come on time count towards max as well.
        let mut g = gap();
        g.on_frame(t0, false);
        for i in 1..=5 {
            g.on_frame(ms(20 * i), true);
        }
        assert_eq!(g.fill(ms(1000)), 5);
        // Sound re-arms it.
        g.on_frame(ms(1200), false);
        assert_eq!(g.fill(ms(1260)), 3);
    }
}
