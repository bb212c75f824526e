//! The results of a `hyperclean` run: one text table, an SVG plot of test
//! accuracy against bytes communicated, and a JSON file of the same figures.

use std::fmt::Write as _;
use std::path::Path;

use super::problem::Baseline;
use super::system::{MODEL_LATENCY_S, RunMetrics};

/// Everything the three runs and the baselines produced.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// Training / validation / test sizes and corrupted labels.
    pub problem: ProblemSummary,
    /// One entry per variant, in the order run.
    pub runs: Vec<RunMetrics>,
    /// Single-process baselines.
    pub baselines: Vec<Baseline>,
    /// The wall-clock model, in words.
    pub comm_model: String,
    /// The issue's targets, evaluated on `runs` (first = dense, last = best).
    pub targets: Targets,
}

/// Sizes of the problem.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProblemSummary {
    /// Training examples.
    pub train: usize,
    /// Validation examples.
    pub val: usize,
    /// Test examples.
    pub test: usize,
    /// Corrupted training labels.
    pub flipped: usize,
    /// Inner model parameters.
    pub params: usize,
    /// Seed of the split and corruption.
    pub seed: u64,
}

/// The targets of the issue, as measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Targets {
    /// Dense bytes / best bytes (target >= 10).
    pub byte_reduction: f64,
    /// Best test accuracy - dense test accuracy, in points (target >= -0.5).
    pub accuracy_gap_points: f64,
    /// Best test accuracy - noisy-label baseline test accuracy, in points (target >= 3).
    pub gain_over_noisy_points: f64,
    /// All three targets met.
    pub met: bool,
    /// The honesty check of every run (issue 17, item 3), in run order.
    pub honest: Vec<Honesty>,
}

/// One run against the baselines: is learning the weights worth it?
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Honesty {
    /// Variant name.
    pub name: String,
    /// The best test accuracy of a baseline that does not see the clean labels.
    pub best_fair_baseline: f64,
    /// Run test accuracy - `best_fair_baseline`, in points (target > 0).
    pub margin_points: f64,
    /// `(run - noisy) / (oracle - noisy)` in test accuracy (target >= 0.5).
    pub way_to_oracle: f64,
    /// Both targets met.
    pub met: bool,
}

impl Honesty {
    /// Scores `run` against `baselines` (the first is the noisy-label one; the
    /// oracle is the one that sees the clean labels).
    pub fn evaluate(run: &RunMetrics, baselines: &[Baseline]) -> Honesty {
        let best_fair_baseline = baselines
            .iter()
            .filter(|b| !b.sees_clean_labels)
            .map(|b| b.test_accuracy)
            .fold(f64::NEG_INFINITY, f64::max);
        let noisy = baselines.first().map_or(0.0, |b| b.test_accuracy);
        let oracle = baselines.iter().find(|b| b.sees_clean_labels).map_or(1.0, |b| b.test_accuracy);
        let margin_points = 100.0 * (run.test_accuracy - best_fair_baseline);
        let gap = oracle - noisy;
        let way_to_oracle = if gap > 0.0 { (run.test_accuracy - noisy) / gap } else { 0.0 };
        Honesty {
            name: run.name.clone(),
            best_fair_baseline,
            margin_points,
            way_to_oracle,
            met: margin_points > 0.0 && way_to_oracle >= 0.5,
        }
    }
}

/// Describes the communication model behind the modeled wall-clock columns.
pub fn comm_model_text() -> String {
    format!(
        "modeled wall-clock = measured wall-clock - time inside SparseSync::step (least over ranks) \
         + sum over collective calls of ({:.0} us latency + bytes received by one rank / link bandwidth); \
         one vote per step, count exchange + payload all-gather per sync",
        MODEL_LATENCY_S * 1e6
    )
}

