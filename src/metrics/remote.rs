//! Remote inference (`serve --inference nats`) per role: how long a
//! worker took (ASR: the transcript; LLM: the first token; TTS: a piece's
//! audio; embed: a batch of a document's chunks) and why jobs failed.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use super::lag::LagHistogram;

/// The roles, in the order of their index (`remote::Role::index`).
pub const ROLES: [&str; 4] = ["asr", "llm", "tts", "embed"];

#[derive(Debug, Default)]
pub struct RemoteMetrics {
    latency: [LagHistogram; 4],
    /// (role, kind) → count; kinds are few and fixed (`no_workers`,
    /// `busy`, `lost`, `expired`, `failed`, `retried`).
    failures: Mutex<Vec<(usize, &'static str, u64)>>,
}

impl RemoteMetrics {
    pub fn observe(&self, role: usize, took: Duration) {
        if let Some(h) = self.latency.get(role) {
            h.observe(took);
        }
    }

    pub fn failure(&self, role: usize, kind: &'static str) {
        let Ok(mut f) = self.failures.lock() else {
            return;
        };
        match f.iter_mut().find(|(r, k, _)| *r == role && *k == kind) {
            Some(e) => e.2 += 1,
            None => f.push((role, kind, 1)),
        }
    }

    pub fn failures(&self, role: usize, kind: &str) -> u64 {
        self.failures.lock().map_or(0, |f| {
            f.iter()
                .find(|(r, k, _)| *r == role && *k == kind)
                .map_or(0, |e| e.2)
        })
    }

    pub fn render(&self, out: &mut String) {
        for (i, role) in ROLES.iter().enumerate() {
            self.latency[i].render(
                out,
                &format!("voxloop_remote_{role}_seconds"),
                &format!("Remote {role} jobs: from the request to the worker's result (LLM: its first token)."),
                &format!("voxloop_remote_{role}_max_seconds"),
            );
        }
        let name = "voxloop_remote_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} Remote inference jobs that failed, by role and kind (retried: given to a second worker).\n# TYPE {name} counter"
        );
        if let Ok(f) = self.failures.lock() {
            for (role, kind, n) in f.iter() {
                let role = ROLES.get(*role).copied().unwrap_or("?");
                let _ = writeln!(out, "{name}{{role=\"{role}\",kind=\"{kind}\"}} {n}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::parse_sample;

    #[test]
    fn failures_are_counted_by_role_and_kind() {
        let m = RemoteMetrics::default();
        m.failure(0, "lost");
        m.failure(0, "lost");
        m.failure(2, "busy");
        m.observe(1, Duration::from_millis(30));
        let mut text = String::new();
        m.render(&mut text);
        let s = |n: &str| parse_sample(&text, n);
        assert_eq!(
            s("voxloop_remote_failures_total{role=\"asr\",kind=\"lost\"}"),
            Some(2.0)
        );
        assert_eq!(
            s("voxloop_remote_failures_total{role=\"tts\",kind=\"busy\"}"),
            Some(1.0)
        );
        assert_eq!(s("voxloop_remote_llm_seconds_count"), Some(1.0));
        assert_eq!(m.failures(1, "lost"), 0);
    }
}
