//! An f64 reference of /work/shared/spec/sync.md, written for clarity rather
//! than speed. W ranks are simulated one after another in one thread.
//!
//! What is f64 and what is f32 follows the spec: the accumulators and the
//! parameters are f32 (they are the state every backend must reproduce to the
//! bit), the norms and the significance are f64 (the quantities a backend must
//! match within 1e-5). Selection follows docs/selection.md by the most direct
//! means available: `TopK` by a full sort, `TopKApprox` by literal histograms,
//! `Threshold` by a plain comparison. Packed bytes come from the crate's own
//! encoder (`PackedDelta::encode`); the values put into it are converted here
//! with `half`, independently of `chronos_sync::wire::quantize`.

#![allow(dead_code)] // each suite uses a different subset

use chronos_sync::wire::PackedDelta;
use chronos_sync::{Selection, SyncConfig, WireDtype};
use half::{bf16, f16};

/// The selection key of docs/selection.md: the bits of `|x|`.
pub fn key(x: f32) -> u32 {
    x.to_bits() & 0x7FFF_FFFF
}

/// `TopK`: the `k` entries of largest magnitude, ties to the lower index, by
/// sorting every index on `(|acc| descending, index ascending)`. Returned in
/// increasing index order.
pub fn top_k_by_sort(acc: &[f32], k: usize) -> Vec<usize> {
    assert!(acc.len() < 1 << 32, "reference sorts (key, index) pairs packed in a u64");
    // One u64 per entry whose natural order is (key descending, index ascending).
    let mut order: Vec<u64> = (0..acc.len()).map(|i| (u64::from(!key(acc[i])) << 32) | i as u64).collect();
    order.sort_unstable();
    let mut chosen: Vec<usize> = order[..k.min(acc.len())].iter().map(|&p| (p & 0xFFFF_FFFF) as usize).collect();
    chosen.sort_unstable();
    chosen
}

/// The cut search of docs/selection.md, one level at a time, with literal
/// histograms. `kmax = k` gives exact top-k; larger `kmax` is `TopKApprox`.
pub fn radix_select(acc: &[f32], k: usize, kmax: usize) -> Vec<usize> {
    // (shift, bits) of each level's digit.
    const LEVELS: [(u32, u32); 3] = [(20, 11), (9, 11), (0, 9)];
    let mut above = 0usize; // entries certainly selected (keys above the prefix's range)
    let mut prefix = 0u32; // key bits fixed so far
    let mut prefix_mask = 0u32; // which bits of `prefix` are fixed
    for (shift, width) in LEVELS {
        let bins = 1usize << width;
        let mut hist = vec![0usize; bins];
        for &x in acc {
            let kx = key(x);
            if kx & prefix_mask == prefix {
                hist[((kx >> shift) as usize) & (bins - 1)] += 1;
            }
        }
        // Scan from the highest bin down until `above + (entries in bins >= b)` reaches k.
        let mut ge = above;
        let mut b = bins - 1;
        loop {
            ge += hist[b];
            if ge >= k || b == 0 {
                break;
            }
            b -= 1;
        }
        if ge <= kmax {
            let cut = prefix | ((b as u32) << shift);
            return (0..acc.len()).filter(|&i| key(acc[i]) >= cut).collect();
        }
        above = ge - hist[b];
        prefix |= (b as u32) << shift;
        prefix_mask |= (((1u32 << width) - 1) << shift) & 0x7FFF_FFFF;
    }
    // Every level used: `prefix` is one exact key T whose ties straddle the boundary.
    let t = prefix;
    let mut chosen: Vec<usize> = (0..acc.len()).filter(|&i| key(acc[i]) > t).collect();
    let ties = (0..acc.len()).filter(|&i| key(acc[i]) == t).take(k - above);
    chosen.extend(ties);
    chosen.sort_unstable();
    chosen
}

/// The cut of `Threshold { rel }`: `(rel as f32) * sqrt(A / n)` in f32, with
/// `A` the status's `sum(acc^2)` (here the f64 sum rounded to f32).
pub fn threshold_cut(rel: f64, acc_sq: f64, n: usize) -> f32 {
    (rel as f32) * ((acc_sq as f32) / (n as f32)).sqrt()
}