impl Targets {
    /// Evaluates the targets with `runs[0]` as dense and `runs.last()` as the best configuration.
    pub fn evaluate(runs: &[RunMetrics], baselines: &[Baseline]) -> Targets {
        let (Some(dense), Some(best)) = (runs.first(), runs.last()) else {
            return Targets {
                byte_reduction: 0.0,
                accuracy_gap_points: 0.0,
                gain_over_noisy_points: 0.0,
                met: false,
                honest: Vec::new(),
            };
        };
        let noisy = baselines.first().map_or(0.0, |b| b.test_accuracy);
        let byte_reduction = dense.bytes_total as f64 / best.bytes_total.max(1) as f64;
        let accuracy_gap_points = 100.0 * (best.test_accuracy - dense.test_accuracy);
        let gain_over_noisy_points = 100.0 * (best.test_accuracy - noisy);
        Targets {
            byte_reduction,
            accuracy_gap_points,
            gain_over_noisy_points,
            met: byte_reduction >= 10.0 && accuracy_gap_points >= -0.5 && gain_over_noisy_points >= 3.0,
            honest: runs.iter().map(|m| Honesty::evaluate(m, baselines)).collect(),
        }
    }
}

/// Bytes with a binary-prefix unit.
pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.2} {}", units[u]) }
}

fn staleness_text(h: &std::collections::BTreeMap<u64, u64>) -> String {
    if h.is_empty() {
        return "-".into();
    }
    h.iter().map(|(s, c)| format!("{s}:{c}")).collect::<Vec<_>>().join(" ")
}

