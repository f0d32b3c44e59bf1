//! SVG plots of a load test with `plotters` (SVG backend only, no font
//! files: the viewer renders the text). Small files that can be committed
//! beside the benchmark notes.

use std::path::Path;

use plotters::prelude::*;

use super::report::{CapacityRecord, Outcome, RunRecord};
use super::stats::percentile;

/// A plot could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("plot {path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

const SIZE: (u32, u32) = (900, 420);
const FONT: &str = "sans-serif";
const ORANGE: RGBColor = RGBColor(230, 140, 20);
const GREEN_LINE: RGBColor = RGBColor(40, 150, 60);

fn err(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |message| PlotError {
        path: path.display().to_string(),
        message,
    }
}

/// Voice-to-voice of each turn against its start time, with the number of
/// sessions connected on a second axis: shows latency growing with load.
pub fn latency_over_time(run: &RunRecord, path: &Path) -> Result<(), PlotError> {
    draw_latency_over_time(run, path).map_err(err(path))
}

fn draw_latency_over_time(run: &RunRecord, path: &Path) -> Result<(), String> {
    let points = |o: Outcome| -> Vec<(f64, f64)> {
        run.turns
            .iter()
            .filter(|t| t.outcome == o)
            .filter_map(|t| Some((t.t_start_s, t.voice_to_voice_ms? / 1000.0)))
            .collect()
    };
    let replied = points(Outcome::Replied);
    let busy = points(Outcome::Busy);
    let failed: Vec<f64> = run
        .turns
        .iter()
        .filter(|t| t.outcome == Outcome::Failed)
        .map(|t| t.t_start_s)
        .collect();
    let x_max = run
        .concurrency
        .last()
        .map(|c| c.0)
        .unwrap_or(0.0)
        .max(run.ran_s)
        .max(1.0);
    let y_max = replied
        .iter()
        .chain(&busy)
        .map(|p| p.1)
        .fold(1.0f64, f64::max)
        * 1.15;
    let s_max = run
        .concurrency
        .iter()
        .map(|c| c.1)
        .max()
        .unwrap_or(0)
        .max(run.sessions) as f64
        + 1.0;

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Voice-to-voice latency over time ({} mode, {} users)",
                run.mode.as_str(),
                run.sessions
            ),
            (FONT, 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .right_y_label_area_size(55)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| e.to_string())?
        .set_secondary_coord(0f64..x_max, 0f64..s_max);
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("voice-to-voice (s)")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .configure_secondary_axes()
        .y_desc("sessions connected")
        .draw()
        .map_err(|e| e.to_string())?;
    // Sessions as a step line.
    let mut steps: Vec<(f64, f64)> = Vec::new();
    for (t, n) in &run.concurrency {
        if let Some(&(_, prev)) = steps.last() {
            steps.push((*t, prev));
        }
        steps.push((*t, *n as f64));
    }
    chart
        .draw_secondary_series(LineSeries::new(steps, GREEN_LINE.stroke_width(2)))
        .map_err(|e| e.to_string())?
        .label("sessions connected")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], GREEN_LINE.stroke_width(2)));
    chart
        .draw_series(
            replied
                .iter()
                .map(|&p| Circle::new(p, 3, BLUE.mix(0.7).filled())),
        )
        .map_err(|e| e.to_string())?
        .label("replied")
        .legend(|(x, y)| Circle::new((x + 9, y), 3, BLUE.filled()));
    if !busy.is_empty() {
        chart
            .draw_series(
                busy.iter()
                    .map(|&p| TriangleMarker::new(p, 5, ORANGE.filled())),
            )
            .map_err(|e| e.to_string())?
            .label("busy line")
            .legend(|(x, y)| TriangleMarker::new((x + 9, y), 5, ORANGE.filled()));
    }
    if !failed.is_empty() {
        chart
            .draw_series(
                failed
                    .iter()
                    .map(|&t| Cross::new((t, y_max * 0.97), 5, RED.stroke_width(2))),
            )
            .map_err(|e| e.to_string())?
            .label("failed (no latency)")
            .legend(|(x, y)| Cross::new((x + 9, y), 5, RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// A bin width from 1-2-5 steps that gives about `target` bins over `span`.
pub fn bin_width(span: f64, target: usize) -> f64 {
    let raw = (span / target.max(1) as f64).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|w| *w >= raw)
        .unwrap_or(10.0 * mag)
}

/// Histogram of voice-to-voice over replied turns, with p50 and p95 marked.
pub fn latency_histogram(run: &RunRecord, path: &Path) -> Result<(), PlotError> {
    draw_latency_histogram(run, path).map_err(err(path))
}

fn draw_latency_histogram(run: &RunRecord, path: &Path) -> Result<(), String> {
    let v: Vec<f64> = run
        .turns
        .iter()
        .filter(|t| t.outcome == Outcome::Replied)
        .filter_map(|t| t.voice_to_voice_ms)
        .collect();
    let max = v.iter().copied().fold(0.0f64, f64::max);
    let width = bin_width(max, 25);
    let bins = ((max / width).floor() as usize + 1).max(1);
    let mut counts = vec![0u32; bins];
    for x in &v {
        let i = ((x / width).floor() as usize).min(bins - 1);
        counts[i] += 1;
    }
    let x_max = bins as f64 * width;
    // Whole turns on the axis: an integer top and at most one label per turn.
    let y_max = (f64::from(counts.iter().copied().max().unwrap_or(0)) * 1.2)
        .ceil()
        .max(1.0);

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Voice-to-voice latency, {} replied turns ({} users)",
                v.len(),
                run.sessions
            ),
            (FONT, 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(format!("voice-to-voice (ms), {width:.0} ms bins"))
        .y_desc("turns")
        .y_labels((y_max as usize + 1).min(11))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| {
                    let x0 = i as f64 * width;
                    Rectangle::new(
                        [(x0 + width * 0.05, 0.0), (x0 + width * 0.95, f64::from(*c))],
                        BLUE.mix(0.6).filled(),
                    )
                }),
        )
        .map_err(|e| e.to_string())?;
    for (q, name, color) in [(0.5, "p50", GREEN_LINE), (0.95, "p95", ORANGE)] {
        if let Some(p) = percentile(&v, q) {
            chart
                .draw_series(LineSeries::new(
                    vec![(p, 0.0), (p, y_max)],
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(format!("{name} {p:.0} ms"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// p50 and p95 voice-to-voice per `--find-capacity` step, with the bound.
pub fn capacity(c: &CapacityRecord, path: &Path) -> Result<(), PlotError> {
    draw_capacity(c, path).map_err(err(path))
}

fn draw_capacity(c: &CapacityRecord, path: &Path) -> Result<(), String> {
    // (sessions, p50, p95) by session count.
    let mut steps: Vec<(usize, Option<f64>, Option<f64>)> = c
        .steps
        .iter()
        .map(|s| {
            let v = &s.steady.voice_to_voice_ms;
            (s.sessions, v.p50, v.p95)
        })
        .collect();
    steps.sort_by_key(|s| s.0);
    let x_max = steps.iter().map(|s| s.0).max().unwrap_or(1) as f64 + 1.0;
    let y_max = steps
        .iter()
        .filter_map(|s| s.2)
        .fold(c.bounds.p95_ms, f64::max)
        * 1.15
        / 1000.0;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Voice-to-voice by concurrent sessions (capacity {})",
                c.capacity
            ),
            (FONT, 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("concurrent sessions")
        .y_desc("voice-to-voice (s)")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    let bound = c.bounds.p95_ms / 1000.0;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, bound), (x_max, bound)],
            RED.mix(0.6).stroke_width(1),
        ))
        .map_err(|e| e.to_string())?
        .label(format!("p95 bound {:.1} s", bound))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.mix(0.6)));
    let p50: Vec<(f64, f64)> = steps
        .iter()
        .filter_map(|s| Some((s.0 as f64, s.1? / 1000.0)))
        .collect();
    let p95: Vec<(f64, f64)> = steps
        .iter()
        .filter_map(|s| Some((s.0 as f64, s.2? / 1000.0)))
        .collect();
    for (pts, name, color) in [(p50, "p50", GREEN_LINE), (p95, "p95", ORANGE)] {
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::report::TurnRecord;

    #[test]
    fn bin_widths_are_round() {
        assert_eq!(bin_width(2500.0, 25), 100.0);
        assert_eq!(bin_width(3100.0, 25), 200.0);
        assert_eq!(bin_width(9000.0, 25), 500.0);
        assert_eq!(bin_width(0.0, 25), 1.0);
    }

    #[test]
    fn plots_are_svg_files() {
        let dir = std::env::temp_dir().join(format!("voxloop-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = RunRecord {
            sessions: 2,
            ran_s: 10.0,
            concurrency: vec![(0.0, 1), (1.0, 2), (9.0, 2)],
            turns: (0..8)
                .map(|i| TurnRecord {
                    t_start_s: f64::from(i),
                    voice_to_voice_ms: Some(900.0 + 100.0 * f64::from(i)),
                    outcome: if i == 3 {
                        Outcome::Busy
                    } else {
                        Outcome::Replied
                    },
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let a = dir.join("a.svg");
        let b = dir.join("b.svg");
        latency_over_time(&run, &a).unwrap();
        latency_histogram(&run, &b).unwrap();
        for p in [&a, &b] {
            let svg = std::fs::read_to_string(p).unwrap();
            assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
            assert!(svg.contains("voice-to-voice"));
        }
        // An empty run still draws (an all-failed run must still get a report).
        let empty = RunRecord::default();
        latency_histogram(&empty, &b).unwrap();
        latency_over_time(&empty, &a).unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }
}
