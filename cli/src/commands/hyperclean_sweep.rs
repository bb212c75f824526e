//! `chronos-sync hyperclean-sweep --processes W [hyperclean flags]`: dense,
//! the seed's configuration and a grid of sparse configurations, each run
//! multi-process (`hyperclean --processes W`'s launcher), meant to be started
//! on the emulated network (`scripts/cluster 1gbit --no-mpi -- ...`). Prints
//! one table with the targets and writes sweep.json, sweep.svg and (built
//! with the `png` feature) sweep.png into --out.

use super::CliResult;
use super::hyperclean::{self, problem_spec, system_config};
use super::hyperclean_mp::{self, VariantChoice};
use crate::workload::problem::Problem;
use crate::workload::sweep::{SweepPoint, SweepRow, rows};
use crate::workload::sweep_plot;

/// Switches of the sweep that the ranks' `hyperclean` flags do not know.
pub const SWEEP_ONLY_SWITCHES: &[&str] = &["--quick"];

/// Arguments of `hyperclean-sweep`.
#[derive(Debug, clap::Args)]
#[command(about = "Test accuracy vs bytes over a grid of sync configurations, multi-process (Pareto plot)")]
// Its own argument-group id: the flattened `hyperclean::Args` already takes
// the default one (the struct name), and clap rejects the duplicate.
#[group(id = "hyperclean_sweep_args")]
pub struct Args {
    /// Five sparse points instead of the full grid (26).
    #[arg(long)]
    pub quick: bool,
    /// Every `hyperclean` flag (`--processes W` is required).
    #[command(flatten)]
    pub hyperclean: hyperclean::Args,
}

/// The two targets of issue 17 against what the sweep measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SweepTargets {
    /// Dense's final test accuracy.
    pub dense_test_accuracy: f64,
    /// Largest byte reduction vs dense among sparse rows within 0.5 point of dense's accuracy.
    pub best_reduction_within_half_point: Option<f64>,
    /// Its row.
    pub best_reduction_row: Option<String>,
    /// `>= 300x`.
    pub bytes_met: bool,
    /// Dense's time to its own final test accuracy, seconds.
    pub dense_time_to_accuracy_s: Option<f64>,
    /// Shortest sparse time to dense's final test accuracy, seconds.
    pub best_time_to_accuracy_s: Option<f64>,
    /// Its row.
    pub best_time_row: Option<String>,
    /// `dense / best` time.
    pub time_speedup: Option<f64>,
    /// `>= 3x`.
    pub time_met: bool,
    /// Dense's time to its final accuracy less 0.5 point, seconds.
    pub dense_time_to_near_s: Option<f64>,
    /// Shortest sparse time to that accuracy, seconds, and its row.
    pub best_time_to_near_s: Option<f64>,
    /// Its row.
    pub best_time_to_near_row: Option<String>,
    /// `dense / best` time to that accuracy (reported, not the target).
    pub time_to_near_speedup: Option<f64>,
}

/// Evaluates the targets on the rows (`rows[0]` is dense).
pub fn targets(rows: &[SweepRow]) -> SweepTargets {
    let dense = &rows[0];
    let sparse = || {
        rows.iter()
            .filter(|r| matches!(r.point, SweepPoint::Sparse { .. } | SweepPoint::Budget { .. } | SweepPoint::Seed))
    };
    let close = sparse()
        .filter(|r| r.test_accuracy >= dense.test_accuracy - 0.005)
        .map(|r| (dense.bytes_total as f64 / r.bytes_total.max(1) as f64, r))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let fastest = sparse().filter_map(|r| r.time_to_dense_s.map(|t| (t, r))).min_by(|a, b| a.0.total_cmp(&b.0));
    let speedup = match (dense.time_to_dense_s, fastest) {
        (Some(d), Some((t, _))) if t > 0.0 => Some(d / t),
        _ => None,
    };
    let fastest_near =
        sparse().filter_map(|r| r.time_to_near_dense_s.map(|t| (t, r))).min_by(|a, b| a.0.total_cmp(&b.0));
    let near_speedup = match (dense.time_to_near_dense_s, fastest_near) {
        (Some(d), Some((t, _))) if t > 0.0 => Some(d / t),
        _ => None,
    };
    SweepTargets {
        dense_test_accuracy: dense.test_accuracy,
        best_reduction_within_half_point: close.map(|c| c.0),
        best_reduction_row: close.map(|c| c.1.name.clone()),
        bytes_met: close.is_some_and(|c| c.0 >= 300.0),
        dense_time_to_accuracy_s: dense.time_to_dense_s,
        best_time_to_accuracy_s: fastest.map(|f| f.0),
        best_time_row: fastest.map(|f| f.1.name.clone()),
        time_speedup: speedup,
        time_met: speedup.is_some_and(|s| s >= 3.0),
        dense_time_to_near_s: dense.time_to_near_dense_s,
        best_time_to_near_s: fastest_near.map(|f| f.0),
        best_time_to_near_row: fastest_near.map(|f| f.1.name.clone()),
        time_to_near_speedup: near_speedup,
    }
}

