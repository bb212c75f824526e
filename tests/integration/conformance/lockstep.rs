//! Runs a group of ranks and the f64 reference side by side and compares
//! every step: the sync decision, `tau`, the significance (1e-5 relative), the
//! packed bytes of every rank, and the parameters and accumulators to the bit.

use crate::common::{Job, StepRecord, Synthetic, assert_bitwise_eq, run_group};
use crate::reference::{Reference, key, threshold_cut};
use chronos_sync::wire::PackedDelta;
use chronos_sync::{Backend, Selection};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Relative tolerance of the significance against the f64 reference.
pub const SIGNIFICANCE_RTOL: f64 = 1e-5;

/// What a lockstep run saw.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Steps on which the group synced.
    pub syncs: u64,
    /// Steps whose decision was taken from the backend because some rank's
    /// significance was within f32 rounding of `tau`.
    pub ambiguous_votes: u64,
    /// `Threshold` entries exactly at the cut that the backend and the
    /// reference selected differently (docs/selection.md allows these).
    pub boundary_differences: u64,
    /// Entries sent, summed over ranks and steps.
    pub entries: u64,
    /// Packed bytes sent, summed over ranks and steps.
    pub bytes: u64,
}

/// Asserts `got` equals `want` within [`SIGNIFICANCE_RTOL`] relative (exactly
/// when `want` is 0).
#[track_caller]
pub fn assert_significance(what: &str, got: f32, want: f64) {
    let err = (f64::from(got) - want).abs();
    assert!(
        err <= SIGNIFICANCE_RTOL * want.abs(),
        "{what}: significance {got:e} vs reference {want:e} (relative error {:e})",
        err / want.abs()
    );
}

/// Runs `job` on `backend` from `theta0` with `updates`, and the reference
/// alongside; panics at the first disagreement. `job.record_state` must be on.
pub fn lockstep<B: Backend>(backend: &Arc<B>, job: &Job, theta0: &[f32], updates: Synthetic) -> Summary {
    assert!(job.record_state, "lockstep compares state after every step");
    let n = theta0.len();
    let mut reference = Reference::new(job.world, job.config.clone(), theta0);
    let mut summary = Summary::default();
    let fill = move |rank: usize, t: u64, out: &mut [f32]| updates.fill(rank, t, out);
    let label =
        format!("{} n={n} W={} {:?} {:?}", backend.name(), job.world, job.config.selection, job.config.wire_dtype);
    run_group(backend, job, theta0, &fill, |t, records| {
        compare_step(&label, &mut reference, &mut summary, t, &records, updates);
    });
    assert_eq!(reference.t, job.steps, "{label}: not every step completed");
    summary
}

