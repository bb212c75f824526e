//! The spec's invariants: conservation per rank, bitwise replicas, the
//! significance against f64, and seed parity with the default configuration.

use super::lockstep::{assert_significance, lockstep};
use crate::common::{Job, Synthetic, assert_bitwise_eq, initial_params, run_group, sum_sq_f64};
use chronos_sync::wire::PackedDelta;
use chronos_sync::{Backend, Selection, SyncConfig, WireDtype};
use std::sync::Arc;

/// A configuration that syncs on some steps and not on others: no warm-up,
/// a fixed threshold, and a short forced-sync interval.
fn sometimes(selection: Selection, dtype: WireDtype, threshold: f64) -> SyncConfig {
    SyncConfig::builder()
        .adaptive(false)
        .threshold(threshold)
        .max_accumulation_steps(4)
        .selection(selection)
        .wire_dtype(dtype)
        .build()
        .unwrap()
}

/// Per rank, after every step: `sum_t delta_t == acc + sum_syncs sent`,
/// elementwise, within the rounding of the f32 additions that built `acc`.
pub fn conservation_per_rank<B: Backend>(backend: &Arc<B>) {
    let (world, n, steps) = (4, 20_011, 24);
    for (selection, dtype) in [
        (Selection::TopK { ratio: 0.02 }, WireDtype::Bf16),
        (Selection::Threshold { rel: 1.0 }, WireDtype::F16),
        (Selection::TopKApprox { ratio: 0.05, slack: 0.3 }, WireDtype::F32),
    ] {
        let config = sometimes(selection, dtype, 0.002);
        let updates = Synthetic::new(11);
        let theta0 = initial_params(3, n, 1.0);
        // Per rank: exact running sums in f64, and the size of what was added.
        let mut delta_sum = vec![vec![0f64; n]; world];
        let mut sent_sum = vec![vec![0f64; n]; world];
        let mut magnitude = vec![vec![0f64; n]; world];
        let mut ops = vec![vec![0u32; n]; world];
        let mut syncs = 0;
        let job = Job::new(world, config, steps);
        let fill = |r: usize, t: u64, out: &mut [f32]| updates.fill(r, t, out);
        run_group(backend, &job, &theta0, &fill, |t, records| {
            for rec in &records {
                let r = rec.rank;
                rec.report.as_ref().unwrap_or_else(|e| panic!("rank {r} step {t}: {e}"));
                let delta = updates.delta(r, t, n);
                for i in 0..n {
                    delta_sum[r][i] += f64::from(delta[i]);
                    magnitude[r][i] += f64::from(delta[i].abs());
                    ops[r][i] += 1;
                }
                if let Some(bytes) = &rec.sent {
                    syncs += usize::from(r == 0);
                    let sent = PackedDelta::decode(bytes).expect("backend's buffer decodes");
                    for (&i, &v) in sent.indices.iter().zip(&sent.values) {
                        sent_sum[r][i as usize] += f64::from(v);
                        magnitude[r][i as usize] += f64::from(v.abs());
                        ops[r][i as usize] += 1;
                    }
                }
                let acc = rec.acc.as_ref().unwrap();
                for i in 0..n {
                    let lhs = delta_sum[r][i];
                    let rhs = f64::from(acc[i]) + sent_sum[r][i];
                    // Each f32 addition rounds by at most half an ulp of a
                    // result no larger than the sum of magnitudes involved.
                    let tol = f64::from(ops[r][i]) * f64::from(f32::EPSILON) * magnitude[r][i];
                    assert!(
                        (lhs - rhs).abs() <= tol,
                        "{selection:?} {dtype:?} rank {r} step {t} index {i}: sum of deltas {lhs:e} != acc + sent {rhs:e} (tol {tol:e})"
                    );
                }
            }
        });
        assert!(syncs >= 3, "{selection:?}: only {syncs} syncs; the test needs several");
    }
}

/// After every step, `theta` is bitwise equal on all four ranks, for every rule.
pub fn replicas_bitwise_identical_every_step<B: Backend>(backend: &Arc<B>) {
    let (world, n, steps) = (4, 50_003, 16);
    for selection in [
        Selection::TopK { ratio: 0.01 },
        Selection::TopKApprox { ratio: 0.02, slack: 0.5 },
        Selection::Threshold { rel: 2.0 },
        Selection::Dense,
    ] {
        let job = Job::new(world, sometimes(selection, WireDtype::Bf16, 0.05), steps);
        let theta0 = initial_params(5, n, 0.5);
        let updates = Synthetic::new(12);
        let fill = |r: usize, t: u64, out: &mut [f32]| updates.fill(r, t, out);
        let mut syncs = 0;
        let finals = run_group(backend, &job, &theta0, &fill, |t, records| {
            assert_eq!(records.len(), world);
            let theta0 = records[0].theta.as_ref().unwrap();
            for rec in &records {
                let rep = rec.report.as_ref().unwrap_or_else(|e| panic!("rank {} step {t}: {e}", rec.rank));
                syncs += u64::from(rep.synced && rec.rank == 0);
                assert_bitwise_eq(
                    &format!("{selection:?} step {t}: theta of rank {} vs rank 0", rec.rank),
                    rec.theta.as_ref().unwrap(),
                    theta0,
                );
            }
        });
        assert!(syncs >= 3 && syncs < steps, "{selection:?}: {syncs} syncs of {steps}: the test needs a mix");
        // The parameters moved: the replicas agree on something non-trivial.
        assert!(finals[0].0.iter().zip(&theta0).any(|(a, b)| a != b));
    }
}

