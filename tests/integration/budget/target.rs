//! The controller reaches its target within 10% after warm-up, every rank
//! holds the same threshold bits, and without a budget the thresholds are
//! the schedule's.

use super::{StepTrace, fresh, render, run_ranks, stationary};
use chronos_sync::{Selection, SyncConfig, ThresholdBudget};

const WORLD: usize = 4;
const N: usize = 4096;
const WARMUP: u64 = 100;
/// The measured window: after warm-up and the controller's transient.
const WINDOW: std::ops::RangeInclusive<u64> = 200..=2000;

fn config(budget: Option<ThresholdBudget>) -> SyncConfig {
    SyncConfig { warmup_steps: WARMUP, selection: Selection::TopK { ratio: 0.05 }, budget, ..SyncConfig::default() }
}

/// Rank 0's trace inside [`WINDOW`].
fn window(trace: &[StepTrace]) -> Vec<StepTrace> {
    trace.iter().filter(|s| WINDOW.contains(&s.t)).copied().collect()
}

/// Runs the stationary workload to the end of [`WINDOW`] and checks that
/// every rank held the same threshold and sync verdict at every step;
/// returns every rank's trace.
fn run(budget: ThresholdBudget, seed: u64) -> Vec<Vec<StepTrace>> {
    let cfg = config(Some(budget));
    let runs = run_ranks(&cfg, fresh(WORLD, N, seed), 1, *WINDOW.end(), &stationary(seed, |_| 1e-3));
    let traces: Vec<Vec<StepTrace>> = runs.into_iter().map(|r| r.trace).collect();
    assert_same_threshold(&traces);
    traces
}

#[track_caller]
fn assert_same_threshold(traces: &[Vec<StepTrace>]) {
    for (r, trace) in traces.iter().enumerate().skip(1) {
        for (a, b) in traces[0].iter().zip(trace) {
            assert_eq!(a.next_tau, b.next_tau, "rank {r} step {}: f64 threshold bits differ", a.t);
            assert_eq!(a.report.threshold.to_bits(), b.report.threshold.to_bits(), "rank {r} step {}", a.t);
            assert_eq!(a.report.synced, b.report.synced, "rank {r} step {}", a.t);
            assert_eq!(a.theta_hash, b.theta_hash, "rank {r} step {}: parameters differ", a.t);
        }
    }
}

#[track_caller]
fn assert_within_10_percent(what: &str, measured: f64, target: f64, trace: &[StepTrace]) {
    let (lo, hi) = (0.9 * target, 1.1 * target);
    assert!(
        (lo..=hi).contains(&measured),
        "{what}: measured {measured} over steps {WINDOW:?}, target {target} (allowed [{lo}, {hi}]); trace (step tau synced):\n{}",
        render(trace)
    );
}

fn sync_rate(trace: &[StepTrace]) -> f64 {
    let w = window(trace);
    w.iter().filter(|s| s.report.synced).count() as f64 / w.len() as f64
}

#[test]
fn sync_rate_target_0_2_is_reached_within_10_percent() {
    let traces = run(ThresholdBudget::sync_rate(0.2), 11);
    assert_within_10_percent("sync rate", sync_rate(&traces[0]), 0.2, &traces[0]);
}

#[test]
fn sync_rate_target_0_05_is_reached_within_10_percent() {
    let traces = run(ThresholdBudget::sync_rate(0.05), 12);
    assert_within_10_percent("sync rate", sync_rate(&traces[0]), 0.05, &traces[0]);
}

/// Bytes per step: every rank's packed bytes over the window, divided by
/// the world size and the steps.
#[test]
fn bytes_per_step_target_is_reached_within_10_percent() {
    let target = 120.0;
    let traces = run(ThresholdBudget::bytes_per_step(target), 13);
    let steps = window(&traces[0]).len() as f64;
    let total: u64 = traces.iter().flat_map(|t| window(t)).map(|s| s.report.bytes_sent).sum();
    let measured = total as f64 / WORLD as f64 / steps;
    assert_within_10_percent("bytes per step", measured, target, &traces[0]);
    // The target is well inside what the rule can do: not every step syncs.
    let rate = sync_rate(&traces[0]);
    assert!(rate > 0.02 && rate < 0.5, "sync rate {rate}");
}

