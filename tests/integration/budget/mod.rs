//! Budget mode of the threshold (docs/threshold-budget.md): the controller
//! reaches its target, every rank holds the same threshold, the threshold
//! stays in its bounds, no budget changes nothing, and a checkpoint
//! continues the controller bitwise.
//!
//! `run_ranks` is this suite's harness: W thread ranks of [`SparseSync`]
//! over a [`LocalCollective`] on host slices, each recording per step what
//! the controller needs checking (the f64 threshold for the next step, not
//! only the report's f32).

mod bounds;
mod restart;
mod target;

use crate::common::SplitMix64;
use chronos_sync::{CpuBackend, LocalCollective, SparseSync, StepReport, SyncConfig};
use std::thread;
use std::time::Duration;

/// What one rank saw in one step.
#[derive(Debug, Clone, Copy)]
pub struct StepTrace {
    /// The step, from 1.
    pub t: u64,
    /// The step's report.
    pub report: StepReport,
    /// Bits of the f64 threshold the next step will use.
    pub next_tau: u64,
    /// FNV-1a over the parameters' bits after the step.
    pub theta_hash: u64,
}

/// One rank's run: its trace, and its state at the end.
pub struct RankRun {
    /// Per step, in order.
    pub trace: Vec<StepTrace>,
    /// `SparseSync::checkpoint` after the last step.
    pub checkpoint: Vec<u8>,
    /// The parameters after the last step.
    pub theta: Vec<f32>,
}

/// Where each rank starts: its parameters and, to continue a run, the
/// checkpoint to restore first.
pub struct Start {
    /// Parameters.
    pub theta: Vec<f32>,
    /// A checkpoint to restore before the first step.
    pub checkpoint: Option<Vec<u8>>,
}

/// Runs `starts.len()` ranks through steps `first..=last` with the update
/// `updates(rank, t, out)`. Panics on any step error (a rank that panics
/// makes its peers time out and panic too).
pub fn run_ranks(
    config: &SyncConfig,
    starts: Vec<Start>,
    first: u64,
    last: u64,
    updates: &(dyn Fn(usize, u64, &mut [f32]) + Sync),
) -> Vec<RankRun> {
    let world = starts.len();
    let handles = LocalCollective::group(world, Duration::from_secs(30)).expect("group");
    thread::scope(|s| {
        let joins: Vec<_> = handles
            .into_iter()
            .zip(starts)
            .enumerate()
            .map(|(rank, (c, start))| {
                s.spawn(move || {
                    let n = start.theta.len();
                    let mut sync = SparseSync::new(CpuBackend::new(), c, n, config.clone()).expect("engine");
                    if let Some(bytes) = &start.checkpoint {
                        sync.restore(bytes).expect("restore");
                    }
                    assert_eq!(sync.steps() + 1, first, "rank {rank} starts at the wrong step");
                    let mut theta = start.theta;
                    let mut delta = vec![0.0f32; n];
                    let mut trace = Vec::with_capacity((last + 1 - first) as usize);
                    for t in first..=last {
                        updates(rank, t, &mut delta);
                        let report =
                            sync.step(&delta, &mut theta).unwrap_or_else(|e| panic!("rank {rank} step {t}: {e}"));
                        let next_tau = sync.next_threshold().to_bits();
                        trace.push(StepTrace { t, report, next_tau, theta_hash: hash_bits(&theta) });
                    }
                    RankRun { trace, checkpoint: sync.checkpoint().expect("checkpoint"), theta }
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().expect("rank thread panicked")).collect()
    })
}

/// Fresh starts for `world` ranks with the same seeded parameters.
pub fn fresh(world: usize, n: usize, seed: u64) -> Vec<Start> {
    let theta = crate::common::initial_params(seed, n, 1.0);
    (0..world).map(|_| Start { theta: theta.clone(), checkpoint: None }).collect()
}

/// A stationary workload: every step, rank `r` adds a seeded uniform update
/// in `[-scale(r), scale(r))` to every entry.
pub fn stationary(seed: u64, scale: impl Fn(usize) -> f32 + Sync) -> impl Fn(usize, u64, &mut [f32]) + Sync {
    move |rank, t, out| {
        let mut g = SplitMix64::stream(seed, rank as u64, t);
        let s = scale(rank);
        out.iter_mut().for_each(|x| *x = s * g.signed_unit());
    }
}

fn hash_bits(v: &[f32]) -> u64 {
    v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        x.to_bits().to_le_bytes().iter().fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
    })
}

/// The trace as text, `step tau synced` per line, for failure messages.
pub fn render(trace: &[StepTrace]) -> String {
    trace
        .iter()
        .map(|s| format!("{} {:.6e} {}", s.t, s.report.threshold, u8::from(s.report.synced)))
        .collect::<Vec<_>>()
        .join("\n")
}