/// The significance of every rank at every step equals the f64 reference
/// within 1e-5 relative, across scales of `theta` (including all-zero `theta`,
/// where the denominator is the 1e-8 floor) and of the updates.
pub fn significance_matches_f64<B: Backend>(backend: &Arc<B>) {
    let n = 30_007;
    for (theta_scale, update_scale) in [(1.0f32, 1e-2f32), (1e-3, 1.0), (0.0, 1e-3), (50.0, 1e-6)] {
        let config = sometimes(Selection::TopK { ratio: 0.01 }, WireDtype::Bf16, 0.01);
        let job = Job::new(3, config, 10);
        let theta0 = initial_params(9, n, theta_scale);
        let updates = Synthetic { scale: update_scale, ..Synthetic::new(13) };
        // Lockstep compares every rank's significance with the reference.
        let summary = lockstep(backend, &job, &theta0, updates);
        assert!(summary.syncs >= 1);
    }
    // A hand-checkable case: acc = delta = [3, 4] / 100, theta = [6, 8] -> s = 0.05 / 10.
    let config = sometimes(Selection::Dense, WireDtype::F32, 1.0);
    let job = Job::new(1, config, 1);
    let fill = |_: usize, _: u64, out: &mut [f32]| out.copy_from_slice(&[0.03, 0.04]);
    run_group(backend, &job, &[6.0, 8.0], &fill, |_, records| {
        let rep = records[0].report.as_ref().unwrap();
        let want = (sum_sq_f64(&[0.03, 0.04])).sqrt() / 10.0;
        assert_significance("hand-checked", rep.significance, want);
        assert!(!rep.synced);
    });
}

/// The warm-up ramp of the default configuration:
/// `tau_t = 0.001 + (t / 100) * (0.01 - 0.001)` for t < 100, then 0.01.
pub fn seed_parity_warmup_ramp<B: Backend>(backend: &Arc<B>) {
    let n = 1000;
    let job = Job { record_state: false, ..Job::new(2, SyncConfig::default(), 110) };
    // Updates far below every threshold: only the ramp matters.
    let fill = |_: usize, _: u64, out: &mut [f32]| out.fill(1e-9);
    let mut seen = 0;
    run_group(backend, &job, &vec![1.0; n], &fill, |t, records| {
        let want = if t < 100 { 0.001 + (t as f64 / 100.0) * (0.01 - 0.001) } else { 0.01 };
        for rec in &records {
            let rep = rec.report.as_ref().unwrap();
            assert_eq!(rep.threshold, want as f32, "step {t}: tau {} vs {want}", rep.threshold);
            assert!(!rep.triggered, "step {t}: a 1e-9 update cannot trigger");
        }
        seen += 1;
    });
    assert_eq!(seen, 110);
    // Spot values of the ramp, written out.
    let c = SyncConfig::default();
    assert_eq!(c.tau(1) as f32, 0.00109);
    assert_eq!(c.tau(50) as f32, 0.0055);
    assert_eq!(c.tau(99) as f32, 0.00991);
    assert_eq!(c.tau(100) as f32, 0.01);
}

/// With the default configuration and updates too small to trigger, the group
/// syncs exactly at step 50 (forced) and again 50 steps later, never before.
pub fn seed_parity_forced_sync_at_step_50<B: Backend>(backend: &Arc<B>) {
    let n = 4096;
    let job = Job { record_state: false, ..Job::new(2, SyncConfig::default(), 101) };
    let updates = Synthetic { scale: 1e-7, ..Synthetic::new(21) };
    let fill = |r: usize, t: u64, out: &mut [f32]| updates.fill(r, t, out);
    let mut synced_at = Vec::new();
    run_group(backend, &job, &vec![1.0; n], &fill, |t, records| {
        for rec in &records {
            let rep = rec.report.as_ref().unwrap();
            assert!(!rep.triggered, "step {t}: significance {} should stay below tau", rep.significance);
            assert_eq!(rep.forced, t == 50 || t == 100, "step {t}: forced");
            assert_eq!(rep.synced, rep.forced, "step {t}: synced");
            if rep.synced {
                assert_eq!(rep.entries_sent, 40, "TopK ratio 0.01 of 4096 sends 40 entries");
                assert_eq!(rep.dense_equivalent_bytes, n as u64 * 4);
            } else {
                assert_eq!(rep.bytes_sent, 0);
            }
        }
        if records[0].report.as_ref().unwrap().synced {
            synced_at.push(t);
        }
    });
    assert_eq!(synced_at, [50, 100]);
}

/// With nothing accumulated the significance is exactly 0 and no rank triggers.
pub fn seed_parity_significance_zero_without_updates<B: Backend>(backend: &Arc<B>) {
    let n = 777;
    let job = Job::new(2, SyncConfig::default(), 51);
    let theta0 = initial_params(4, n, 1.0);
    let fill = |_: usize, _: u64, out: &mut [f32]| out.fill(0.0);
    run_group(backend, &job, &theta0, &fill, |t, records| {
        for rec in &records {
            let rep = rec.report.as_ref().unwrap();
            assert_eq!(rep.significance.to_bits(), 0f32.to_bits(), "step {t}");
            assert!(!rep.triggered);
            assert_eq!(rep.synced, t == 50, "step {t}: only the forced sync");
            // Syncing zeros changes nothing.
            assert_bitwise_eq(&format!("step {t}: theta"), rec.theta.as_ref().unwrap(), &theta0);
            assert!(rec.acc.as_ref().unwrap().iter().all(|&a| a.to_bits() == 0));
        }
    });
}