/// `Threshold`: every entry with `key >= bits(cut)`.
pub fn threshold_select(acc: &[f32], cut: f32) -> Vec<usize> {
    let c = key(cut);
    (0..acc.len()).filter(|&i| key(acc[i]) >= c).collect()
}

/// The indices a rule selects from `acc` (increasing), given the f64
/// `sum(acc^2)`.
pub fn select(acc: &[f32], rule: Selection, acc_sq: f64) -> Vec<usize> {
    let n = acc.len();
    match rule {
        Selection::TopK { .. } => top_k_by_sort(acc, rule.k(n).unwrap()),
        Selection::TopKApprox { slack, .. } => {
            let k = rule.k(n).unwrap();
            let kmax = ((k as f64) * (1.0 + slack)).floor() as usize;
            radix_select(acc, k, kmax.max(k))
        }
        Selection::Threshold { rel } => threshold_select(acc, threshold_cut(rel, acc_sq, n)),
        Selection::Dense => (0..n).collect(),
        other => panic!("reference does not know {other:?}"),
    }
}

/// What a receiver decodes for `x` sent as `dtype`: round to nearest even
/// with `half`, saturating to the largest finite magnitude.
pub fn to_wire(x: f32, dtype: WireDtype) -> f32 {
    match dtype {
        WireDtype::F32 => x,
        WireDtype::F16 => {
            let h = f16::from_f32(x);
            if h.is_infinite() { f16::MAX.to_f32().copysign(x) } else { h.to_f32() }
        }
        WireDtype::Bf16 => {
            let h = bf16::from_f32(x);
            if h.is_infinite() { bf16::MAX.to_f32().copysign(x) } else { h.to_f32() }
        }
        other => panic!("reference does not know {other:?}"),
    }
}

/// The packed delta for `indices` of `acc`, with values as the receiver sees them.
pub fn packed(acc: &[f32], indices: &[usize], dtype: WireDtype) -> PackedDelta {
    let idx: Vec<u64> = indices.iter().map(|&i| i as u64).collect();
    let vals: Vec<f32> = indices.iter().map(|&i| to_wire(acc[i], dtype)).collect();
    PackedDelta::new(acc.len() as u64, dtype, idx, vals).expect("reference delta is valid")
}

/// One simulated step, as the reference saw it.
#[derive(Debug, Clone)]
pub struct RefStep {
    /// Step number (from 1).
    pub t: u64,
    /// `tau_t`.
    pub tau: f64,
    /// Per rank: `sum(acc^2)` after accumulating, in f64.
    pub acc_sq: Vec<f64>,
    /// Per rank: the significance, in f64.
    pub significance: Vec<f64>,
    /// Per rank: `s > tau` (in f64).
    pub triggered: Vec<bool>,
    /// `since >= max_accumulation_steps`.
    pub forced: bool,
    /// Whether the group synced.
    pub synced: bool,
    /// Per rank: what it sent (empty without a sync).
    pub sent: Vec<PackedDelta>,
    /// Per rank: the encoded buffer (empty without a sync).
    pub bytes: Vec<Vec<u8>>,
}

impl RefStep {
    /// Ranks whose significance is so close to `tau` that an f32 backend may
    /// legitimately decide the other way (relative distance below 1e-5).
    pub fn ambiguous_ranks(&self) -> Vec<usize> {
        (0..self.significance.len())
            .filter(|&r| (self.significance[r] - self.tau).abs() <= 1e-5 * self.tau.abs().max(f64::MIN_POSITIVE))
            .collect()
    }
}

/// The whole group, simulated sequentially.
#[derive(Debug, Clone)]
pub struct Reference {
    /// Configuration (already validated by the caller).
    pub config: SyncConfig,
    /// The parameters, identical on every rank, so stored once.
    pub theta: Vec<f32>,
    /// Per-rank accumulators.
    pub acc: Vec<Vec<f32>>,
    /// Steps completed.
    pub t: u64,
    /// Steps since the last sync.
    pub since: u64,
}

