//! The grid of `chronos-sync hyperclean-sweep`: dense, the seed's
//! configuration and sparse configurations (threshold x selection rule x
//! wire dtype), as plain serializable points that every rank of a
//! multi-process run turns into the same [`Variant`]; and what the sweep
//! derives from each run (bytes, accuracy, wall-clock, time to dense's final
//! test accuracy, the Pareto front).

use super::metrics::RunMetrics;
use super::system::{OuterMode, Variant};
use super::variants;
use chronos_sync::config::{Selection, SyncConfig, WireDtype};

/// A selection rule of a sweep point.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SelectionPoint {
    /// `Selection::TopK { ratio }`.
    TopK(f64),
    /// `Selection::TopKApprox { ratio, slack: 0.1 }`.
    TopKApprox(f64),
    /// `Selection::Threshold { rel }`.
    Threshold(f64),
}

/// A wire dtype of a sweep point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DtypePoint {
    /// f32 values.
    F32,
    /// f16 values.
    F16,
    /// bf16 values.
    Bf16,
}

/// One configuration of the sweep.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SweepPoint {
    /// `variants::dense()`.
    Dense,
    /// `variants::seed()`.
    Seed,
    /// The seed's bounded asynchrony with this inner sync configuration.
    Sparse {
        /// Significance threshold after the warm-up.
        threshold: f64,
        /// Selection rule.
        selection: SelectionPoint,
        /// Wire dtype.
        dtype: DtypePoint,
    },
    /// The seed's bounded asynchrony, the threshold in budget mode steered
    /// toward a sync rate (`SyncConfig::budget`).
    Budget {
        /// Target fraction of steps that sync.
        sync_rate: f64,
        /// Selection rule.
        selection: SelectionPoint,
        /// Wire dtype.
        dtype: DtypePoint,
    },
}

impl SweepPoint {
    /// The variant this point stands for (validated by the run).
    pub fn variant(&self) -> Variant {
        match *self {
            SweepPoint::Dense => variants::dense(),
            SweepPoint::Seed => variants::seed(),
            SweepPoint::Budget { sync_rate, selection, dtype } => {
                let mut v =
                    SweepPoint::Sparse { threshold: SyncConfig::default().threshold, selection, dtype }.variant();
                v.sync = variants::with_sync_rate_budget(v.sync, sync_rate);
                v.name = format!("{} budget {}%", v.name.split(" tau=").next().unwrap_or_default(), sync_rate * 100.0);
                v
            }
            SweepPoint::Sparse { threshold, selection, dtype } => {
                let base = SyncConfig::default();
                let (selection, rule) = match selection {
                    SelectionPoint::TopK(ratio) => (Selection::TopK { ratio }, format!("top-{}%", ratio * 100.0)),
                    SelectionPoint::TopKApprox(ratio) => {
                        (Selection::TopKApprox { ratio, slack: 0.1 }, format!("approx top-{}%", ratio * 100.0))
                    }
                    SelectionPoint::Threshold(rel) => (Selection::Threshold { rel }, format!("|x| >= {rel} rms")),
                };
                let (wire_dtype, dt) = match dtype {
                    DtypePoint::F32 => (WireDtype::F32, "f32"),
                    DtypePoint::F16 => (WireDtype::F16, "f16"),
                    DtypePoint::Bf16 => (WireDtype::Bf16, "bf16"),
                };
                let sync = SyncConfig {
                    threshold,
                    max_threshold: base.max_threshold.max(threshold),
                    min_threshold: base.min_threshold.min(threshold),
                    selection,
                    wire_dtype,
                    ..base
                };
                let outer = variants::seed().outer;
                debug_assert!(matches!(outer, OuterMode::BoundedAsync { .. }));
                Variant { name: format!("{rule} {dt} tau={threshold}"), sync, outer }
            }
        }
    }

    /// The sweep's grid: dense, the seed, thresholds x rules x dtypes, then
    /// budget-mode points (kept small enough for 2 cores: 2 x 4 x 3 = 24
    /// fixed-threshold points and 2 budgeted ones; with `quick`, 4 and 1).
    pub fn grid(quick: bool) -> Vec<SweepPoint> {
        let mut points = vec![SweepPoint::Dense, SweepPoint::Seed];
        let (thresholds, rules, dtypes): (&[f64], &[SelectionPoint], &[DtypePoint]) = if quick {
            (
                &[0.3],
                &[SelectionPoint::TopKApprox(0.02), SelectionPoint::TopK(0.005)],
                &[DtypePoint::F32, DtypePoint::Bf16],
            )
        } else {
            (
                &[0.3, 1.0],
                &[
                    SelectionPoint::TopK(0.01),
                    SelectionPoint::TopKApprox(0.005),
                    SelectionPoint::TopKApprox(0.001),
                    SelectionPoint::Threshold(3.0),
                ],
                &[DtypePoint::F32, DtypePoint::F16, DtypePoint::Bf16],
            )
        };
        for &threshold in thresholds {
            for &selection in rules {
                for &dtype in dtypes {
                    points.push(SweepPoint::Sparse { threshold, selection, dtype });
                }
            }
        }
        let budget_rule = SelectionPoint::TopKApprox(0.005);
        for sync_rate in if quick { &[0.1][..] } else { &[0.05, 0.2][..] } {
            points.push(SweepPoint::Budget { sync_rate: *sync_rate, selection: budget_rule, dtype: DtypePoint::Bf16 });
        }
        points
    }
}

