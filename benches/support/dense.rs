//! The dense all-reduce baseline: every step, every rank all-gathers its
//! whole f32 update through the collective and adds all of them, in rank
//! order, to its parameters. No accumulator, no vote, no selection.
//!
//! Traffic model per rank and step (compulsory bytes, `n` elements, W
//! ranks): send `4n` (read `delta`), receive `4Wn` (write the gathered
//! buffer), sum pass reads the `4Wn` gathered bytes and `theta` and writes
//! `theta`: `4n + 8Wn + 8n` bytes. The network bytes are `4n` sent and
//! `4(W-1)n` received.

use chronos_sync::{Collective, Gathered, Result};
use rayon::prelude::*;

/// Elements per rayon task.
const BLOCK: usize = 1 << 16;
/// Elements summed at a time on the stack, in rank order.
const SUB: usize = 1024;

/// One rank's dense all-reduce step.
pub struct DenseAllReduce<C: Collective> {
    collective: C,
    lens: Vec<u64>,
    gathered: Gathered,
}

impl<C: Collective> DenseAllReduce<C> {
    /// A rank of the dense baseline for vectors of `n` elements.
    pub fn new(collective: C, n: usize) -> Self {
        let lens = vec![4 * n as u64; collective.world_size()];
        DenseAllReduce { collective, lens, gathered: Gathered::new() }
    }

    /// Compulsory memory traffic of one step (see the module docs).
    pub fn traffic_bytes(n: usize, world: usize) -> u64 {
        let n = n as u64;
        4 * n + 8 * world as u64 * n + 8 * n
    }

    /// `theta += (1/W) * sum_r delta_r` (rank order, f32). Returns the bytes
    /// this rank sent.
    pub fn step(&mut self, delta: &[f32], theta: &mut [f32]) -> Result<u64> {
        let world = self.collective.world_size();
        self.collective.all_gather_bytes(bytemuck::cast_slice(delta), &self.lens, &mut self.gathered)?;
        let weight = 1.0 / world as f32;
        let n = delta.len();
        let gathered = &self.gathered;
        let rank_values = |r: usize| -> &[f32] {
            // The gathered buffer is one heap allocation (aligned for f32)
            // holding whole f32 vectors back to back.
            bytemuck::try_cast_slice(gathered.rank_bytes(r)).expect("gathered f32 vectors are aligned")
        };
        theta.par_chunks_mut(BLOCK).enumerate().for_each(|(b, t)| {
            let base = b * BLOCK;
            let mut sum = [0.0f32; SUB];
            for (s, t) in t.chunks_mut(SUB).enumerate() {
                let lo = base + s * SUB;
                let sum = &mut sum[..t.len()];
                sum.fill(0.0);
                for r in 0..world {
                    let v = &rank_values(r)[lo..lo + t.len()];
                    sum.iter_mut().zip(v).for_each(|(s, v)| *s += *v);
                }
                t.iter_mut().zip(sum.iter()).for_each(|(t, s)| *t += weight * *s);
            }
        });
        debug_assert_eq!(gathered.total_len(), 4 * n * world);
        Ok(4 * delta.len() as u64)
    }
}
