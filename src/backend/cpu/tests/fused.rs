//! The fused pass: sums against an f64 reference, the level-1 histogram,
//! non-finite detection, and the double-buffered accumulator.

use proptest::prelude::*;

use super::{Rng, loaded};
use crate::backend::cpu::tables::SET_LEN;
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
    let status = backend.accumulate(&mut state, &[0.1; 4], &[1.0; 4], 0.05).unwrap();
    assert!((status.significance - 0.1).abs() < 1e-6);
    assert_eq!(status.triggered, 1);
    let status = backend.accumulate(&mut state, &[0.1; 4], &[1.0; 4], 0.2).unwrap();
    assert_eq!(status.triggered, 0);
    assert_eq!(status.tau, 0.2);
}

/// Any f32 bit pattern (NaNs, infinities, subnormals, signed zeros) half of
/// the time, a unit-scale value otherwise.
fn any_value() -> impl Strategy<Value = f32> {
    prop_oneof![any::<u32>().prop_map(f32::from_bits), -4.0f32..4.0]
}

/// Histogram bins of finite magnitudes: level-1 digits below this one.
const FINITE_BINS: usize = 0x7f8;

/// Runs the block through `fused_block` (the vector loop where the CPU has
/// one, at output offset `shift` and with or without streaming stores) and
/// through the portable loop alone, and checks the contract documented on
/// `fused_block`. Returns whether the block held a non-finite value.
fn check_loops_agree(d: &[f32], a: &[f32], t: &[f32], shift: usize, stream: bool) -> Result<bool, TestCaseError> {
    let n = d.len();
    // `shift` moves the output off its allocation's alignment.
    let mut out_fast = vec![0.0f32; n + shift];
    let mut hist_fast = Box::new([0u32; SET_LEN]);
    let (sums, bad) = fused::fused_block(d, a, t, &mut out_fast[shift..], &mut hist_fast, stream);
    let out_fast = &out_fast[shift..];
    let mut out_slow = vec![0.0f32; n];
    let mut hist_slow = Box::new([0u32; SET_LEN]);
    let mut lanes = fused::Lanes::default();
    fused::fused_span(d, a, t, &mut out_slow, &mut hist_slow, &mut lanes);
    // Non-finite at the same positions; finite outputs bitwise equal.
    for (i, (x, y)) in out_fast.iter().zip(&out_slow).enumerate() {
        prop_assert_eq!(x.is_finite(), y.is_finite(), "element {}: {:e} vs {:e}", i, x, y);
        if x.is_finite() {
            prop_assert_eq!(x.to_bits(), y.to_bits(), "element {}", i);
        }
    }
    prop_assert_eq!(bad, lanes.bad);
    let lane_sum = |l: &[f64; 4]| l.iter().fold(0.0f64, |s, &x| s + x);
    // Same bits, or NaN on both sides (payload unspecified).
    let same = |x: f64, y: f64| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
    prop_assert!(same(sums[0], lane_sum(&lanes.acc_sq)), "{} vs {:?}", sums[0], lanes.acc_sq);
    prop_assert!(same(sums[1], lane_sum(&lanes.theta_sq)), "{} vs {:?}", sums[1], lanes.theta_sq);
    // Sub-tables may differ; their sums per bin may not (finite bins), nor the total.
    let per_bin =
        |h: &[u32; SET_LEN]| (0..2048).map(|b| (0..4).map(|s| h[s * 2048 + b]).sum::<u32>()).collect::<Vec<_>>();
    let (bins_fast, bins_slow) = (per_bin(&hist_fast), per_bin(&hist_slow));
    prop_assert_eq!(&bins_fast[..FINITE_BINS], &bins_slow[..FINITE_BINS]);
    prop_assert_eq!(bins_fast.iter().sum::<u32>(), bins_slow.iter().sum::<u32>());
    if bad == 0 {
        // What a step commits: everything bitwise.
        prop_assert_eq!(sums[0].to_bits(), lane_sum(&lanes.acc_sq).to_bits());
        prop_assert_eq!(sums[1].to_bits(), lane_sum(&lanes.theta_sq).to_bits());
        prop_assert_eq!(bins_fast, bins_slow);
    }
    Ok(bad != 0)
}

