//! The Markdown report of a run or a capacity search: summary tables and
//! links to the plots.

use std::fmt::Write as _;

use super::Mode;
use super::report::{CapacityRecord, RunRecord, STAGES, ms};
use super::stats::Dist;

fn dist_row(out: &mut String, name: &str, d: &Dist) {
    let _ = writeln!(
        out,
        "| {name} | {} | {} | {} | {} | {} | {} |",
        ms(d.p50),
        ms(d.p95),
        ms(d.p99),
        ms(d.mean),
        ms(d.max),
        d.n
    );
}

fn run_header(out: &mut String, r: &RunRecord) {
    let m = &r.machine;
    let load = |l: Option<f64>| l.map_or_else(|| "?".to_string(), |v| format!("{v:.2}"));
    let _ = writeln!(
        out,
        "- target: `{}`, mode `{}`\n- virtual users: {} (ramp {}/s), duration {:.0} s{}, think {:.1}–{:.1} s, seed {}\n- utterances: {} from `{}`\n- ran {:.1} s{}\n- machine: {} CPUs ({}), 1-min load average {} at start, {} at end{}\n- latency: last voiced sample sent → first voiced reply sample received, one monotonic clock, no jitter buffer (frames decoded on arrival); a frame counts late past {:.0} ms of jitter",
        r.url,
        r.mode.as_str(),
        r.sessions,
        r.ramp_per_s,
        r.duration_s,
        if r.max_turns > 0 {
            format!(", at most {} turns each", r.max_turns)
        } else {
            String::new()
        },
        r.think_s.0,
        r.think_s.1,
        r.seed,
        r.utterances,
        r.audio_dir,
        r.ran_s,
        if r.interrupted {
            " (interrupted by Ctrl-C)"
        } else {
            ""
        },
        m.cpus,
        if m.cpu_model.is_empty() {
            "unknown CPU"
        } else {
            &m.cpu_model
        },
        load(m.load_start),
        load(m.load_end),
        if m.load_start.is_some_and(|l| l > 0.5 * m.cpus as f64) {
            " — the machine was busy when the run started; figures are pessimistic"
        } else {
            ""
        },
        r.late_after_ms,
    );
}

fn summary_tables(out: &mut String, r: &RunRecord) {
    let s = &r.summary;
    let _ = writeln!(
        out,
        "\n## Turns\n\n| turns | replied | busy line | failed | failure % | unanswered % | sessions held / connected | connect failures |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {:.1} | {:.1} | {} / {} | {} |",
        s.turns,
        s.replied,
        s.busy,
        s.failed,
        s.failure_pct,
        s.unanswered_pct,
        s.sessions_held,
        s.sessions_connected,
        s.connect_failures
    );
    if !s.errors.is_empty() {
        let list: Vec<String> = s.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(out, "\nErrors by kind: {}.", list.join(", "));
    }
    let _ = writeln!(
        out,
        "\n## Latency (ms)\n\n| measure | p50 | p95 | p99 | mean | max | n |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let v2v_name = match r.mode {
        Mode::Conversation | Mode::Listen => "**voice-to-voice** (replied turns)",
        Mode::Media => "**echo round trip** (voice-to-voice)",
    };
    dist_row(out, v2v_name, &s.voice_to_voice_ms);
    if s.busy_voice_to_voice_ms.n > 0 {
        dist_row(out, "voice-to-voice, busy line", &s.busy_voice_to_voice_ms);
    }
    for (name, what) in STAGES {
        if let Some(d) = s.stages_ms.get(name) {
            dist_row(out, what, d);
        }
    }
    dist_row(out, "connect (socket → media flowing)", &s.connect_ms);
    if s.wer_pct.n > 0 {
        let _ = writeln!(
            out,
            "\n## Accuracy\n\nASR word error rate of the server's transcript against the reference, per turn: mean {:.1} %, p95 {:.1} %, max {:.1} % over {} turns.",
            s.wer_pct.mean.unwrap_or(0.0),
            s.wer_pct.p95.unwrap_or(0.0),
            s.wer_pct.max.unwrap_or(0.0),
            s.wer_pct.n
        );
    }
    let g = &s.glitches;
    let _ = writeln!(
        out,
        "\n## Received audio\n\n| frames | late | late % | lost | gaps | glitches | glitches / min |\n|---:|---:|---:|---:|---:|---:|---:|\n| {} | {} | {:.2} | {} | {} | {} | {:.2} |",
        g.frames, g.late_frames, s.late_pct, g.lost_frames, g.gaps, g.glitches, s.glitches_per_min
    );
    if let Some(sv) = &r.server {
        let opt =
            |v: Option<f64>, d: usize| v.map_or_else(|| "-".to_string(), |x| format!("{x:.d$}"));
        let _ = writeln!(
            out,
            "\n## Server (`/metrics`, {:.0} s after the ramp, {:.1} sessions on average)\n\n| CPU % of a core | CPU % per session | RSS MB | frames out | late frames out | late % | skipped | inbound dropped | busy lines |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} |",
            sv.window_s,
            sv.mean_sessions,
            opt(sv.cpu_pct, 1),
            opt(sv.cpu_per_session_pct, 2),
            opt(sv.rss_mb, 0),
            sv.frames_out,
            sv.late_frames_out,
            sv.late_pct,
            sv.skipped_frames_out,
            sv.inbound_dropped,
            sv.busy_replies
        );
        if let Some(mean) = sv.vad_lag_mean_ms {
            let _ = writeln!(
                out,
                "\nVAD lag (how far voice activity detection ran behind the audio): mean {mean:.1} ms, {} % of batches over 100 ms; largest since the server started {} ms.",
                opt(sv.vad_lag_over_100ms_pct, 2),
                opt(sv.vad_lag_max_ms, 0)
            );
        }
        if let Some(c) = r.client_cpu_per_session_pct {
            let _ = writeln!(
                out,
                "\nThe load tester itself used {c:.2} % of a core per session over the same window (same machine)."
            );
        }
    }
}