fn compare_step(
    label: &str,
    reference: &mut Reference,
    summary: &mut Summary,
    t: u64,
    records: &[StepRecord],
    updates: Synthetic,
) {
    let world = reference.world();
    let n = reference.theta.len();
    assert_eq!(records.len(), world, "{label} t={t}: a rank stopped early: {records:?}");
    let reports: Vec<_> = records
        .iter()
        .map(|r| r.report.as_ref().unwrap_or_else(|e| panic!("{label} t={t}: rank {} failed: {e}", r.rank)))
        .collect();
    let deltas: Vec<Vec<f32>> = (0..world).map(|r| updates.delta(r, t, n)).collect();
    let delta_refs: Vec<&[f32]> = deltas.iter().map(Vec::as_slice).collect();
    let pending = reference.accumulate(&delta_refs).expect("synthetic updates are finite");
    let ambiguous = pending.step.ambiguous_ranks();
    let vote = if ambiguous.is_empty() {
        None
    } else {
        summary.ambiguous_votes += 1;
        Some(reports[0].synced)
    };
    let pre_sync_acc = pending.acc.clone();
    let step = reference.finish(pending, vote);

    for (r, rep) in reports.iter().enumerate() {
        let at = format!("{label} t={t} rank {r}");
        assert_eq!(rep.step, t, "{at}: step number");
        assert_eq!(rep.threshold.to_bits(), (step.tau as f32).to_bits(), "{at}: tau");
        assert_significance(&at, rep.significance, step.significance[r]);
        if !ambiguous.contains(&r) {
            assert_eq!(rep.triggered, step.triggered[r], "{at}: local trigger");
        }
        assert_eq!(rep.forced, step.forced, "{at}: forced");
        assert_eq!(rep.synced, step.synced, "{at}: group decision");
    }
    if !step.synced {
        assert!(records.iter().all(|r| r.sent.is_none()), "{label} t={t}: bytes sent without a sync");
    } else {
        summary.syncs += 1;
    }

    let mut rebase = false;
    if step.synced {
        for (r, rec) in records.iter().enumerate() {
            let at = format!("{label} t={t} rank {r}");
            let sent = rec.sent.as_ref().unwrap_or_else(|| panic!("{at}: synced but sent nothing"));
            let rep = reports[r];
            assert_eq!(rep.bytes_sent, sent.len() as u64, "{at}: bytes_sent");
            summary.bytes += rep.bytes_sent;
            summary.entries += rep.entries_sent;
            let want = &step.bytes[r];
            if sent == want {
                assert_eq!(rep.entries_sent, step.sent[r].count(), "{at}: entries_sent");
                continue;
            }
            let got = PackedDelta::decode(sent).unwrap_or_else(|e| panic!("{at}: backend's buffer is invalid: {e}"));
            assert_eq!(rep.entries_sent, got.count(), "{at}: entries_sent");
            match reference.config.selection {
                Selection::Threshold { rel } => {
                    let cut = threshold_cut(rel, step.acc_sq[r], n);
                    summary.boundary_differences +=
                        check_threshold_boundary(&at, &got, &step.sent[r], &pre_sync_acc[r], cut);
                    rebase = true;
                }
                _ => panic!("{at}: packed bytes differ from the reference: {}", describe(&got, &step.sent[r])),
            }
        }
    }

    let thetas: Vec<&Vec<f32>> = records.iter().map(|r| r.theta.as_ref().expect("state recorded")).collect();
    for (r, theta) in thetas.iter().enumerate().skip(1) {
        assert_bitwise_eq(&format!("{label} t={t}: theta of rank {r} vs rank 0"), theta, thetas[0]);
    }
    let accs: Vec<Vec<f32>> = records.iter().map(|r| r.acc.clone().expect("state recorded")).collect();
    if rebase {
        reference.rebase(thetas[0], &accs);
        return;
    }
    assert_bitwise_eq(&format!("{label} t={t}: theta vs reference"), thetas[0], &reference.theta);
    for (r, acc) in accs.iter().enumerate() {
        assert_bitwise_eq(&format!("{label} t={t}: acc of rank {r} vs reference"), acc, &reference.acc[r]);
    }
}

/// Checks that a backend's `Threshold` selection differs from the reference's
/// only in entries at the cut (within the f32 rounding of `sum(acc^2)`), and
/// that shared entries carry the same values. Returns how many differ.
fn check_threshold_boundary(at: &str, got: &PackedDelta, want: &PackedDelta, acc: &[f32], cut: f32) -> u64 {
    let g: BTreeSet<u64> = got.indices.iter().copied().collect();
    let w: BTreeSet<u64> = want.indices.iter().copied().collect();
    let mut differing = 0;
    for &i in g.symmetric_difference(&w) {
        let x = f64::from(f32::from_bits(key(acc[i as usize])));
        let c = f64::from(cut);
        assert!(
            (x - c).abs() <= 1e-5 * c,
            "{at}: index {i} (|acc| = {x:e}) differs from the reference but is not at the cut {c:e}"
        );
        differing += 1;
    }
    for (j, &i) in got.indices.iter().enumerate() {
        if let Ok(p) = want.indices.binary_search(&i) {
            assert_eq!(got.values[j].to_bits(), want.values[p].to_bits(), "{at}: value of index {i}");
        }
    }
    differing
}

/// A readable first difference between two deltas.
fn describe(got: &PackedDelta, want: &PackedDelta) -> String {
    if got.dtype != want.dtype || got.n != want.n {
        return format!("header: n {} dtype {:?} vs n {} dtype {:?}", got.n, got.dtype, want.n, want.dtype);
    }
    if got.indices != want.indices {
        let p = got
            .indices
            .iter()
            .zip(&want.indices)
            .position(|(a, b)| a != b)
            .unwrap_or(got.count().min(want.count()) as usize);
        return format!(
            "{} vs {} entries; first index difference at position {p}: {:?} vs {:?}",
            got.count(),
            want.count(),
            got.indices.get(p),
            want.indices.get(p)
        );
    }
    match got.values.iter().zip(&want.values).position(|(a, b)| a.to_bits() != b.to_bits()) {
        Some(p) => format!("value of index {} differs: {:e} vs {:e}", got.indices[p], got.values[p], want.values[p]),
        None => "decoded entries agree; the encoding differs".into(),
    }
}
