//! Which entries a sync sends: the radix cut search of docs/selection.md for
//! the top-k rules, the RMS cut for `Threshold`, everything for `Dense`.
//! The result is a [`Cut`]; `pack` turns it into per-chunk counts and bytes.

use rayon::prelude::*;

use super::fused::{BLOCK, key, sum_tables, table};
use super::state::{CpuState, HIST_BINS};
use crate::config::Selection;

/// A selection, as a predicate on the keys (`bits(|x|)`) in index order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    /// Every index whose key is at least this.
    AtLeast(u32),
    /// Every index whose key is above `key`, plus the first `ties` indices
    /// (lowest index first) whose key equals it.
    Exact {
        /// The exact boundary key `T` found at level 3.
        key: u32,
        /// How many of the entries equal to `T` are taken.
        ties: u64,
    },
}

/// One digit level of the cut search.
struct Level {
    /// The digit is `(key >> shift) & mask`.
    shift: u32,
    mask: u32,
}

/// Levels 1, 2, 3: digits `key >> 20`, `(key >> 9) & 0x7FF`, `key & 0x1FF`.
const LEVELS: [Level; 3] = [
    Level {
        shift: 20,
        mask: 0x7ff,
    },
    Level {
        shift: 9,
        mask: 0x7ff,
    },
    Level {
        shift: 0,
        mask: 0x1ff,
    },
];

/// `kmax` of docs/selection.md for `TopKApprox`: `floor(k * (1 + slack))`.
pub(super) fn kmax(k: u64, slack: f64) -> u64 {
    ((k as f64 * (1.0 + slack)).floor() as u64).max(k)
}

/// The selection of the committed accumulator under the state's rule. Reads
/// `state.stats`, which the caller has made current.
pub(super) fn cut(state: &mut CpuState) -> Cut {
    let k = state.selection.k(state.n).unwrap_or(state.n) as u64;
    match state.selection {
        Selection::Dense => Cut::AtLeast(0),
        Selection::Threshold { rel } => {
            // In f32, from `A` exactly as the status reported it.
            let c = (rel as f32) * (state.stats.acc_sq / state.n as f32).sqrt();
            Cut::AtLeast(key(c))
        }
        Selection::TopK { .. } => search(state, k, k),
        Selection::TopKApprox { slack, .. } => search(state, k, kmax(k, slack)),
    }
}

/// The cut search of docs/selection.md for `k <= kmax`, `1 <= k <= n`.
fn search(state: &mut CpuState, k: u64, kmax: u64) -> Cut {
    let mut above = 0u64;
    let mut prefix = 0u32;
    for (depth, level) in LEVELS.iter().enumerate() {
        if depth > 0 {
            // Keys whose higher digits equal the prefix chosen so far.
            let higher = LEVELS[depth - 1].shift;
            level_histogram(state, level, higher, prefix >> higher);
        }
        let hist = if depth == 0 {
            &state.stats.hist1
        } else {
            &state.level_hist
        };
        let bins = level.mask as usize + 1;
        let mut ge = above;
        let mut bin = bins - 1;
        loop {
            ge += u64::from(hist[bin]);
            if ge >= k || bin == 0 {
                break;
            }
            bin -= 1;
        }
        let with_bin = prefix | ((bin as u32) << level.shift);
        if ge <= kmax {
            return Cut::AtLeast(with_bin);
        }
        above = ge - u64::from(hist[bin]);
        prefix = with_bin;
    }
    Cut::Exact {
        key: prefix,
        ties: k - above,
    }
}

/// Fills `state.level_hist` with the histogram of `level`'s digit over the
/// keys `x` of the accumulator with `x >> higher == want`.
fn level_histogram(state: &mut CpuState, level: &Level, higher: u32, want: u32) {
    let task_elems = state.blocks_per_task * BLOCK;
    let (shift, mask) = (level.shift, level.mask);
    state
        .acc
        .par_chunks(task_elems)
        .zip(state.task_hists.par_chunks_mut(HIST_BINS))
        .for_each(|(acc, hist)| {
            let hist = table(hist);
            hist.fill(0);
            for &x in acc {
                let k = key(x);
                if k >> higher == want {
                    hist[((k >> shift) & mask) as usize] += 1;
                }
            }
        });
    let tasks = state.n.div_ceil(task_elems);
    sum_tables(&state.task_hists, tasks, &mut state.level_hist);
}