impl Reference {
    /// `world` ranks starting from parameters `theta0` and zero accumulators.
    pub fn new(world: usize, config: SyncConfig, theta0: &[f32]) -> Self {
        Reference { config, theta: theta0.to_vec(), acc: vec![vec![0.0; theta0.len()]; world], t: 0, since: 0 }
    }

    /// Ranks.
    pub fn world(&self) -> usize {
        self.acc.len()
    }

    /// Replaces the state by an implementation's (after a documented,
    /// tolerated boundary difference), so later steps compare from the same start.
    pub fn rebase(&mut self, theta: &[f32], acc: &[Vec<f32>]) {
        self.theta.copy_from_slice(theta);
        for (mine, theirs) in self.acc.iter_mut().zip(acc) {
            mine.copy_from_slice(theirs);
        }
    }

    /// Phase one of a step on every rank: accumulate (into new vectors, so
    /// the state is untouched), norms, significance, threshold test.
    /// Non-finite input returns the offending ranks.
    pub fn accumulate(&self, deltas: &[&[f32]]) -> Result<Pending, Vec<usize>> {
        let world = self.world();
        assert_eq!(deltas.len(), world);
        let theta_finite = self.theta.iter().all(|x| x.is_finite());
        let bad: Vec<usize> =
            (0..world).filter(|&r| !theta_finite || deltas[r].iter().any(|x| !x.is_finite())).collect();
        if !bad.is_empty() {
            return Err(bad);
        }
        let acc: Vec<Vec<f32>> =
            (0..world).map(|r| self.acc[r].iter().zip(deltas[r]).map(|(&a, &d)| a + d).collect()).collect();
        let p: f64 = self.theta.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let t = self.t + 1;
        let tau = self.config.tau(t);
        let acc_sq: Vec<f64> = acc.iter().map(|a| a.iter().map(|&x| f64::from(x) * f64::from(x)).sum()).collect();
        let significance: Vec<f64> = acc_sq.iter().map(|&a| a.sqrt() / p.sqrt().max(1e-8)).collect();
        let triggered: Vec<bool> = significance.iter().map(|&s| s > tau).collect();
        let forced = self.since + 1 >= self.config.max_accumulation_steps;
        let step = RefStep {
            t,
            tau,
            acc_sq,
            significance,
            triggered,
            forced,
            synced: false,
            sent: Vec::new(),
            bytes: Vec::new(),
        };
        Ok(Pending { acc, step })
    }

    /// Phase two: commit the accumulators, vote, and on a sync select, pack,
    /// exchange and apply. `vote` overrides the decision (used when a rank's
    /// significance sits within f32 rounding of `tau`, see
    /// [`RefStep::ambiguous_ranks`]); `None` decides as the spec says.
    pub fn finish(&mut self, pending: Pending, vote: Option<bool>) -> RefStep {
        let Pending { acc, mut step } = pending;
        let world = self.world();
        let n = self.theta.len();
        self.acc = acc;
        self.t = step.t;
        self.since += 1;
        step.synced = vote.unwrap_or(step.forced || step.triggered.iter().any(|&x| x));
        if !step.synced {
            return step;
        }

        // Select and pack, per rank.
        let dtype = self.config.wire_dtype;
        for r in 0..world {
            let chosen = select(&self.acc[r], self.config.selection, step.acc_sq[r]);
            let delta = packed(&self.acc[r], &chosen, dtype);
            step.bytes.push(delta.encode().unwrap());
            step.sent.push(delta);
        }

        // Exchange and apply: rank-order f32 sums from +0.0, then one
        // multiply and one add per index present in any buffer.
        let weight = self.config.apply_weight.unwrap_or(1.0 / world as f32);
        let mut sum = vec![0.0f32; n];
        let mut touched = vec![false; n];
        for delta in &step.sent {
            for (&i, &v) in delta.indices.iter().zip(&delta.values) {
                sum[i as usize] += v;
                touched[i as usize] = true;
            }
        }
        for i in 0..n {
            if touched[i] {
                let scaled = weight * sum[i];
                self.theta[i] += scaled;
            }
        }

        // Error feedback on each rank's own entries.
        for (r, delta) in step.sent.iter().enumerate() {
            if self.config.error_feedback {
                for (&i, &v) in delta.indices.iter().zip(&delta.values) {
                    self.acc[r][i as usize] -= v;
                }
            } else {
                self.acc[r].iter_mut().for_each(|a| *a = 0.0);
            }
        }
        self.since = 0;
        step
    }

