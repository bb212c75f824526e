//! The data of the hyper-cleaning problem: the 1797 handwritten 8x8 digits
//! bundled inside `smartcore` (no download), a seeded train / validation /
//! test split, and the label corruption of the training part.

use super::rng::SplitMix64;
use chronos_sync::error::{Error, Result};

/// A labelled classification set, features row-major (`len() x dim`).
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledSet {
    /// Features, `len() * dim` values, example after example.
    pub features: Vec<f64>,
    /// Feature dimension.
    pub dim: usize,
    /// Class of every example, in `0..classes`.
    pub labels: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
}

impl LabeledSet {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True when there is no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// The features of example `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }
    /// The examples at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> LabeledSet {
        let mut features = Vec::with_capacity(idx.len() * self.dim);
        for &i in idx {
            features.extend_from_slice(self.row(i));
        }
        LabeledSet {
            features,
            dim: self.dim,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes,
        }
    }
}

/// The digits set: 1797 examples, 64 pixel intensities scaled from `0..=16`
/// to `[0, 1]`, 10 classes.
pub fn load_digits() -> Result<LabeledSet> {
    let raw = smartcore::dataset::digits::load_dataset();
    let dim = raw.num_features;
    if raw.data.len() != raw.num_samples * dim || raw.target.len() != raw.num_samples {
        return Err(Error::InvalidConfig {
            field: "digits",
            reason: format!(
                "bundled data set has inconsistent shape ({} values, {} targets)",
                raw.data.len(),
                raw.target.len()
            ),
        });
    }
    let mut labels = Vec::with_capacity(raw.num_samples);
    for &t in &raw.target {
        if !(0.0..10.0).contains(&t) || t.fract() != 0.0 {
            return Err(Error::InvalidConfig { field: "digits", reason: format!("bundled label {t} is not a digit") });
        }
        labels.push(t as usize);
    }
    let features = raw.data.iter().map(|&v| f64::from(v) / 16.0).collect();
    Ok(LabeledSet { features, dim, labels, classes: 10 })
}

/// How to split and corrupt the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitSpec {
    /// Training examples (the ones whose labels get corrupted).
    pub train: usize,
    /// Validation examples (clean labels; the outer objective).
    pub val: usize,
    /// Fraction of training labels replaced by a different, uniformly drawn class.
    pub flip_fraction: f64,
    /// Seed of the shuffle and of the corruption.
    pub seed: u64,
}

impl Default for SplitSpec {
    /// 1000 / 300 / rest (497 of the digits), half the training labels flipped.
    fn default() -> Self {
        SplitSpec { train: 1000, val: 300, flip_fraction: 0.5, seed: 0x5EED }
    }
}

/// The split with corrupted training labels and the ground truth about them.
#[derive(Debug, Clone, PartialEq)]
pub struct NoisySplit {
    /// Training set with the corrupted labels.
    pub train: LabeledSet,
    /// The training labels before corruption.
    pub clean_train_labels: Vec<usize>,
    /// `flipped[i]`: training label `i` was corrupted.
    pub flipped: Vec<bool>,
    /// Validation set (clean).
    pub val: LabeledSet,
    /// Test set (clean): everything not in train or validation.
    pub test: LabeledSet,
}

/// Shuffles `data` with `spec.seed`, takes the first `train`, then `val`
/// examples, the rest as test, and flips `round(train * flip_fraction)`
/// training labels, each to a different class drawn uniformly.
pub fn split_and_flip(data: &LabeledSet, spec: &SplitSpec) -> Result<NoisySplit> {
    let bad = |field, reason: String| Err(Error::InvalidConfig { field, reason });
    if spec.train == 0 || spec.val == 0 {
        return bad("split", format!("train ({}) and val ({}) must be >= 1", spec.train, spec.val));
    }
    if spec.train + spec.val >= data.len() {
        return bad(
            "split",
            format!("train + val = {} leaves no test example out of {}", spec.train + spec.val, data.len()),
        );
    }
    if !(0.0..=1.0).contains(&spec.flip_fraction) {
        return bad("flip_fraction", format!("must be in [0, 1], got {}", spec.flip_fraction));
    }
    if data.classes < 2 {
        return bad("classes", "label flipping needs at least two classes".into());
    }
    let mut rng = SplitMix64::new(spec.seed);
    let mut order: Vec<usize> = (0..data.len()).collect();
    rng.shuffle(&mut order);
    let mut train = data.select(&order[..spec.train]);
    let val = data.select(&order[spec.train..spec.train + spec.val]);
    let test = data.select(&order[spec.train + spec.val..]);
    let clean_train_labels = train.labels.clone();

    let n_flip = (spec.train as f64 * spec.flip_fraction).round() as usize;
    let mut which: Vec<usize> = (0..spec.train).collect();
    rng.shuffle(&mut which);
    let mut flipped = vec![false; spec.train];
    for &i in &which[..n_flip] {
        // A uniformly drawn class other than the true one.
        let shift = 1 + rng.below(data.classes as u64 - 1) as usize;
        train.labels[i] = (train.labels[i] + shift) % data.classes;
        flipped[i] = true;
    }
    Ok(NoisySplit { train, clean_train_labels, flipped, val, test })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_split_has_the_documented_shape_and_flips() {
        let data = load_digits().unwrap();
        assert_eq!((data.len(), data.dim), (1797, 64));
        assert!(data.features.iter().all(|&v| (0.0..=1.0).contains(&v)));
        let s = split_and_flip(&data, &SplitSpec::default()).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (1000, 300, 497));
        assert_eq!(s.flipped.iter().filter(|&&f| f).count(), 500);
        for i in 0..1000 {
            assert_eq!(s.flipped[i], s.train.labels[i] != s.clean_train_labels[i]);
        }
        let again = split_and_flip(&data, &SplitSpec::default()).unwrap();
        assert_eq!(s, again);
        assert!(split_and_flip(&data, &SplitSpec { train: 1500, val: 297, ..SplitSpec::default() }).is_err());
        assert!(split_and_flip(&data, &SplitSpec { flip_fraction: 1.5, ..SplitSpec::default() }).is_err());
    }
}
