//! The controller's state is in the checkpoint: a job checkpointed after N
//! steps and restored into fresh engines continues bitwise like the
//! uninterrupted job; budget states that the configuration could not have
//! produced are refused.

use super::{RankRun, Start, fresh, run_ranks, stationary};
use chronos_sync::checkpoint::{BudgetState, Checkpoint};
use chronos_sync::error::CheckpointError;
use chronos_sync::{CpuBackend, Error, LocalCollective, Selection, SparseSync, SyncConfig, ThresholdBudget};
use std::time::Duration;

const WORLD: usize = 4;
const N: usize = 1024;

fn config(budget: ThresholdBudget) -> SyncConfig {
    SyncConfig {
        warmup_steps: 50,
        selection: Selection::TopK { ratio: 0.05 },
        budget: Some(budget),
        ..SyncConfig::default()
    }
}

fn continue_from(runs: &[RankRun]) -> Vec<Start> {
    runs.iter().map(|r| Start { theta: r.theta.clone(), checkpoint: Some(r.checkpoint.clone()) }).collect()
}

/// N = 300 steps (well past warm-up, the controller has moved), then
/// M = 200: the restored job's thresholds, verdicts and parameters equal
/// the uninterrupted job's bit for bit, and so do the final checkpoints.
#[test]
fn restore_continues_the_controller_bitwise() {
    for budget in [ThresholdBudget::sync_rate(0.15), ThresholdBudget::bytes_per_step(90.0).with_gain(0.1)] {
        let cfg = config(budget);
        let updates = stationary(41, |r| 1e-3 * (1 + r) as f32);
        let whole = run_ranks(&cfg, fresh(WORLD, N, 41), 1, 500, &updates);
        let first = run_ranks(&cfg, fresh(WORLD, N, 41), 1, 300, &updates);
        let saved = Checkpoint::decode(&first[0].checkpoint).unwrap();
        let state = saved.buckets[0].budget.expect("the checkpoint holds the controller");
        assert_ne!(state.tau, cfg.threshold, "{budget:?}: the controller moved before the checkpoint");
        let rest = run_ranks(&cfg, continue_from(&first), 301, 500, &updates);
        for (r, (w, c)) in whole.iter().zip(&rest).enumerate() {
            for (a, b) in w.trace[300..].iter().zip(&c.trace) {
                assert_eq!(a.t, b.t);
                assert_eq!(a.next_tau, b.next_tau, "{budget:?} rank {r} step {}: threshold", a.t);
                assert_eq!(a.report, b.report, "{budget:?} rank {r} step {}: report", a.t);
                assert_eq!(a.theta_hash, b.theta_hash, "{budget:?} rank {r} step {}: parameters", a.t);
            }
            assert_eq!(w.checkpoint, c.checkpoint, "{budget:?} rank {r}: final state");
            crate::common::assert_bitwise_eq("theta", &w.theta, &c.theta);
        }
    }
}

fn engine(config: &SyncConfig) -> SparseSync<CpuBackend, LocalCollective> {
    let c = LocalCollective::group(1, Duration::from_secs(5)).unwrap().remove(0);
    SparseSync::new(CpuBackend::new(), c, 64, config.clone()).unwrap()
}

/// One rank, 80 steps: a checkpoint with a moved controller.
fn trained(config: &SyncConfig) -> Vec<u8> {
    let mut sync = engine(config);
    let mut theta = crate::common::initial_params(5, 64, 1.0);
    let updates = stationary(5, |_| 1e-2);
    let mut delta = vec![0.0; 64];
    for t in 1..=80 {
        updates(0, t, &mut delta);
        sync.step(&delta, &mut theta).unwrap();
    }
    sync.checkpoint().unwrap()
}

fn patched(bytes: &[u8], edit: impl FnOnce(&mut Option<BudgetState>)) -> Vec<u8> {
    let mut c = Checkpoint::decode(bytes).unwrap();
    edit(&mut c.buckets[0].budget);
    let mut out = Vec::new();
    c.encode(&mut out).unwrap();
    out
}

