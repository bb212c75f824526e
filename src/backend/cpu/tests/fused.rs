//! The fused pass: sums against an f64 reference, the level-1 histogram,
//! non-finite detection, and the double-buffered accumulator.

use super::{Rng, loaded};
use crate::backend::cpu::{CpuBackend, fused};
use crate::backend::{Backend, StepStatus};
use crate::config::SyncConfig;

fn rel_err(got: f32, want: f64) -> f64 {
    if want == 0.0 { f64::from(got).abs() } else { (f64::from(got) - want).abs() / want.abs() }
}

#[test]
fn sums_and_histogram_match_an_f64_reference() {
    let mut rng = Rng::new(1);
    for n in [1usize, 7, 8, 9, 16_383, 16_384, 16_385, 200_003] {
        let backend = CpuBackend::with_threads(2).unwrap();
        // Unit-scale values (the tie-heavy ones square past f32's range).
        let acc0 = rng.vec(n, false);
        let delta = rng.vec(n, false);
        let mut theta = rng.vec(n, false);
        theta.iter_mut().step_by(3).for_each(|t| *t = 0.5);
        let (mut state, acc0) = loaded(&backend, &acc0, &SyncConfig::default());
        let status = backend.accumulate(&mut state, &delta, &theta, 0.25).unwrap();
        let new: Vec<f32> = acc0.iter().zip(&delta).map(|(a, d)| a + d).collect();
        let a_ref: f64 = new.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let p_ref: f64 = theta.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        assert!(rel_err(status.acc_sq, a_ref) < 1e-6, "n {n}: {} vs {a_ref}", status.acc_sq);
        assert!(rel_err(status.theta_sq, p_ref) < 1e-6, "n {n}: {} vs {p_ref}", status.theta_sq);
        assert_eq!(status, StepStatus::from_sums(status.acc_sq, status.theta_sq, 0, 0.25));
        let mut hist = vec![0u32; 2048];
        new.iter().for_each(|&x| hist[((x.to_bits() & 0x7fff_ffff) >> 20) as usize] += 1);
        assert_eq!(state.spare_stats.hist1, hist);
        backend.commit_accumulate(&mut state).unwrap();
        let mut out = vec![0.0; n];
        backend.read_accumulator(&state, &mut out).unwrap();
        assert_eq!(out, new);
        // The statistics-only pass (used after `apply`) gives the same bits.
        let fused_stats = state.stats.clone();
        fused::acc_stats(&mut state);
        assert_eq!(state.stats.acc_sq.to_bits(), fused_stats.acc_sq.to_bits());
        assert_eq!(state.stats.hist1, fused_stats.hist1);
    }
}

#[test]
fn zero_input_has_zero_significance() {
    let backend = CpuBackend::new();
    let mut state = backend.create_state(1000, &SyncConfig::default()).unwrap();
    let zeros = vec![0.0; 1000];
    let status = backend.accumulate(&mut state, &zeros, &zeros, 0.0).unwrap();
    assert_eq!(status.significance, 0.0);
    assert_eq!(status.triggered, 0);
    assert_eq!(status.nonfinite, 0);
}

#[test]
fn non_finite_input_is_counted_and_nothing_is_committed() {
    let backend = CpuBackend::with_threads(2).unwrap();
    let n = 40_000;
    let mut rng = Rng::new(9);
    let (mut state, before) = loaded(&backend, &rng.vec(n, false), &SyncConfig::default());
    let mut delta = rng.vec(n, false);
    let mut theta = rng.vec(n, false);
    delta[3] = f32::NAN;
    delta[39_999] = f32::NEG_INFINITY;
    theta[20_000] = f32::INFINITY;
    theta[20_001] = -f32::NAN;
    let status = backend.accumulate(&mut state, &delta, &theta, 0.0).unwrap();
    assert_eq!(status.nonfinite, 4);
    assert_eq!(status.triggered, 0);
    // Without a commit the committed accumulator is untouched.
    let mut now = vec![0.0; n];
    backend.read_accumulator(&state, &mut now).unwrap();
    assert_eq!(now, before);
    // A finite step afterwards replaces the pending result.
    delta[3] = 1.0;
    delta[39_999] = 1.0;
    theta[20_000] = 1.0;
    theta[20_001] = 1.0;
    let status = backend.accumulate(&mut state, &delta, &theta, 0.0).unwrap();
    assert_eq!(status.nonfinite, 0);
    assert_eq!(status.triggered, 1);
    backend.commit_accumulate(&mut state).unwrap();
    // A second commit has nothing pending and changes nothing.
    backend.commit_accumulate(&mut state).unwrap();
    backend.read_accumulator(&state, &mut now).unwrap();
    let want: Vec<f32> = before.iter().zip(&delta).map(|(a, d)| a + d).collect();
    assert_eq!(now, want);
}

#[test]
fn threshold_test_uses_tau() {
    let backend = CpuBackend::new();
    let mut state = backend.create_state(4, &SyncConfig::default()).unwrap();
    // A = 4 * 0.01, P = 4: s = sqrt(0.04) / 2 = 0.1.
    let status = backend.accumulate(&mut state, &vec![0.1; 4], &vec![1.0; 4], 0.05).unwrap();
    assert!((status.significance - 0.1).abs() < 1e-6);
    assert_eq!(status.triggered, 1);
    let status = backend.accumulate(&mut state, &vec![0.1; 4], &vec![1.0; 4], 0.2).unwrap();
    assert_eq!(status.triggered, 0);
    assert_eq!(status.tau, 0.2);
}
