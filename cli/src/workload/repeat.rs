//! `hyperclean --repeat N`: the comparison on N data seeds, summarized.
//!
//! One seed's test set has 497 examples, so one example is 0.2 point and a
//! single run's differences of half a point are a few examples either way
//! (and, under bounded asynchrony, a thread schedule). Repeating the whole
//! comparison on fresh splits, corruptions and feature maps and pairing the
//! runs by seed turns the table's verdicts into means with their spread.

use std::fmt::Write as _;

use super::report::Report;

/// Mean, extremes and the values of one figure over the seeds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Spread {
    /// Arithmetic mean.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// The values, in seed order.
    pub values: Vec<f64>,
}

impl Spread {
    /// The spread of `values` (`None` when empty).
    pub fn of(values: Vec<f64>) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Spread { mean, min, max, values })
    }
}

/// One configuration over the seeds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConfigurationSummary {
    /// Variant name.
    pub name: String,
    /// Test accuracy, percent.
    pub test_accuracy: Spread,
    /// Test accuracy minus the first configuration's on the same seed, points.
    pub vs_first_points: Spread,
    /// The first configuration's bytes over this one's, on the same seed.
    pub byte_reduction_vs_first: Spread,
    /// Test accuracy minus the best baseline that does not see the clean
    /// labels on the same seed, points (the honesty margin).
    pub margin_points: Spread,
    /// Fraction of the way from the noisy-label baseline to the oracle.
    pub way_to_oracle: Spread,
    /// Seeds on which the honesty check passed (margin > 0 and at least half way).
    pub honest_seeds: usize,
}

/// Every configuration over the seeds, in run order.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RepeatSummary {
    /// The seeds, in run order.
    pub seeds: Vec<u64>,
    /// The best fair baseline's test accuracy per seed, percent.
    pub best_fair_baseline: Spread,
    /// One entry per configuration.
    pub configurations: Vec<ConfigurationSummary>,
}

/// The failure to summarize: the per-seed reports do not line up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RepeatError {
    /// No report was given.
    #[error("no run to summarize")]
    Empty,
    /// A seed's report has other configurations than the first seed's.
    #[error("seed {seed} ran configurations {found:?}, the first seed {expected:?}")]
    Mismatch {
        /// The seed whose report differs.
        seed: u64,
        /// The first seed's configuration names.
        expected: Vec<String>,
        /// This seed's.
        found: Vec<String>,
    },
}

impl RepeatSummary {
    /// Pairs `reports` (one per seed, each with the same configurations in
    /// the same order) by seed.
    pub fn of(reports: &[Report]) -> Result<RepeatSummary, RepeatError> {
        let first = reports.first().ok_or(RepeatError::Empty)?;
        let names = |r: &Report| r.runs.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
        let expected = names(first);
        if expected.is_empty() {
            return Err(RepeatError::Empty);
        }
        for r in reports {
            let found = names(r);
            if found != expected || r.targets.honest.len() != expected.len() {
                return Err(RepeatError::Mismatch { seed: r.problem.seed, expected, found });
            }
        }
        let spread = |f: &dyn Fn(&Report) -> f64| Spread::of(reports.iter().map(f).collect()).expect("non-empty");
        let configurations = (0..expected.len())
            .map(|c| ConfigurationSummary {
                name: expected[c].clone(),
                test_accuracy: spread(&|r| 100.0 * r.runs[c].test_accuracy),
                vs_first_points: spread(&|r| 100.0 * (r.runs[c].test_accuracy - r.runs[0].test_accuracy)),
                byte_reduction_vs_first: spread(&|r| {
                    r.runs[0].bytes_total as f64 / r.runs[c].bytes_total.max(1) as f64
                }),
                margin_points: spread(&|r| r.targets.honest[c].margin_points),
                way_to_oracle: spread(&|r| r.targets.honest[c].way_to_oracle),
                honest_seeds: reports.iter().filter(|r| r.targets.honest[c].met).count(),
            })
            .collect();
        Ok(RepeatSummary {
            seeds: reports.iter().map(|r| r.problem.seed).collect(),
            best_fair_baseline: spread(&|r| 100.0 * r.targets.honest[0].best_fair_baseline),
            configurations,
        })
    }