    /// A whole step as the spec decides it.
    pub fn step(&mut self, deltas: &[&[f32]]) -> Result<RefStep, Vec<usize>> {
        let pending = self.accumulate(deltas)?;
        Ok(self.finish(pending, None))
    }
}

/// A step between [`Reference::accumulate`] and [`Reference::finish`].
#[derive(Debug, Clone)]
pub struct Pending {
    /// The new accumulators.
    pub acc: Vec<Vec<f32>>,
    /// The step so far (`synced` not yet decided).
    pub step: RefStep,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radix_select_without_slack_is_exact_top_k() {
        let mut g = crate::common::SplitMix64::new(7);
        for n in [1usize, 2, 5, 100, 1000] {
            // Few distinct magnitudes, many ties, signs mixed, zeros included.
            let acc: Vec<f32> = (0..n).map(|_| (g.below(7) as f32 - 3.0) * 0.25).collect();
            for k in [1, n / 3 + 1, n] {
                assert_eq!(radix_select(&acc, k, k), top_k_by_sort(&acc, k), "n={n} k={k}");
            }
        }
    }

    #[test]
    fn radix_select_with_slack_stays_within_bounds() {
        let mut g = crate::common::SplitMix64::new(8);
        let acc: Vec<f32> = (0..5000).map(|_| g.normal() as f32).collect();
        for (k, kmax) in [(50, 75), (1, 1), (500, 500), (100, 10_000)] {
            let got = radix_select(&acc, k, kmax);
            assert!(got.len() >= k && got.len() <= kmax, "k={k} kmax={kmax} got {}", got.len());
            // Everything unselected is no larger than everything selected.
            let min_in = got.iter().map(|&i| key(acc[i])).min().unwrap();
            let in_set: std::collections::HashSet<usize> = got.iter().copied().collect();
            assert!((0..acc.len()).filter(|i| !in_set.contains(i)).all(|i| key(acc[i]) <= min_in));
        }
    }

    #[test]
    fn to_wire_rounds_and_saturates() {
        assert_eq!(to_wire(1e6, WireDtype::F16), 65504.0);
        assert_eq!(to_wire(-1e6, WireDtype::F16), -65504.0);
        assert_eq!(to_wire(f32::MAX, WireDtype::Bf16), bf16::MAX.to_f32());
        assert_eq!(to_wire(1.0 + 1.0 / 512.0, WireDtype::Bf16), 1.0); // tie -> even
        assert_eq!(to_wire(0.1, WireDtype::F32), 0.1);
    }

    #[test]
    fn a_dense_sync_of_two_ranks_averages_their_updates() {
        let config = SyncConfig::builder()
            .adaptive(false)
            .threshold(0.0)
            .selection(Selection::Dense)
            .wire_dtype(WireDtype::F32)
            .build()
            .unwrap();
        let mut r = Reference::new(2, config, &[1.0, -0.0, 2.0]);
        let step = r.step(&[&[0.5, 0.0, 1.0], &[1.5, 0.0, -1.0]]).unwrap();
        assert!(step.synced);
        assert_eq!(r.theta, [2.0, 0.0, 2.0]);
        assert!(r.theta[1].is_sign_positive()); // -0.0 + 0.5 * (+0.0 + 0.0) = +0.0
        assert!(r.acc.iter().all(|a| a.iter().all(|&x| x == 0.0)));
        assert!(r.step(&[&[f32::NAN, 0.0, 0.0], &[0.0; 3]]).unwrap_err() == [0]);
        assert_eq!(r.t, 1);
    }
}
