//! Ready-made inputs for the kernel benches: configurations, backend states
//! with a realistic accumulator, packed buffers from several ranks, and
//! groups of `SparseSync` engines.

use super::data::normal_vec;
use chronos_sync::{
    Backend, CpuBackend, Gathered, LocalCollective, Selection, SparseSync, StepStatus, SyncConfig, WireDtype,
};
use std::time::Duration;

/// Collective timeout for benches: generous, a 2^26 step on a busy 2-core
/// machine takes a while, but a hang still ends.
pub const TIMEOUT: Duration = Duration::from_secs(300);
/// Scale of the per-step update relative to the parameters (~N(0, 1)).
pub const DELTA_SCALE: f32 = 1e-3;

/// Whether a step's significance test fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Threshold far above any significance and no forced sync: accumulate only.
    Never,
    /// Threshold 0: every step with a non-zero accumulator syncs.
    Always,
}

/// A validated config with `selection`, bf16 values and the trigger behaviour.
pub fn config(selection: Selection, trigger: Trigger) -> SyncConfig {
    let b = SyncConfig::builder().adaptive(false).selection(selection).wire_dtype(WireDtype::Bf16);
    let b = match trigger {
        Trigger::Never => b.threshold(1e30).max_threshold(1e30).max_accumulation_steps(u64::MAX),
        Trigger::Always => b.threshold(0.0).min_threshold(0.0),
    };
    b.build().expect("bench config is valid")
}

/// Short name of a selection rule for bench ids.
pub fn rule_name(sel: &Selection) -> &'static str {
    match sel {
        Selection::TopK { .. } => "TopK",
        Selection::TopKApprox { .. } => "TopKApprox",
        Selection::Threshold { .. } => "Threshold",
        Selection::Dense => "Dense",
        _ => "other",
    }
}

/// `rel` for `Selection::Threshold` that keeps about `density` of the
/// entries of `acc`: the matching quantile of `|acc_i| / rms(acc)`,
/// estimated on a strided sample.
pub fn threshold_rel_for_density(acc: &[f32], density: f64) -> f64 {
    let rms = (acc.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>() / acc.len() as f64).sqrt();
    let stride = (acc.len() / 65_536).max(1);
    let mut sample: Vec<f64> = acc.iter().step_by(stride).map(|x| f64::from(x.abs()) / rms.max(1e-30)).collect();
    sample.sort_by(f64::total_cmp);
    let at = ((1.0 - density) * sample.len() as f64) as usize;
    sample[at.min(sample.len() - 1)]
}

/// A backend state for `config` whose committed accumulator holds
/// `steps` accumulated random updates (nothing sent). Returns the state and
/// the last status.
pub fn filled_state(
    backend: &CpuBackend,
    n: usize,
    config: &SyncConfig,
    steps: u64,
    seed: u64,
) -> (<CpuBackend as Backend>::State, StepStatus) {
    let theta = normal_vec(n, 1.0, seed ^ 0x7e7a);
    let mut state = backend.create_state(n, config).expect("create_state");
    let mut status = StepStatus::default();
    for s in 0..steps {
        let delta = normal_vec(n, DELTA_SCALE, seed.wrapping_add(s));
        status = backend.accumulate(&mut state, &delta, &theta, f32::INFINITY).expect("accumulate");
        backend.commit_accumulate(&mut state).expect("commit");
    }
    (state, status)
}

/// Packed buffers from `world` ranks (different random accumulators, the same
/// `config`), gathered in rank order as the exchange would deliver them.
/// Also returns rank 0's state, the one `apply` updates.
pub fn gathered_from_ranks(
    backend: &CpuBackend,
    n: usize,
    config: &SyncConfig,
    world: usize,
) -> (<CpuBackend as Backend>::State, Gathered) {
    let mut gathered = Gathered::new();
    let mut own = None;
    let mut buffers = Vec::new();
    for r in 0..world {
        let (mut state, _) = filled_state(backend, n, config, 1, 1000 + r as u64);
        buffers.push(backend.select_pack(&mut state).expect("select_pack").to_vec());
        if r == 0 {
            own = Some(state);
        }
    }
    let lens: Vec<u64> = buffers.iter().map(|b| b.len() as u64).collect();
    gathered.reset(&lens).expect("lengths of real buffers");
    for b in &buffers {
        gathered.push_rank(b);
    }
    (own.expect("world >= 1"), gathered)
}

/// One `SparseSync` per rank of a fresh `LocalCollective` group, each on
/// the CPU backend (sharing rayon's global pool, as ranks in one process do).
pub fn engines(world: usize, n: usize, config: &SyncConfig) -> Vec<SparseSync<CpuBackend, LocalCollective>> {
    LocalCollective::group(world, TIMEOUT)
        .expect("collective group")
        .into_iter()
        .map(|c| SparseSync::new(CpuBackend::new(), c, n, config.clone()).expect("SparseSync::new"))
        .collect()
}