/// The Markdown report of one run; `plots` are file names beside it.
pub fn markdown(r: &RunRecord, plots: &[String]) -> String {
    let mut out = String::from("# voxloop load test\n\n");
    run_header(&mut out, r);
    summary_tables(&mut out, r);
    plot_links(&mut out, plots);
    out
}

fn plot_links(out: &mut String, plots: &[String]) {
    if plots.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Plots\n");
    for p in plots {
        let _ = writeln!(out, "![{p}]({p})\n");
    }
}

/// The Markdown report of `--find-capacity`.
pub fn capacity_markdown(c: &CapacityRecord, plots: &[String]) -> String {
    let mut out = String::from("# voxloop capacity\n\n");
    let _ = writeln!(
        out,
        "A step holds when p95 voice-to-voice of the turns started after its ramp is at most {:.0} ms and failures are at most {:.1} % (busy-line turns count as failures here){}. Sessions double until a step fails, then bisect.\n\n**Capacity: {} sessions.**\n\n| sessions | held | turns | p50 ms | p95 ms | p99 ms | failure % | unanswered % | late frames % | server CPU % | server late % |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        c.bounds.p95_ms,
        c.bounds.failure_pct,
        if c.bounds.late_pct < 100.0 {
            format!(
                ", and late received frames at most {:.2} %",
                c.bounds.late_pct
            )
        } else {
            String::new()
        },
        c.capacity
    );
    for s in &c.steps {
        let v = &s.steady.voice_to_voice_ms;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.2} | {} | {} |",
            s.sessions,
            if s.held { "yes" } else { "no" },
            s.steady.turns,
            ms(v.p50),
            ms(v.p95),
            ms(v.p99),
            s.steady.failure_pct,
            s.steady.unanswered_pct,
            s.steady.late_pct,
            s.server
                .and_then(|x| x.cpu_pct)
                .map_or_else(|| "-".into(), |x| format!("{x:.0}")),
            s.server
                .map_or_else(|| "-".into(), |x| format!("{:.2}", x.late_pct)),
        );
    }
    if let Some(r) = c.shown_run() {
        let _ = writeln!(out, "\n## The step at {} sessions\n", r.sessions);
        run_header(&mut out, r);
        summary_tables(&mut out, r);
    }
    plot_links(&mut out, plots);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::report::{Outcome, Summary, test_turn as turn};

    #[test]
    fn markdown_has_the_tables_and_plots() {
        let r = RunRecord {
            url: "http://127.0.0.1:1".into(),
            summary: Summary::of(&[turn(Outcome::Replied, Some(1200.0), Some(0.0))], &[]),
            ..Default::default()
        };
        let md = markdown(&r, &["latency_histogram.svg".into()]);
        assert!(
            md.contains("| **voice-to-voice** (replied turns) | 1200 |"),
            "{md}"
        );
        assert!(md.contains("![latency_histogram.svg](latency_histogram.svg)"));
        assert!(md.contains("ASR after end of turn"));
    }
}
