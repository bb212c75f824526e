//! The hyper-cleaning problem instance (data mapped to features), the
//! single-process baselines, and the flipped-label detection score.

use super::data::{SplitSpec, load_digits, split_and_flip};
use super::model::{Design, FeatureMap, accuracy, fit};
use chronos_sync::error::{Error, Result};

/// How to build the problem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProblemSpec {
    /// Split sizes, corruption fraction and seed.
    pub split: SplitSpec,
    /// Random Fourier features (0: the raw 64 pixels). The model has
    /// `10 * (features + 1)` parameters.
    pub features: usize,
    /// Kernel bandwidth of the Fourier features (`omega ~ N(0, bandwidth I)`).
    pub bandwidth: f64,
    /// Seed of the feature map.
    pub feature_seed: u64,
}

impl Default for ProblemSpec {
    /// 2047 Fourier features plus the bias: 20,480 parameters.
    fn default() -> Self {
        ProblemSpec { split: SplitSpec::default(), features: 2047, bandwidth: 0.2, feature_seed: 0xFEA7 }
    }
}

/// Train (noisy labels), validation and test designs plus the corruption truth.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Training design with corrupted labels.
    pub train: Design,
    /// Validation design (clean).
    pub val: Design,
    /// Test design (clean).
    pub test: Design,
    /// `flipped[i]`: training label `i` is corrupted.
    pub flipped: Vec<bool>,
    /// Training labels before corruption.
    pub clean_train_labels: Vec<usize>,
}

impl Problem {
    /// Loads the bundled digits, splits, corrupts and maps them.
    pub fn digits(spec: &ProblemSpec) -> Result<Problem> {
        if !(spec.bandwidth.is_finite() && spec.bandwidth > 0.0) {
            return Err(Error::InvalidConfig {
                field: "bandwidth",
                reason: format!("must be finite and > 0, got {}", spec.bandwidth),
            });
        }
        let data = load_digits()?;
        let split = split_and_flip(&data, &spec.split)?;
        let map = if spec.features == 0 {
            FeatureMap::Raw
        } else {
            FeatureMap::fourier(data.dim, spec.features, spec.bandwidth, spec.feature_seed)
        };
        Ok(Problem {
            train: map.apply(&split.train),
            val: map.apply(&split.val),
            test: map.apply(&split.test),
            flipped: split.flipped,
            clean_train_labels: split.clean_train_labels,
        })
    }

    /// Model parameters.
    pub fn param_len(&self) -> usize {
        self.train.param_len()
    }
}

/// Precision, recall and F1 of flagging training example `i` as corrupted when `flag[i]`.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Detection {
    /// Flagged and corrupted / flagged.
    pub precision: f64,
    /// Flagged and corrupted / corrupted.
    pub recall: f64,
    /// Harmonic mean of the two.
    pub f1: f64,
}

impl Detection {
    /// Scores `flag` against `truth` (same length).
    pub fn score(flag: &[bool], truth: &[bool]) -> Detection {
        let (mut tp, mut fp, mut fneg) = (0usize, 0usize, 0usize);
        for (&f, &t) in flag.iter().zip(truth) {
            match (f, t) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fneg += 1,
                _ => {}
            }
        }
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        Detection { precision: ratio(tp, tp + fp), recall: ratio(tp, tp + fneg), f1: ratio(2 * tp, 2 * tp + fp + fneg) }
    }
}

/// A single-process reference model and its accuracies.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Baseline {
    /// What it was trained on.
    pub name: String,
    /// Validation accuracy.
    pub val_accuracy: f64,
    /// Test accuracy.
    pub test_accuracy: f64,
    /// Whether it was told which training labels are clean (only the oracle).
    pub sees_clean_labels: bool,
}

/// The plain baselines, each the same model and `mu`, solved with `iters`
/// accelerated-gradient iterations: every noisy training label with weight 1;
/// the validation set alone; every noisy training label and the validation
/// set, all with weight 1 (the fair counterpart of hyper-cleaning's final fit,
/// which sees the same examples and only learns their weights); the training
/// examples whose labels were not corrupted (the clean-label oracle, the only
/// one that sees which labels are clean). The oracle is last.
pub fn baselines(problem: &Problem, mu: f64, iters: usize) -> Vec<Baseline> {
    let p = problem;
    let eval = |name: &str, theta: &[f64]| Baseline {
        name: name.to_string(),
        val_accuracy: accuracy(theta, &p.val),
        test_accuracy: accuracy(theta, &p.test),
        sees_clean_labels: false,
    };
    let zero = vec![0.0; p.param_len()];
    let n = p.train.len();
    let noisy = fit(&p.train, &vec![1.0; n], n as f64, mu, zero.clone(), iters);
    let val_only = fit(&p.val, &vec![1.0; p.val.len()], p.val.len() as f64, mu, zero.clone(), iters);
    let both = p.train.concat(&p.val);
    let noisy_and_val = fit(&both, &vec![1.0; both.len()], both.len() as f64, mu, zero.clone(), iters);
    let keep: Vec<f64> = p.flipped.iter().map(|&f| if f { 0.0 } else { 1.0 }).collect();
    let kept = keep.iter().sum::<f64>().max(1.0);
    let oracle = fit(&p.train, &keep, kept, mu, zero, iters);
    vec![
        eval("noisy labels (all weights 1)", &noisy),
        eval("validation set only", &val_only),
        eval("noisy labels + validation set (weights 1)", &noisy_and_val),
        Baseline { sees_clean_labels: true, ..eval("clean-label oracle (flipped removed)", &oracle) },
    ]
}
