//! The capacity search: judge each step on its steady window, double the
//! session count until a step fails, then bisect.

use serde::{Deserialize, Serialize};

use super::report::{RunRecord, Summary, TurnRecord};

/// Summary of the turns that started once every session was up (all turns
/// if the ramp never completed): what a capacity step is judged on.
pub fn steady_summary(run: &RunRecord) -> Summary {
    let from = run.ramp_done_s.unwrap_or(0.0);
    let steady: Vec<TurnRecord> = run
        .turns
        .iter()
        .filter(|t| t.t_start_s >= from)
        .cloned()
        .collect();
    let turns = if steady.is_empty() {
        &run.turns
    } else {
        &steady
    };
    Summary::of(turns, &run.session_records)
}

/// What a capacity step must stay within.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub p95_ms: f64,
    pub failure_pct: f64,
    pub late_pct: f64,
}

/// Did a capacity step hold?
pub fn step_held(s: &Summary, b: &Bounds) -> bool {
    s.voice_to_voice_ms.p95.is_some_and(|p| p <= b.p95_ms)
        && s.unanswered_pct <= b.failure_pct
        && s.late_pct <= b.late_pct
}

/// Next session count to try: double until a step fails, then bisect.
/// `None` when the answer is known.
pub fn next_step(held_max: usize, failed_min: Option<usize>, limit: usize) -> Option<usize> {
    match failed_min {
        None => {
            let next = (held_max.max(1) * 2).min(limit);
            (next > held_max).then_some(next)
        }
        Some(f) if f > held_max + 1 => Some(held_max + (f - held_max) / 2),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::stats;

    #[test]
    fn capacity_steps_double_then_bisect() {
        // 1 held → 2 held → 4 held → 8 failed → 6 held → 7 failed → done (6).
        assert_eq!(next_step(1, None, 32), Some(2));
        assert_eq!(next_step(2, None, 32), Some(4));
        assert_eq!(next_step(4, None, 32), Some(8));
        assert_eq!(next_step(4, Some(8), 32), Some(6));
        assert_eq!(next_step(6, Some(8), 32), Some(7));
        assert_eq!(next_step(6, Some(7), 32), None);
        // Nothing held: the first step failed at 1.
        assert_eq!(next_step(0, Some(1), 32), None);
        // Bounded by the limit.
        assert_eq!(next_step(20, None, 32), Some(32));
        assert_eq!(next_step(32, None, 32), None);
    }

    #[test]
    fn a_step_holds_on_latency_failures_and_late_frames() {
        let b = Bounds {
            p95_ms: 2000.0,
            failure_pct: 1.0,
            late_pct: 0.5,
        };
        let mut s = Summary {
            voice_to_voice_ms: stats::Dist::of(&[1000.0, 1500.0, 1900.0]),
            ..Summary::default()
        };
        assert!(step_held(&s, &b));
        s.unanswered_pct = 2.0;
        assert!(!step_held(&s, &b));
        s.unanswered_pct = 0.0;
        s.late_pct = 0.6;
        assert!(!step_held(&s, &b));
        s.late_pct = 0.0;
        s.voice_to_voice_ms = stats::Dist::of(&[1000.0, 3000.0]);
        assert!(!step_held(&s, &b));
        assert!(!step_held(&Summary::default(), &b), "no turns, no capacity");
    }
}