/// The table, one column per run, one row per figure, then the baselines,
/// the targets and the model statement.
pub fn render_table(r: &Report) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let col = |f: &dyn Fn(&RunMetrics) -> String| r.runs.iter().map(f).collect::<Vec<_>>();
    rows.push(("bytes on the wire (total)".into(), col(&|m| human_bytes(m.bytes_total))));
    rows.push(("bytes per worker".into(), col(&|m| human_bytes(m.bytes_total / m.workers.max(1) as u64))));
    rows.push(("vs dense".into(), {
        let dense = r.runs.first().map_or(1, |d| d.bytes_total.max(1));
        col(&|m| format!("{:.1}x fewer", dense as f64 / m.bytes_total.max(1) as f64))
    }));
    rows.push(("collective calls (per rank)".into(), col(&|m| m.collective_calls.to_string())));
    rows.push(("inner steps".into(), col(&|m| m.steps.to_string())));
    rows.push(("syncs triggered / forced".into(), col(&|m| format!("{} / {}", m.syncs_triggered, m.syncs_forced))));
    rows.push(("outer steps".into(), col(&|m| m.outer_steps.to_string())));
    rows.push(("commits accepted / rejected".into(), col(&|m| format!("{} / {}", m.accepted, m.rejected))));
    rows.push(("staleness histogram (s:count)".into(), col(&|m| staleness_text(&m.staleness))));
    rows.push(("backpressure skips".into(), col(&|m| m.backpressure.to_string())));
    rows.push(("CG iterations per hypergradient".into(), col(&|m| format!("{:.1}", m.cg_iterations_mean))));
    rows.push(("measured wall-clock".into(), col(&|m| format!("{:.2} s", m.wall_s))));
    rows.push(("modeled wall-clock @ 10 Gb/s".into(), col(&|m| format!("{:.2} s", m.modeled_10g_s))));
    rows.push(("modeled wall-clock @ 100 Gb/s".into(), col(&|m| format!("{:.2} s", m.modeled_100g_s))));
    rows.push((
        "outer updates (lambda / log mu)".into(),
        col(&|m| {
            let count = |i: usize| m.timescale_updates.iter().find(|t| t.0 == i).map(|t| t.2);
            let lambda = count(0).map_or("-".into(), |u| u.to_string());
            match m.timescale_updates.get(1) {
                Some(&(_, every, u)) => format!("{lambda} / {u} (every {every})"),
                None => format!("{lambda} / fixed"),
            }
        }),
    ));
    rows.push(("mu (end of rounds / final fit)".into(), col(&|m| format!("{:.2e} / {:.2e}", m.mu_rounds, m.mu_final))));
    rows.push((
        "outer steps to target val loss".into(),
        col(&|m| match m.outer_steps_to_target {
            Some(s) => format!("{s} (<= {})", m.target_val_loss),
            None => format!("never (<= {})", m.target_val_loss),
        }),
    ));
    rows.push(("final val loss".into(), col(&|m| format!("{:.4}", m.val_loss))));
    rows.push(("validation accuracy".into(), col(&|m| format!("{:.2} %", 100.0 * m.val_accuracy))));
    rows.push(("test accuracy".into(), col(&|m| format!("{:.2} %", 100.0 * m.test_accuracy))));
    rows.push((
        "flipped-label F1 (P / R)".into(),
        col(&|m| format!("{:.3} ({:.2} / {:.2})", m.detection.f1, m.detection.precision, m.detection.recall)),
    ));

    let label_w = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..r.runs.len())
        .map(|c| rows.iter().map(|(_, v)| v[c].len()).chain([r.runs[c].name.len()]).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let p = &r.problem;
    let _ = writeln!(
        out,
        "hyper-cleaning: digits {} train ({} labels flipped) / {} val / {} test, softmax on {} parameters, seed {}",
        p.train, p.flipped, p.val, p.test, p.params, p.seed
    );
    let _ = write!(out, "{:label_w$}", "");
    for (c, m) in r.runs.iter().enumerate() {
        let _ = write!(out, " | {:>w$}", m.name, w = widths[c]);
    }
    out.push('\n');
    let total_w = label_w + widths.iter().map(|w| w + 3).sum::<usize>();
    out.push_str(&"-".repeat(total_w));
    out.push('\n');
    for (label, vals) in &rows {
        let _ = write!(out, "{label:label_w$}");
        for (c, v) in vals.iter().enumerate() {
            let _ = write!(out, " | {v:>w$}", w = widths[c]);
        }
        out.push('\n');
    }
    out.push_str(&"-".repeat(total_w));
    out.push('\n');
    let _ = writeln!(out, "baselines (single process, same model and mu):");
    for b in &r.baselines {
        let _ = writeln!(
            out,
            "  {:<44} val {:6.2} %   test {:6.2} %",
            b.name,
            100.0 * b.val_accuracy,
            100.0 * b.test_accuracy
        );
    }
    let t = &r.targets;
    let _ = writeln!(
        out,
        "targets: bytes {:.1}x fewer than dense (>= 10x: {}), test accuracy {:+.2} pp vs dense (>= -0.5: {}), \
         {:+.2} pp vs noisy labels (>= 3: {})",
        t.byte_reduction,
        yes(t.byte_reduction >= 10.0),
        t.accuracy_gap_points,
        yes(t.accuracy_gap_points >= -0.5),
        t.gain_over_noisy_points,
        yes(t.gain_over_noisy_points >= 3.0)
    );
    for h in &t.honest {
        let _ = writeln!(
            out,
            "honest ({}): {:+.2} pp vs the best baseline without clean labels (> 0: {}), {:.0} % of the way \
             from noisy labels to the oracle (>= 50 %: {})",
            h.name,
            h.margin_points,
            yes(h.margin_points > 0.0),
            100.0 * h.way_to_oracle,
            yes(h.way_to_oracle >= 0.5)
        );
    }
    let _ = writeln!(out, "bytes: each rank's packed buffers counted once, plus votes and counts");
    let _ = writeln!(out, "{}", r.comm_model);
    out
}

fn yes(b: bool) -> &'static str {
    if b { "met" } else { "NOT met" }
}

