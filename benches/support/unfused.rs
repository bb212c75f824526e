//! The baseline the fused kernels are measured against: a re-implementation
//! (written here, not the seed's code) of the seed's structure
//! (ichbingautam/chronos, `SignificanceFilter`), one separate pass per
//! quantity, each pass as good as a plain loop gets (multi-threaded on the
//! same rayon pool, 8 independent f64 lanes per sum, no temporaries), so
//! the comparison isolates what fusion saves rather than a slow baseline.
//!
//! Traffic of [`Unfused::accumulate`] (what its passes really move):
//! `acc += delta` 12 B/elem, `sum(acc^2)` 4, `sum(theta^2)` 4, non-finite
//! scan of `delta` 4 and of `theta` 4, level-1 histogram of `acc` 4:
//! 32 B/elem, against the fused pass's 16 B/elem for the same results.
//! The roofline table charges both with the operation's compulsory 16 B/elem,
//! so their GB/s ratio is their speed ratio.

use rayon::prelude::*;

/// Elements per rayon task.
const BLOCK: usize = 1 << 16;
/// Bins of the level-1 histogram (docs/selection.md: `key >> 20`).
const HIST_BINS: usize = 2048;
const KEY_MASK: u32 = 0x7fff_ffff;
const EXP_MASK: u32 = 0x7f80_0000;

/// What the unfused accumulate computes: the same quantities as the fused pass.
#[derive(Debug, Clone)]
pub struct UnfusedStatus {
    /// `sum(acc^2)` after accumulating.
    pub acc_sq: f64,
    /// `sum(theta^2)`.
    pub theta_sq: f64,
    /// Non-finite values in `delta` and `theta`.
    pub nonfinite: u64,
    /// `s = sqrt(A) / max(sqrt(P), 1e-8)`.
    pub significance: f64,
    /// Level-1 histogram of `acc`.
    pub hist: Vec<u32>,
}

/// State in the seed's style (re-implemented): one accumulator, updated in place.
pub struct Unfused {
    /// The accumulator.
    pub acc: Vec<f32>,
}

/// `sum(x^2)` of one block in 8 f64 lanes (a single chain would be bound by
/// the add latency, not by memory).
fn sum_sq(x: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += f64::from(*v) * f64::from(*v);
        }
    }
    let tail: f64 = it.remainder().iter().map(|v| f64::from(*v) * f64::from(*v)).sum();
    lanes.iter().sum::<f64>() + tail
}

fn par_sum_sq(x: &[f32]) -> f64 {
    x.par_chunks(BLOCK).map(sum_sq).sum()
}

fn par_nonfinite(x: &[f32]) -> u64 {
    x.par_chunks(BLOCK).map(|c| c.iter().filter(|v| v.to_bits() & EXP_MASK == EXP_MASK).count() as u64).sum()
}

fn par_hist(x: &[f32]) -> Vec<u32> {
    x.par_chunks(BLOCK)
        .fold(
            || vec![0u32; HIST_BINS],
            |mut h, c| {
                for v in c {
                    h[((v.to_bits() & KEY_MASK) >> 20) as usize] += 1;
                }
                h
            },
        )
        .reduce(
            || vec![0u32; HIST_BINS],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            },
        )
}

impl Unfused {
    /// A zero accumulator of `n` elements.
    pub fn new(n: usize) -> Unfused {
        Unfused { acc: vec![0.0; n] }
    }

    /// The seed's step up to the significance test, one pass per quantity.
    pub fn accumulate(&mut self, delta: &[f32], theta: &[f32]) -> UnfusedStatus {
        self.acc.par_chunks_mut(BLOCK).zip(delta.par_chunks(BLOCK)).for_each(|(a, d)| {
            a.iter_mut().zip(d).for_each(|(a, d)| *a += *d);
        });
        let acc_sq = par_sum_sq(&self.acc);
        let theta_sq = par_sum_sq(theta);
        let nonfinite = par_nonfinite(delta) + par_nonfinite(theta);
        let hist = par_hist(&self.acc);
        let significance = acc_sq.sqrt() / theta_sq.sqrt().max(1e-8);
        UnfusedStatus { acc_sq, theta_sq, nonfinite, significance, hist }
    }

    /// The seed's sync for `TopK { ratio }`: a full sort of all indices by
    /// magnitude (ties to the lower index), the first `k` packed as
    /// `(i64 index, f32 value)` pairs into `out`, then the residual update the
    /// seed's way (scatter what was sent into a dense zero vector, subtract it
    /// from the whole accumulator). Returns the packed length.
    pub fn topk_sort_pack(&mut self, ratio: f64, out: &mut Vec<u8>) -> usize {
        let n = self.acc.len();
        let k = ((n as f64 * ratio).floor() as usize).clamp(1, n);
        let acc = &self.acc;
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.par_sort_unstable_by(|&a, &b| {
            let (ka, kb) = (acc[a as usize].to_bits() & KEY_MASK, acc[b as usize].to_bits() & KEY_MASK);
            kb.cmp(&ka).then(a.cmp(&b))
        });
        out.clear();
        for &i in &order[..k] {
            out.extend_from_slice(&i64::from(i).to_le_bytes());
        }
        for &i in &order[..k] {
            out.extend_from_slice(&acc[i as usize].to_le_bytes());
        }
        let mut sent = vec![0.0f32; n];
        for &i in &order[..k] {
            sent[i as usize] = acc[i as usize];
        }
        self.acc.par_chunks_mut(BLOCK).zip(sent.par_chunks(BLOCK)).for_each(|(a, s)| {
            a.iter_mut().zip(s).for_each(|(a, s)| *a -= *s);
        });
        out.len()
    }
}
