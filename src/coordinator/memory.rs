//! Continuum memory: a bounded store of past outer rounds (outer parameters,
//! hypergradient, validation loss, step) that answers "which past states
//! look like this one?" and predicts a hypergradient for warm starts.
//!
//! * **Keys and values**: each entry is a key (the `params` of
//!   [`ContinuumMemory::insert`], what queries are compared with) and a value
//!   (its `hypergradient`, what predictions average). The coordinator's
//!   memory has both of the outer parameters' length ([`ContinuumMemory::new`]);
//!   [`ContinuumMemory::with_value_dim`] makes one whose values have another
//!   length, e.g. keyed by a worker's outer-parameter shard and holding the
//!   solution of a linear solve of the model's size.
//!
//! * **Similarity** of a query `q` to stored parameters `p`, in `[0, 1]`:
//!   [`Metric::Cosine`] uses `(1 + cos(q, p)) / 2` (`cos` is taken as 0 when
//!   either vector is zero); [`Metric::Euclidean`] uses `1 / (1 + |q - p|)`.
//! * **Score** = similarity × `exp(-recency_decay × age)`, where `age` is how
//!   many steps the entry is older than the newest entry.
//! * **Retrieval** returns the `k` highest scores; ties go to the newer entry,
//!   then to the one inserted first. Everything is computed in f64 from the
//!   stored values (decompressed when in f16).
//! * **Eviction**: when full, the entry with the smallest step (the oldest;
//!   among equal steps the one inserted first) is dropped.
//! * **Compression**: entries more than `compress_after` steps older than the
//!   newest are stored as f16 (values beyond ±65504 saturate to ±65504),
//!   halving their footprint at a relative precision of about 1e-3.

use std::collections::VecDeque;

use half::f16;

use super::config::MemoryConfig;
use crate::error::{CoordinatorError, Result};

/// How similarity between outer-parameter vectors is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Metric {
    /// Angle only: `(1 + cos) / 2`.
    #[default]
    Cosine,
    /// Distance: `1 / (1 + euclidean distance)`.
    Euclidean,
}

/// A vector kept at full or half precision.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stored {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl Stored {
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Stored::F32(v) => v.clone(),
            Stored::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
        }
    }

    fn compress(&mut self) {
        if let Stored::F32(v) = self {
            let max = f16::MAX.to_f32();
            *self = Stored::F16(v.iter().map(|&x| f16::from_f32(x.clamp(-max, max))).collect());
        }
    }

    pub fn is_compressed(&self) -> bool {
        matches!(self, Stored::F16(_))
    }
}

/// One remembered outer round.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub step: u64,
    pub validation_loss: f32,
    pub params: Stored,
    pub hypergradient: Stored,
}

/// One retrieval result.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieved {
    /// Step the entry was recorded at.
    pub step: u64,
    /// Similarity × recency; results are sorted by it, highest first.
    pub score: f64,
    /// Similarity to the query, in `[0, 1]`.
    pub similarity: f64,
    /// Recency weight `exp(-recency_decay * age)`, in `(0, 1]`.
    pub recency: f64,
    /// Validation loss recorded with the entry.
    pub validation_loss: f32,
    /// Stored outer parameters (decompressed if the entry is in f16).
    pub params: Vec<f32>,
    /// Stored hypergradient (decompressed if the entry is in f16).
    pub hypergradient: Vec<f32>,
    /// Whether the entry is stored in f16.
    pub compressed: bool,
}

/// Bounded store of past outer rounds; see the module docs for the rules.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuumMemory {
    pub(crate) config: MemoryConfig,
    /// Length of the keys (`params`).
    pub(crate) dim: usize,
    /// Length of the values (`hypergradient`).
    pub(crate) value_dim: usize,
    /// Insertion order (oldest insert at the front).
    pub(crate) entries: VecDeque<Entry>,
    /// Largest step inserted so far ("now" for recency and compression).
    pub(crate) newest_step: u64,
}