    /// The summary as a text table: one column per configuration, each cell
    /// `mean [min, max]`.
    pub fn render(&self) -> String {
        let cell = |s: &Spread, digits: usize| format!("{:.d$} [{:.d$}, {:.d$}]", s.mean, s.min, s.max, d = digits);
        let mut rows: Vec<(String, Vec<String>)> = vec![
            ("test accuracy (%)".into(), self.configurations.iter().map(|c| cell(&c.test_accuracy, 2)).collect()),
            (
                format!("vs {} (points)", self.configurations[0].name),
                self.configurations.iter().map(|c| cell(&c.vs_first_points, 2)).collect(),
            ),
            (
                "fewer bytes (x)".into(),
                self.configurations.iter().map(|c| cell(&c.byte_reduction_vs_first, 1)).collect(),
            ),
            (
                "vs best fair baseline (points)".into(),
                self.configurations.iter().map(|c| cell(&c.margin_points, 2)).collect(),
            ),
            ("way to the oracle".into(), self.configurations.iter().map(|c| cell(&c.way_to_oracle, 2)).collect()),
        ];
        rows.push((
            "honest on".into(),
            self.configurations.iter().map(|c| format!("{} of {} seeds", c.honest_seeds, self.seeds.len())).collect(),
        ));
        let label_w = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..self.configurations.len())
            .map(|c| rows.iter().map(|(_, v)| v[c].len()).chain([self.configurations[c].name.len()]).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        let seeds: Vec<String> = self.seeds.iter().map(u64::to_string).collect();
        let _ =
            writeln!(out, "over {} seeds ({}): mean [min, max], paired by seed", self.seeds.len(), seeds.join(", "));
        let _ = write!(out, "{:label_w$}", "");
        for (c, w) in self.configurations.iter().zip(&widths) {
            let _ = write!(out, " | {:>w$}", c.name);
        }
        out.push('\n');
        for (label, values) in &rows {
            let _ = write!(out, "{label:label_w$}");
            for (v, w) in values.iter().zip(&widths) {
                let _ = write!(out, " | {v:>w$}");
            }
            out.push('\n');
        }
        let b = &self.best_fair_baseline;
        let _ = writeln!(out, "best fair baseline test accuracy (%): {}", cell(b, 2));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::problem::Baseline;
    use crate::workload::report::{ProblemSummary, Targets};
    use crate::workload::system::RunMetrics;

    fn report(seed: u64, runs: &[(&str, f64, u64)], val_only: f64) -> Report {
        let runs: Vec<RunMetrics> = runs
            .iter()
            .map(|&(name, test_accuracy, bytes_total)| RunMetrics {
                name: name.into(),
                test_accuracy,
                bytes_total,
                ..RunMetrics::default()
            })
            .collect();
        let b = |name: &str, test_accuracy, sees_clean_labels| Baseline {
            name: name.into(),
            val_accuracy: 0.0,
            test_accuracy,
            sees_clean_labels,
        };
        let baselines = vec![b("noisy", 0.80, false), b("val only", val_only, false), b("oracle", 1.0, true)];
        let targets = Targets::evaluate(&runs, &baselines);
        let problem = ProblemSummary { train: 10, val: 5, test: 5, flipped: 5, params: 7, seed };
        Report { problem, runs, baselines, comm_model: String::new(), targets }
    }

    #[test]
    fn pairs_the_configurations_by_seed() {
        let reports = [
            report(7, &[("dense", 0.96, 1000), ("best", 0.95, 10)], 0.94),
            report(8, &[("dense", 0.94, 1000), ("best", 0.95, 20)], 0.96),
        ];
        let s = RepeatSummary::of(&reports).unwrap();
        assert_eq!(s.seeds, vec![7, 8]);
        let best = &s.configurations[1];
        assert!((best.test_accuracy.mean - 95.0).abs() < 1e-9);
        assert_eq!(best.vs_first_points.values.len(), 2);
        assert!(
            (best.vs_first_points.values[0] + 1.0).abs() < 1e-9 && (best.vs_first_points.values[1] - 1.0).abs() < 1e-9
        );
        assert!(best.vs_first_points.mean.abs() < 1e-9);
        assert!(
            (best.byte_reduction_vs_first.min - 50.0).abs() < 1e-9
                && (best.byte_reduction_vs_first.max - 100.0).abs() < 1e-9
        );
        // Seed 7: 95 over 94 and 75% of the way; seed 8: under 96.
        assert_eq!(best.honest_seeds, 1);
        assert_eq!(s.configurations[0].honest_seeds, 1);
        assert!((s.best_fair_baseline.mean - 95.0).abs() < 1e-9);
        let text = s.render();
        assert!(text.contains("over 2 seeds (7, 8)") && text.contains("1 of 2 seeds"), "{text}");
    }

    #[test]
    fn reports_that_do_not_line_up_are_refused() {
        assert_eq!(RepeatSummary::of(&[]), Err(RepeatError::Empty));
        let a = report(1, &[("dense", 0.9, 10)], 0.8);
        let b = report(2, &[("seed", 0.9, 10)], 0.8);
        assert!(matches!(RepeatSummary::of(&[a, b]), Err(RepeatError::Mismatch { seed: 2, .. })));
        assert_eq!(RepeatSummary::of(&[report(1, &[], 0.8)]), Err(RepeatError::Empty));
    }
}