/// Writes the report as pretty JSON.
pub fn write_json(r: &Report, path: &Path) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(r).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// Writes an SVG plot: test accuracy (%) against bytes on the wire (log
/// scale), one point per run, the baselines as horizontal lines.
pub fn write_svg(r: &Report, path: &Path) -> std::io::Result<()> {
    use plotters::prelude::*;
    let other = std::io::Error::other;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| other(e.to_string()))?;
    let max_b = r.runs.iter().map(|m| m.bytes_total).max().unwrap_or(1).max(1) as f64;
    let min_b = r.runs.iter().map(|m| m.bytes_total).min().unwrap_or(1).max(1) as f64;
    let accs = r.runs.iter().map(|m| m.test_accuracy).chain(r.baselines.iter().map(|b| b.test_accuracy));
    let lo = accs.clone().fold(f64::INFINITY, f64::min) * 100.0;
    let hi = accs.fold(f64::NEG_INFINITY, f64::max) * 100.0;
    let (lo, hi) = ((lo - 2.0).floor(), (hi + 2.0).ceil().min(100.0));
    let x_range = (min_b / 3.0)..(max_b * 3.0);
    let mut chart = ChartBuilder::on(&root)
        .caption("hyper-cleaning on digits: test accuracy vs bytes communicated", ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range.clone().log_scale(), lo..hi)
        .map_err(|e| other(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("bytes on the wire (total, log scale)")
        .y_desc("test accuracy (%)")
        .x_label_formatter(&|v| human_bytes(*v as u64))
        .draw()
        .map_err(|e| other(e.to_string()))?;
    let palette = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (i, b) in r.baselines.iter().enumerate() {
        let y = 100.0 * b.test_accuracy;
        let color = palette[(i + 3) % palette.len()].mix(0.6);
        chart
            .draw_series(LineSeries::new(vec![(x_range.start, y), (x_range.end, y)], color.stroke_width(1)))
            .map_err(|e| other(e.to_string()))?
            .label(format!("baseline: {}", b.name))
            .legend(move |(x, y0)| PathElement::new(vec![(x, y0), (x + 18, y0)], color));
    }
    for (i, m) in r.runs.iter().enumerate() {
        let color = palette[i % palette.len()];
        let pt = (m.bytes_total.max(1) as f64, 100.0 * m.test_accuracy);
        chart
            .draw_series(std::iter::once(Circle::new(pt, 6, color.filled())))
            .map_err(|e| other(e.to_string()))?
            .label(m.name.clone())
            .legend(move |(x, y0)| Circle::new((x + 9, y0), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| other(e.to_string()))?;
    root.present().map_err(|e| other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(name: &str, test_accuracy: f64, sees_clean_labels: bool) -> Baseline {
        Baseline { name: name.into(), val_accuracy: 0.0, test_accuracy, sees_clean_labels }
    }

    #[test]
    fn honesty_compares_with_the_best_fair_baseline_and_the_oracle() {
        let baselines = [
            baseline("noisy", 0.80, false),
            baseline("val only", 0.90, false),
            baseline("noisy + val", 0.88, false),
            baseline("oracle", 1.00, true),
        ];
        let run = |acc| RunMetrics { name: "r".into(), test_accuracy: acc, ..RunMetrics::default() };
        let h = Honesty::evaluate(&run(0.92), &baselines);
        assert!((h.best_fair_baseline - 0.90).abs() < 1e-12, "the oracle is not a fair baseline");
        assert!((h.margin_points - 2.0).abs() < 1e-9);
        assert!((h.way_to_oracle - 0.6).abs() < 1e-9);
        assert!(h.met);
        // Half way but below the validation-only baseline: not met.
        let strong = [baseline("noisy", 0.80, false), baseline("val only", 0.93, false), baseline("oracle", 1.0, true)];
        let below = Honesty::evaluate(&run(0.91), &strong);
        assert!(below.way_to_oracle >= 0.5 && below.margin_points < 0.0 && !below.met, "{below:?}");
        // Above every fair baseline but less than half way to the oracle: not met.
        let weak = [baseline("noisy", 0.80, false), baseline("val only", 0.82, false), baseline("oracle", 1.0, true)];
        let short = Honesty::evaluate(&run(0.85), &weak);
        assert!(short.margin_points > 0.0 && short.way_to_oracle < 0.5 && !short.met, "{short:?}");
    }
}