proptest! {
    #![proptest_config(crate::testing::fixed_proptest(256))]

    /// The vector loop (where the CPU has one) and the portable loop agree
    /// on everything a step can commit (`fused_block`'s contract), with and
    /// without non-temporal stores, aligned or not.
    #[test]
    fn vector_and_portable_loops_agree(
        values in prop::collection::vec((any_value(), any_value(), any_value()), 0..300),
        shift in 0usize..5,
        stream in any::<bool>(),
    ) {
        let d: Vec<f32> = values.iter().map(|v| v.0).collect();
        let a: Vec<f32> = values.iter().map(|v| v.1).collect();
        let t: Vec<f32> = values.iter().map(|v| v.2).collect();
        check_loops_agree(&d, &a, &t, shift, stream)?;
    }

    /// Finite input only (the blocks a step commits): every output, sum and
    /// histogram bin bitwise equal.
    #[test]
    fn vector_and_portable_loops_agree_bitwise_on_finite_input(
        values in prop::collection::vec((-4.0f32..4.0, -4.0f32..4.0, -4.0f32..4.0), 0..300),
        shift in 0usize..5,
        stream in any::<bool>(),
    ) {
        let d: Vec<f32> = values.iter().map(|v| v.0).collect();
        let a: Vec<f32> = values.iter().map(|v| v.1).collect();
        let t: Vec<f32> = values.iter().map(|v| v.2).collect();
        prop_assert!(!check_loops_agree(&d, &a, &t, shift, stream)?);
    }
}

/// Special values, including NaNs with different payloads in both addends
/// (the case where the loops' NaN payloads differ: `0x7fc00001 + 0x7fc00002`),
/// every pair of them as (`delta`, `acc`), at every position of an 8-wide
/// group and in the scalar tail, with and without streaming stores.
/// Exhaustive, so it fails on every run or on none.
#[test]
fn loops_agree_on_every_pair_of_special_values() {
    let specials: Vec<f32> = [
        0x0000_0000u32,
        0x8000_0000,
        0x0000_0001,
        0x8000_0001,
        0x3f80_0000,
        0xbf80_0000,
        0x7f7f_ffff,
        0xff7f_ffff,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0x7fc0_0001,
        0x7fc0_0002,
        0xffc0_0000,
        0x7f80_0001,
        0xff80_0001,
        0x7fff_ffff,
        0x7ff0_0000,
    ]
    .into_iter()
    .map(f32::from_bits)
    .collect();
    // 19 elements: two 8-wide groups and a tail of 3.
    let n = 19;
    for &x in &specials {
        for &y in &specials {
            for pos in [0, 5, 9, 17] {
                let mut d = vec![0.25f32; n];
                let mut a = vec![-0.5f32; n];
                let t = vec![1.0f32; n];
                d[pos] = x;
                a[pos] = y;
                for stream in [false, true] {
                    let bad = check_loops_agree(&d, &a, &t, 0, stream)
                        .unwrap_or_else(|e| panic!("{:#010x} + {:#010x} at {pos}: {e}", x.to_bits(), y.to_bits()));
                    assert_eq!(bad, !(x + y).is_finite(), "{:#010x} + {:#010x}", x.to_bits(), y.to_bits());
                }
            }
        }
    }
    // The case proptest once shrank a failure to (two NaN deltas, zero
    // elsewhere), kept here rather than in a regressions file.
    let nan = f32::NAN;
    assert!(check_loops_agree(&[nan, nan], &[0.0, 0.0], &[0.0, 0.0], 0, false).unwrap());
}

/// Sizes that cannot be allocated are a typed error, not an abort.
#[test]
fn unallocatable_sizes_are_out_of_memory() {
    use crate::error::{BackendError, Error};
    let backend = CpuBackend::with_threads(1).unwrap();
    let e = backend.alloc(usize::MAX).unwrap_err();
    assert!(matches!(e, Error::Backend(BackendError::OutOfMemory { backend: "cpu", .. })), "{e:?}");
}