#[track_caller]
fn refused_naming(config: &SyncConfig, bytes: &[u8], field: &str) {
    let mut fresh = engine(config);
    let before = fresh.checkpoint().unwrap();
    match fresh.restore(bytes) {
        Err(Error::Checkpoint(CheckpointError::InvalidField { field: f, .. })) if f == field => {}
        other => panic!("expected InvalidField {{ field: {field} }}, got {other:?}"),
    }
    assert_eq!(fresh.checkpoint().unwrap(), before, "a refused restore changed the engine");
}

#[test]
fn impossible_budget_states_are_refused() {
    let cfg = config(ThresholdBudget::sync_rate(0.2));
    let good = trained(&cfg);
    engine(&cfg).restore(&good).unwrap();
    refused_naming(&cfg, &patched(&good, |b| b.as_mut().unwrap().tau = 0.5), "budget.tau");
    refused_naming(&cfg, &patched(&good, |b| b.as_mut().unwrap().tau = 1e-4), "budget.tau");
    refused_naming(&cfg, &patched(&good, |b| *b = None), "budget");
    // Before the end of warm-up the controller has not moved.
    let early = {
        let mut sync = engine(&cfg);
        let mut theta = vec![1.0f32; 64];
        sync.step(&[1e-3; 64], &mut theta).unwrap();
        sync.checkpoint().unwrap()
    };
    engine(&cfg).restore(&early).unwrap();
    refused_naming(&cfg, &patched(&early, |b| b.as_mut().unwrap().tau = 0.02), "budget.tau");
    // A budget-less configuration with a crafted budget state (the same
    // fingerprint) is refused too.
    let plain = SyncConfig { budget: None, ..cfg.clone() };
    let plain_bytes = trained(&plain);
    let crafted = patched(&plain_bytes, |b| *b = Some(BudgetState { tau: 0.01, mean_bytes: 0.0, syncs: 0 }));
    refused_naming(&plain, &crafted, "budget");
}

/// Another budget is another configuration: the fingerprint differs.
#[test]
fn another_budget_is_a_config_mismatch() {
    let bytes = trained(&config(ThresholdBudget::sync_rate(0.2)));
    for other in [
        config(ThresholdBudget::sync_rate(0.3)),
        config(ThresholdBudget::sync_rate(0.2).with_gain(0.5)),
        config(ThresholdBudget::bytes_per_step(0.2)),
        SyncConfig { budget: None, ..config(ThresholdBudget::sync_rate(0.2)) },
    ] {
        match engine(&other).restore(&bytes) {
            Err(Error::Checkpoint(CheckpointError::ConfigMismatch { .. })) => {}
            r => panic!("{:?}: {r:?}", other.budget),
        }
    }
}

/// A failed step (non-finite input, after warm-up) leaves the controller
/// as it was: the run with a failed step inserted continues bitwise like
/// the run without it, thresholds and checkpoints included.
#[test]
fn a_failed_step_changes_no_controller() {
    for budget in [ThresholdBudget::sync_rate(0.2), ThresholdBudget::bytes_per_step(60.0)] {
        let cfg = config(budget);
        let updates = stationary(7, |_| 1e-2);
        let run = |fail_after: Option<u64>| {
            let mut sync = engine(&cfg);
            let mut theta = crate::common::initial_params(7, 64, 1.0);
            let mut delta = vec![0.0; 64];
            let mut taus = Vec::new();
            for t in 1..=200 {
                if fail_after == Some(t - 1) {
                    let before = (sync.next_threshold().to_bits(), sync.checkpoint().unwrap());
                    let mut bad = vec![1e-3f32; 64];
                    bad[3] = f32::NAN;
                    assert!(matches!(sync.step(&bad, &mut theta), Err(Error::NonFinite { .. })));
                    assert_eq!((sync.next_threshold().to_bits(), sync.checkpoint().unwrap()), before);
                }
                updates(0, t, &mut delta);
                sync.step(&delta, &mut theta).unwrap();
                taus.push(sync.next_threshold().to_bits());
            }
            (taus, sync.checkpoint().unwrap(), theta)
        };
        let (clean, failed) = (run(None), run(Some(120)));
        assert_eq!(clean.0, failed.0, "{budget:?}: thresholds");
        assert_eq!(clean.1, failed.1, "{budget:?}: final state");
        crate::common::assert_bitwise_eq("theta", &clean.2, &failed.2);
        let moved: std::collections::BTreeSet<u64> = clean.0.iter().copied().collect();
        assert!(moved.len() > 10, "{budget:?}: the controller moved");
    }
}