/// Ranks whose updates differ by orders of magnitude (so their local
/// significance does too) still hold the same threshold bits every step.
#[test]
fn every_rank_holds_the_same_threshold_with_very_different_updates() {
    for budget in [ThresholdBudget::sync_rate(0.1), ThresholdBudget::bytes_per_step(60.0).with_gain(0.3)] {
        let cfg = config(Some(budget));
        let scales = [1e-6f32, 1e-4, 3e-3, 5e-2];
        let runs = run_ranks(&cfg, fresh(WORLD, 1024, 21), 1, 600, &stationary(21, move |r| scales[r]));
        let traces: Vec<Vec<StepTrace>> = runs.into_iter().map(|r| r.trace).collect();
        assert_same_threshold(&traces);
        // The controller did move (so the comparison means something).
        let distinct: std::collections::BTreeSet<u64> = traces[0].iter().map(|s| s.next_tau).collect();
        assert!(distinct.len() > 10, "{budget:?}: the threshold barely moved");
    }
}

/// Without a budget every step's threshold is `SyncConfig::tau(t)`, as
/// before budgets existed; with one, the warm-up ramp is the same and the
/// first step after it starts from `threshold`.
#[test]
fn no_budget_keeps_the_schedule_and_a_budget_keeps_the_warm_up() {
    let plain = config(None);
    let budgeted = config(Some(ThresholdBudget::sync_rate(0.2)));
    let updates = stationary(31, |_| 1e-3);
    let a = run_ranks(&plain, fresh(2, 1024, 31), 1, 400, &updates);
    let b = run_ranks(&budgeted, fresh(2, 1024, 31), 1, 400, &updates);
    for s in &a[0].trace {
        assert_eq!(s.report.threshold.to_bits(), (plain.tau(s.t) as f32).to_bits(), "step {}", s.t);
        assert_eq!(s.next_tau, plain.tau(s.t + 1).to_bits(), "step {}", s.t);
    }
    for (x, y) in a[0].trace.iter().zip(&b[0].trace).take_while(|(x, _)| x.t <= WARMUP) {
        assert_eq!(x.report, y.report, "step {}: warm-up differs with a budget", x.t);
        assert_eq!(x.theta_hash, y.theta_hash, "step {}", x.t);
    }
    assert_eq!(b[0].trace[WARMUP as usize - 1].report.threshold, 0.01f32);
    assert!(b[0].trace.iter().any(|s| s.report.threshold != 0.01f32 && s.t > WARMUP), "the budget steered");
}

/// In a `SyncGroup` each bucket has its own controller: two buckets with
/// different targets on 2 ranks each reach their own rate, and both ranks
/// hold the same threshold bits for each bucket at every step.
#[test]
fn each_bucket_of_a_group_steers_its_own_threshold() {
    use chronos_sync::{BucketStep, CpuBackend, LocalCollective, SyncGroup};
    let targets = [0.25, 0.1];
    let configs: Vec<SyncConfig> = targets.iter().map(|&r| config(Some(ThresholdBudget::sync_rate(r)))).collect();
    let updates = stationary(51, |_| 1e-3);
    let handles = LocalCollective::group(2, std::time::Duration::from_secs(30)).unwrap();
    let traces: Vec<Vec<[(u64, bool); 2]>> = std::thread::scope(|s| {
        let joins: Vec<_> = handles
            .into_iter()
            .enumerate()
            .map(|(rank, c)| {
                let (configs, updates) = (&configs, &updates);
                s.spawn(move || {
                    let mut group = SyncGroup::new(CpuBackend::new(), c).unwrap();
                    for cfg in configs {
                        group.add_bucket(1024, cfg.clone()).unwrap();
                    }
                    let mut theta = crate::common::initial_params(51, 2048, 1.0);
                    let mut delta = vec![0.0f32; 2048];
                    let mut trace = Vec::new();
                    for t in 1..=*WINDOW.end() {
                        updates(rank, t, &mut delta);
                        let (w0, w1) = theta.split_at_mut(1024);
                        let (d0, d1) = delta.split_at(1024);
                        group
                            .step(&mut [BucketStep { delta: d0, params: w0 }, BucketStep { delta: d1, params: w1 }])
                            .unwrap();
                        let r = group.reports();
                        trace.push([
                            (group.next_threshold(0).unwrap().to_bits(), r[0].synced),
                            (group.next_threshold(1).unwrap().to_bits(), r[1].synced),
                        ]);
                    }
                    trace
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    assert_eq!(traces[0], traces[1], "the ranks' thresholds or verdicts differ");
    for (b, &target) in targets.iter().enumerate() {
        let w: Vec<bool> = traces[0][*WINDOW.start() as usize - 1..].iter().map(|s| s[b].1).collect();
        let rate = w.iter().filter(|&&s| s).count() as f64 / w.len() as f64;
        assert!((0.9 * target..=1.1 * target).contains(&rate), "bucket {b}: rate {rate}, target {target}");
    }
}