/// What the sweep records of one run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SweepRow {
    /// The configuration.
    pub point: SweepPoint,
    /// Its name in the table.
    pub name: String,
    /// Bytes produced by every rank together (payload and control).
    pub bytes_total: u64,
    /// Final test accuracy (fraction).
    pub test_accuracy: f64,
    /// Measured wall-clock of the run, seconds.
    pub wall_s: f64,
    /// Seconds from the start until rank 0's trace first reached dense's
    /// final test accuracy; `None` if it never did.
    pub time_to_dense_s: Option<f64>,
    /// The same for dense's final test accuracy less 0.5 point (the
    /// accuracy margin of the bytes target).
    pub time_to_near_dense_s: Option<f64>,
    /// On the Pareto front of (fewer bytes, higher accuracy).
    pub pareto: bool,
}

/// The accuracy margin of the targets: half a point.
pub const NEAR_DENSE: f64 = 0.005;

/// The first time rank 0's trace reached `target` test accuracy.
pub fn time_to_accuracy(m: &RunMetrics, target: f64) -> Option<f64> {
    m.trace.iter().find(|p| p.test_accuracy >= target).map(|p| p.elapsed_s)
}

/// Rows of the sweep, `runs[0]` being dense (the reference accuracy), with
/// the Pareto front marked: a row is on it unless another row has no more
/// bytes and no lower accuracy, and is strictly better in one of them.
pub fn rows(points: &[SweepPoint], runs: &[RunMetrics]) -> Vec<SweepRow> {
    let dense_acc = runs.first().map_or(f64::NAN, |d| d.test_accuracy);
    let mut rows: Vec<SweepRow> = points
        .iter()
        .zip(runs)
        .map(|(p, m)| SweepRow {
            point: p.clone(),
            name: m.name.clone(),
            bytes_total: m.bytes_total,
            test_accuracy: m.test_accuracy,
            wall_s: m.wall_s,
            time_to_dense_s: time_to_accuracy(m, dense_acc),
            time_to_near_dense_s: time_to_accuracy(m, dense_acc - NEAR_DENSE),
            pareto: false,
        })
        .collect();
    let dominated = |i: usize| {
        rows.iter().enumerate().any(|(j, o)| {
            j != i
                && o.bytes_total <= rows[i].bytes_total
                && o.test_accuracy >= rows[i].test_accuracy
                && (o.bytes_total < rows[i].bytes_total || o.test_accuracy > rows[i].test_accuracy)
        })
    };
    let front: Vec<bool> = (0..rows.len()).map(|i| !dominated(i)).collect();
    for (r, f) in rows.iter_mut().zip(front) {
        r.pareto = f;
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, bytes: u64, acc: f64, trace: &[(f64, f64)]) -> RunMetrics {
        RunMetrics {
            name: name.into(),
            bytes_total: bytes,
            test_accuracy: acc,
            trace: trace
                .iter()
                .map(|&(t, a)| super::super::metrics::TracePoint {
                    elapsed_s: t,
                    test_accuracy: a,
                    ..Default::default()
                })
                .collect(),
            ..RunMetrics::default()
        }
    }

    #[test]
    fn the_front_keeps_only_undominated_rows_and_the_time_is_the_first_crossing() {
        let points = vec![SweepPoint::Dense, SweepPoint::Seed, SweepPoint::Dense, SweepPoint::Seed];
        let runs = vec![
            run("dense", 1000, 0.90, &[(1.0, 0.5), (9.0, 0.90)]),
            run("a", 10, 0.89, &[(0.5, 0.7), (2.0, 0.89)]),
            run("b", 20, 0.88, &[(0.5, 0.91), (3.0, 0.88)]),
            run("c", 5, 0.80, &[]),
        ];
        let r = rows(&points, &runs);
        assert_eq!(r.iter().map(|r| r.pareto).collect::<Vec<_>>(), vec![true, true, false, true]);
        assert_eq!(r.iter().map(|r| r.time_to_dense_s).collect::<Vec<_>>(), vec![Some(9.0), None, Some(0.5), None]);
        // 0.895 is within half a point of dense's 0.90.
        assert_eq!(r[1].time_to_near_dense_s, None);
        assert_eq!(r[0].time_to_near_dense_s, Some(9.0));
    }

    #[test]
    fn every_grid_point_is_a_valid_variant() {
        for p in SweepPoint::grid(false).iter().chain(&SweepPoint::grid(true)) {
            p.variant().sync.validate().unwrap();
        }
        assert_eq!(SweepPoint::grid(false).len(), 28);
    }
}