fn shape(expected: usize, actual: usize) -> crate::Error {
    CoordinatorError::ShapeMismatch { expected, actual }.into()
}

impl ContinuumMemory {
    /// An empty memory whose keys and values both have length `dim`.
    pub fn new(dim: usize, config: MemoryConfig) -> Self {
        ContinuumMemory::with_value_dim(dim, dim, config)
    }

    /// An empty memory with keys of length `key_dim` and values of length
    /// `value_dim`. Every rule of the module docs holds as for [`Self::new`];
    /// [`Self::insert`] checks the key against `key_dim` and the value
    /// against `value_dim`, [`Self::retrieve`] the query against `key_dim`.
    ///
    /// ```
    /// use chronos_sync::coordinator::{ContinuumMemory, MemoryConfig, Metric};
    ///
    /// let mut m = ContinuumMemory::with_value_dim(2, 3, MemoryConfig::default());
    /// m.insert(&[1.0, 0.0], &[1.0, 2.0, 3.0], 0.5, 0)?;
    /// let guess = m.predict_hypergradient(&[1.0, 0.1], 1, Metric::Euclidean)?;
    /// assert_eq!(guess, Some(vec![1.0, 2.0, 3.0]));
    /// assert!(m.insert(&[1.0, 0.0], &[1.0, 2.0], 0.5, 1).is_err());
    /// # Ok::<(), chronos_sync::Error>(())
    /// ```
    pub fn with_value_dim(key_dim: usize, value_dim: usize, config: MemoryConfig) -> Self {
        ContinuumMemory { config, dim: key_dim, value_dim, entries: VecDeque::new(), newest_step: 0 }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries currently stored in f16.
    pub fn compressed_len(&self) -> usize {
        self.entries.iter().filter(|e| e.params.is_compressed()).count()
    }

    /// Length of the keys (the stored `params`, and queries).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Length of the values (the stored `hypergradient`s, and predictions).
    pub fn value_dim(&self) -> usize {
        self.value_dim
    }

    /// The largest step inserted so far (0 when empty).
    pub fn newest_step(&self) -> u64 {
        self.newest_step
    }

    /// Stores one round. Errors (nothing stored): a key whose length is not
    /// `dim` or a value whose length is not `value_dim`
    /// ([`CoordinatorError::ShapeMismatch`]), or a non-finite number
    /// ([`CoordinatorError::NonFinite`] with `commit = step`). With capacity 0
    /// this is a no-op.
    pub fn insert(&mut self, params: &[f32], hypergradient: &[f32], validation_loss: f32, step: u64) -> Result<()> {
        for (v, expected) in [(params, self.dim), (hypergradient, self.value_dim)] {
            if v.len() != expected {
                return Err(shape(expected, v.len()));
            }
        }
        let finite = params.iter().chain(hypergradient).all(|x| x.is_finite()) && validation_loss.is_finite();
        if !finite {
            return Err(CoordinatorError::NonFinite { commit: step }.into());
        }
        if self.config.capacity == 0 {
            return Ok(());
        }
        while self.entries.len() >= self.config.capacity {
            self.evict_oldest();
        }
        self.entries.push_back(Entry {
            step,
            validation_loss,
            params: Stored::F32(params.to_vec()),
            hypergradient: Stored::F32(hypergradient.to_vec()),
        });
        self.newest_step = self.newest_step.max(step);
        let cut = self.newest_step.saturating_sub(self.config.compress_after);
        for e in self.entries.iter_mut().filter(|e| e.step < cut) {
            e.params.compress();
            e.hypergradient.compress();
        }
        Ok(())
    }

    /// Evicts the oldest entries until at most `capacity` remain (used after a
    /// restore under a smaller capacity).
    pub(crate) fn shrink_to_capacity(&mut self) {
        while self.entries.len() > self.config.capacity {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        // min_by_key keeps the first of equal minima: the earliest insert.
        if let Some((i, _)) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.step) {
            self.entries.remove(i);
        }
    }

    /// The `k` entries with the highest score for `query` (fewer when the
    /// memory holds fewer), best first. Errors: `query.len() != dim`.
    pub fn retrieve(&self, query: &[f32], k: usize, metric: Metric) -> Result<Vec<Retrieved>> {
        if query.len() != self.dim {
            return Err(shape(self.dim, query.len()));
        }
        let mut scored: Vec<(usize, Retrieved)> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let params = e.params.to_f32();
                let similarity = similarity(query, &params, metric);
                let age = self.newest_step.saturating_sub(e.step) as f64;
                let recency = (-self.config.recency_decay * age).exp();
                let r = Retrieved {
                    step: e.step,
                    score: similarity * recency,
                    similarity,
                    recency,
                    validation_loss: e.validation_loss,
                    params,
                    hypergradient: e.hypergradient.to_f32(),
                    compressed: e.params.is_compressed(),
                };
                (i, r)
            })
            .collect();
        scored.sort_by(|(ia, a), (ib, b)| b.score.total_cmp(&a.score).then(b.step.cmp(&a.step)).then(ia.cmp(ib)));
        scored.truncate(k);
        Ok(scored.into_iter().map(|(_, r)| r).collect())
    }

    /// Score-weighted mean of the hypergradients of the `k` best entries for
    /// `query`: a warm-start guess. `None` when nothing is stored or every
    /// score is 0. Errors: `query.len() != dim`.
    pub fn predict_hypergradient(&self, query: &[f32], k: usize, metric: Metric) -> Result<Option<Vec<f32>>> {
        let best = self.retrieve(query, k, metric)?;
        let total: f64 = best.iter().map(|r| r.score).sum();
        if best.is_empty() || total <= 0.0 {
            return Ok(None);
        }
        let mut sum = vec![0.0f64; self.value_dim];
        for r in &best {
            for (s, &g) in sum.iter_mut().zip(&r.hypergradient) {
                *s += r.score * g as f64;
            }
        }
        Ok(Some(sum.into_iter().map(|s| (s / total) as f32).collect()))
    }
}