fn render(rows: &[SweepRow], t: &SweepTargets) -> String {
    use std::fmt::Write;
    let dense = &rows[0];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<34} | {:>12} | {:>9} | {:>8} | {:>8} | {:>8} | {:>14} | {:>14} | pareto",
        "configuration", "bytes", "vs dense", "test acc", "vs dense", "wall s", "t to dense acc", "t to -0.5 pt"
    );
    let _ = writeln!(s, "{}", "-".repeat(139));
    for r in rows {
        let _ = writeln!(
            s,
            "{:<34} | {:>12} | {:>8.1}x | {:>7.2}% | {:>+6.2}pp | {:>8.2} | {:>14} | {:>14} | {}",
            r.name,
            r.bytes_total,
            dense.bytes_total as f64 / r.bytes_total.max(1) as f64,
            100.0 * r.test_accuracy,
            100.0 * (r.test_accuracy - dense.test_accuracy),
            r.wall_s,
            r.time_to_dense_s.map_or("never".into(), |t| format!("{t:.2} s")),
            r.time_to_near_dense_s.map_or("never".into(), |t| format!("{t:.2} s")),
            if r.pareto { "*" } else { "" }
        );
    }
    let met = |b: bool| if b { "met" } else { "NOT met" };
    let _ = writeln!(
        s,
        "target bytes: {} fewer than dense within 0.5 pt of its accuracy ({}) (>= 300x: {})",
        t.best_reduction_within_half_point.map_or("no row".into(), |v| format!("{v:.1}x")),
        t.best_reduction_row.as_deref().unwrap_or("-"),
        met(t.bytes_met)
    );
    let _ = writeln!(
        s,
        "target time: dense reaches its final test accuracy {:.2}% at {}; fastest configuration {} ({}): {} (>= 3x: {})",
        100.0 * t.dense_test_accuracy,
        t.dense_time_to_accuracy_s.map_or("never".into(), |v| format!("{v:.2} s")),
        t.best_time_to_accuracy_s.map_or("never".into(), |v| format!("{v:.2} s")),
        t.best_time_row.as_deref().unwrap_or("-"),
        t.time_speedup.map_or("no speed-up measurable".into(), |v| format!("{v:.2}x shorter")),
        met(t.time_met)
    );
    let _ = writeln!(
        s,
        "(for reference) time to dense's accuracy less 0.5 pt: dense {}, fastest {} ({}): {}",
        t.dense_time_to_near_s.map_or("never".into(), |v| format!("{v:.2} s")),
        t.best_time_to_near_s.map_or("never".into(), |v| format!("{v:.2} s")),
        t.best_time_to_near_row.as_deref().unwrap_or("-"),
        t.time_to_near_speedup.map_or("no speed-up measurable".into(), |v| format!("{v:.2}x shorter"))
    );
    s
}

/// Runs the sweep and writes the files.
pub fn run(args: &Args) -> CliResult {
    let hc = &args.hyperclean;
    let Some(w) = hc.processes else {
        return Err("hyperclean-sweep runs multi-process: pass --processes W".into());
    };
    let cfg = system_config(hc);
    let problem = Problem::digits(&problem_spec(hc))?;
    cfg.validate(problem.train.len())?;
    std::fs::create_dir_all(&hc.out).map_err(|e| format!("cannot create {}: {e}", hc.out.display()))?;
    let points = SweepPoint::grid(args.quick);
    let mut runs = Vec::with_capacity(points.len());
    for (i, point) in points.iter().enumerate() {
        let variant = point.variant();
        variant.sync.validate()?;
        let mut m = hyperclean_mp::run_variant(hc, &problem, &cfg, &variant, VariantChoice::Sweep(point.clone()))?;
        m.set_target(hc.target_val_loss);
        eprintln!(
            "[{}/{}] {}: {} bytes, test {:.2}%, {:.2} s",
            i + 1,
            points.len(),
            m.name,
            m.bytes_total,
            100.0 * m.test_accuracy,
            m.wall_s
        );
        runs.push(m);
    }
    let rows = rows(&points, &runs);
    let t = targets(&rows);
    println!(
        "hyper-cleaning sweep: {w} processes, {} parameters, {} rounds x {} inner steps + {} final steps",
        problem.param_len(),
        cfg.rounds,
        cfg.inner_steps,
        cfg.final_steps
    );
    print!("{}", render(&rows, &t));
    let title = format!("hyper-cleaning sweep, {w} processes: test accuracy vs bytes");
    let json = hc.out.join("sweep.json");
    let body =
        serde_json::json!({ "processes": w, "params": problem.param_len(), "rows": rows, "runs": runs, "targets": t });
    std::fs::write(&json, serde_json::to_vec_pretty(&body)?)
        .map_err(|e| format!("cannot write {}: {e}", json.display()))?;
    let svg = hc.out.join("sweep.svg");
    sweep_plot::write_svg(&rows, &title, &svg).map_err(|e| format!("cannot write {}: {e}", svg.display()))?;
    #[cfg(feature = "png")]
    {
        let png = hc.out.join("sweep.png");
        crate::workload::plot_png::write_png(&rows, &title, &png)
            .map_err(|e| format!("cannot write {}: {e}", png.display()))?;
        println!("wrote {}", png.display());
    }
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}
