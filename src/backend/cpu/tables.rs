//! Histogram tables shared by the parallel passes: one set per worker
//! thread, so that the index range can be cut into many small tasks (which
//! keeps both cores busy when the machine is shared) without a table per task.
//!
//! A task locks the table set of the thread running it for the duration of
//! one block; the lock is uncontended unless the pool is larger than the
//! number of sets, and no rayon call happens while it is held. Counts are
//! integers, so which set a block lands in never changes a result.

use std::sync::{Mutex, MutexGuard};

use super::state::HIST_BINS;

/// Tables per set: the fused pass spreads lanes over them (see `fused`).
pub(super) const SUB_TABLES: usize = 4;
/// Counters in one set.
pub(super) const SET_LEN: usize = SUB_TABLES * HIST_BINS;

/// Per-thread sets of `SUB_TABLES` histograms of `HIST_BINS` counters.
#[derive(Debug)]
pub(super) struct Tables {
    sets: Vec<Mutex<Box<[u32; SET_LEN]>>>,
}

impl Tables {
    /// One set per worker thread (at least one).
    pub(super) fn new(threads: usize) -> Tables {
        Tables { sets: (0..threads.max(1)).map(|_| Mutex::new(Box::new([0; SET_LEN]))).collect() }
    }

    fn lock(set: &Mutex<Box<[u32; SET_LEN]>>) -> MutexGuard<'_, Box<[u32; SET_LEN]>> {
        // A poisoned set only means a panic elsewhere; the counters are plain data.
        set.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Zeroes every counter.
    pub(super) fn zero(&self) {
        for set in &self.sets {
            Self::lock(set).fill(0);
        }
    }

    /// Runs `f` on the set of the current worker thread.
    #[inline]
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut [u32; SET_LEN]) -> R) -> R {
        let slot = rayon::current_thread_index().unwrap_or(0) % self.sets.len();
        f(&mut Self::lock(&self.sets[slot]))
    }

    /// `out[b] = sum of counter b over every table of every set`.
    pub(super) fn sum_into(&self, out: &mut [u32]) {
        out.fill(0);
        for set in &self.sets {
            for table in Self::lock(set).chunks_exact(HIST_BINS) {
                for (o, &c) in out.iter_mut().zip(table) {
                    *o += c;
                }
            }
        }
    }
}