/// Similarity in `[0, 1]` (see the module docs), in f64.
pub fn similarity(a: &[f32], b: &[f32], metric: Metric) -> f64 {
    match metric {
        Metric::Cosine => {
            let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
            for (&x, &y) in a.iter().zip(b) {
                let (x, y) = (x as f64, y as f64);
                dot += x * y;
                na += x * x;
                nb += y * y;
            }
            let cos = if na == 0.0 || nb == 0.0 { 0.0 } else { (dot / (na.sqrt() * nb.sqrt())).clamp(-1.0, 1.0) };
            (1.0 + cos) / 2.0
        }
        Metric::Euclidean => {
            let d2: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
            1.0 / (1.0 + d2.sqrt())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(capacity: usize, compress_after: u64) -> ContinuumMemory {
        ContinuumMemory::new(2, MemoryConfig { capacity, compress_after, recency_decay: 0.0 })
    }

    #[test]
    fn evicts_the_oldest_when_full() {
        let mut m = mem(2, 100);
        m.insert(&[1.0, 0.0], &[1.0, 1.0], 1.0, 5).unwrap();
        m.insert(&[0.0, 1.0], &[2.0, 2.0], 1.0, 3).unwrap();
        m.insert(&[1.0, 1.0], &[3.0, 3.0], 1.0, 7).unwrap();
        let steps: Vec<u64> = m.entries.iter().map(|e| e.step).collect();
        assert_eq!(steps, vec![5, 7]);
    }

    #[test]
    fn old_entries_are_compressed_to_f16() {
        let mut m = mem(8, 2);
        for s in 0..5u64 {
            m.insert(&[0.1 * s as f32, 1e6], &[1.0 / 3.0, -1e6], 0.5, s).unwrap();
        }
        // newest 4, cut 2: steps 0 and 1 compressed.
        assert_eq!(m.compressed_len(), 2);
        let r = m.retrieve(&[0.0, 1.0], 8, Metric::Cosine).unwrap();
        let old = r.iter().find(|r| r.step == 0).unwrap();
        assert!(old.compressed);
        assert_eq!(old.hypergradient[1], -65504.0);
        assert!((old.hypergradient[0] - 1.0 / 3.0).abs() < 1e-3);
    }

    #[test]
    fn predicts_the_score_weighted_mean() {
        let mut m = mem(8, 100);
        m.insert(&[1.0, 0.0], &[2.0, 0.0], 1.0, 0).unwrap();
        m.insert(&[-1.0, 0.0], &[0.0, 4.0], 1.0, 0).unwrap();
        // Cosine: similarity 1 and 0 -> only the first counts.
        let p = m.predict_hypergradient(&[1.0, 0.0], 2, Metric::Cosine).unwrap().unwrap();
        assert_eq!(p, vec![2.0, 0.0]);
        // Orthogonal query: both 0.5 -> plain mean.
        let p = m.predict_hypergradient(&[0.0, 1.0], 2, Metric::Cosine).unwrap().unwrap();
        assert_eq!(p, vec![1.0, 2.0]);
        assert!(m.predict_hypergradient(&[0.0], 2, Metric::Cosine).is_err());
    }

    #[test]
    fn values_may_be_longer_than_keys() {
        let mut m =
            ContinuumMemory::with_value_dim(2, 4, MemoryConfig { capacity: 8, compress_after: 1, recency_decay: 0.0 });
        assert_eq!((m.dim(), m.value_dim()), (2, 4));
        m.insert(&[0.0, 0.0], &[1.0, 1.0, 1.0, 1.0], 1.0, 0).unwrap();
        m.insert(&[3.0, 4.0], &[0.0, 2.0, 4.0, 6.0], 1.0, 1).unwrap();
        m.insert(&[3.0, 4.0], &[0.0, 2.0, 4.0, 6.0], 1.0, 2).unwrap();
        // Step 0 is now compressed; its value keeps its length.
        assert_eq!(m.compressed_len(), 1);
        let r = m.retrieve(&[0.0, 0.0], 3, Metric::Euclidean).unwrap();
        assert_eq!(r[0].step, 0);
        assert_eq!(r[0].hypergradient.len(), 4);
        // Euclidean similarity to the query (0, 0): 1 for step 0, 1/6 for the others.
        let p = m.predict_hypergradient(&[0.0, 0.0], 2, Metric::Euclidean).unwrap().unwrap();
        let w = [1.0, 1.0 / 6.0];
        let expect: Vec<f32> =
            (0..4).map(|i| ((w[0] * 1.0 + w[1] * (2.0 * i as f64)) / (w[0] + w[1])) as f32).collect();
        for (a, b) in p.iter().zip(&expect) {
            assert!((a - b).abs() < 1e-6, "{p:?} vs {expect:?}");
        }
        // Key and value lengths are checked separately; a failed insert stores nothing.
        assert!(m.insert(&[1.0, 1.0], &[1.0, 1.0], 1.0, 3).is_err());
        assert!(m.insert(&[1.0, 1.0, 1.0, 1.0], &[1.0; 4], 1.0, 3).is_err());
        assert!(m.retrieve(&[1.0; 4], 1, Metric::Euclidean).is_err());
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn rejects_bad_input_and_keeps_state() {
        let mut m = mem(8, 100);
        assert!(m.insert(&[1.0], &[1.0, 1.0], 1.0, 0).is_err());
        assert!(m.insert(&[1.0, f32::NAN], &[1.0, 1.0], 1.0, 0).is_err());
        assert!(m.is_empty());
        let mut off = mem(0, 0);
        off.insert(&[1.0, 1.0], &[1.0, 1.0], 1.0, 0).unwrap();
        assert!(off.is_empty());
    }
}
