//! The fused pass's inner loop in AVX2, for x86_64 CPUs that have it
//! (checked at run time). It computes what the portable loop in `fused`
//! computes, bit for bit on everything a step can commit (the contract is
//! on `fused::fused_block`; only NaN payloads may differ): the same f32
//! adds, each f64 lane `j` receiving the squares of elements
//! `j, j + 4, j + 8, ...` of the block in that order (squares of f32 values
//! are exact in f64, so only the adds round, in the same order), integer
//! counts for the rest.
//!
//! Why it exists: on a 2-core machine the portable loop is bound by
//! instruction throughput (about 1.6 ns per element per core), not by
//! memory; eight elements per iteration bring it under the memory time.
//! With `STREAM`, `acc'` is written with non-temporal stores, which skip
//! the read-for-ownership of lines that would be evicted before their next
//! use anyway (a fifth of the pass's memory traffic).

use std::arch::x86_64::{
    _mm_sfence, _mm_stream_ps, _mm256_add_epi32, _mm256_add_pd, _mm256_add_ps, _mm256_and_si256, _mm256_castps_si256,
    _mm256_castps256_ps128, _mm256_cmpeq_epi32, _mm256_cvtps_pd, _mm256_extractf128_ps, _mm256_loadu_ps, _mm256_mul_pd,
    _mm256_set1_epi32, _mm256_setr_epi32, _mm256_setr_pd, _mm256_setzero_si256, _mm256_srli_epi32, _mm256_storeu_pd,
    _mm256_storeu_ps, _mm256_storeu_si256, _mm256_sub_epi32,
};

use super::fused::{EXP_MASK, KEY_MASK, LANES, LEVEL1_SHIFT, Lanes};
use super::state::HIST_BINS;
use super::tables::SET_LEN;

/// Elements per iteration: one 256-bit vector of f32.
const WIDTH: usize = 8;

/// Whether this CPU runs [`fused_prefix`]'s vector loop (cached by std).
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx2")
}

/// Runs the fused pass over the longest prefix of the block that is a
/// multiple of 8 elements, continuing `lanes`, and returns its length (0
/// when AVX2 is missing: the portable loop then does everything). The block
/// must start at a multiple of `LANES` elements from the start of the
/// vector. `stream` asks for non-temporal stores of `out`; they are used
/// when `out` is 16-byte aligned.
pub(super) fn fused_prefix(
    d: &[f32],
    a: &[f32],
    t: &[f32],
    out: &mut [f32],
    hist: &mut [u32; SET_LEN],
    lanes: &mut Lanes,
    stream: bool,
) -> usize {
    if !available() {
        return 0;
    }
    let aligned = out.as_ptr() as usize % 16 == 0;
    // SAFETY: AVX2 is present (checked just above); `out` is aligned for
    // the streaming variant.
    unsafe {
        if stream && aligned {
            fused_avx2::<true>(d, a, t, out, hist, lanes)
        } else {
            fused_avx2::<false>(d, a, t, out, hist, lanes)
        }
    }
}

/// The vector loop. Callers must make sure the CPU has AVX2, and with
/// `STREAM` that `out` is 16-byte aligned.
#[target_feature(enable = "avx2")]
// One `unsafe` block covers the body: Rust before 1.87 (the MSRV is 1.85)
// treats every intrinsic as unsafe; later versions only the pointer ones.
#[allow(unused_unsafe)]
unsafe fn fused_avx2<const STREAM: bool>(
    d: &[f32],
    a: &[f32],
    t: &[f32],
    out: &mut [f32],
    hist: &mut [u32; SET_LEN],
    lanes: &mut Lanes,
) -> usize {
    const { assert!(LANES == 4 && WIDTH == 2 * LANES && SET_LEN.is_power_of_two()) };
    let len = out.len().min(d.len()).min(a.len()).min(t.len());
    let body = len - len % WIDTH;
    let mut bins = [0u32; WIDTH];
    let mut bad_lanes = [0u32; WIDTH];
    // SAFETY: AVX2 is present (the caller's contract). Every pointer below
    // comes from a slice of exactly WIDTH elements (or a 4-lane array for
    // the 4 f64 lanes) and is read or written within it; `_mm_stream_ps`
    // gets 16-byte aligned addresses (the caller's contract for `out`,
    // and groups are 32 bytes apart).
    unsafe {
        let mut sa = _mm256_setr_pd(lanes.acc_sq[0], lanes.acc_sq[1], lanes.acc_sq[2], lanes.acc_sq[3]);
        let mut st = _mm256_setr_pd(lanes.theta_sq[0], lanes.theta_sq[1], lanes.theta_sq[2], lanes.theta_sq[3]);
        let mut bad = _mm256_setzero_si256();
        let exp = _mm256_set1_epi32(EXP_MASK as i32);
        let key_mask = _mm256_set1_epi32(KEY_MASK as i32);
        // Element j of a group counts in sub-table j % 4 (consecutive equal
        // bins then hit different counters: independent increments).
        let b = HIST_BINS as i32;
        let tables = _mm256_setr_epi32(0, b, 2 * b, 3 * b, 0, b, 2 * b, 3 * b);
        let groups = out[..body]
            .chunks_exact_mut(WIDTH)
            .zip(d.chunks_exact(WIDTH))
            .zip(a.chunks_exact(WIDTH))
            .zip(t.chunks_exact(WIDTH));
        for (((o, d), a), t) in groups {
            let (dv, av, tv) = (_mm256_loadu_ps(d.as_ptr()), _mm256_loadu_ps(a.as_ptr()), _mm256_loadu_ps(t.as_ptr()));
            let v = _mm256_add_ps(av, dv);
            let (v_lo, v_hi) = (_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            if STREAM {
                _mm_stream_ps(o.as_mut_ptr(), v_lo);
                _mm_stream_ps(o.as_mut_ptr().add(LANES), v_hi);
            } else {
                _mm256_storeu_ps(o.as_mut_ptr(), v);
            }
            // Lane j takes element j, then j + 4: the portable loop's order.
            let (x_lo, x_hi) = (_mm256_cvtps_pd(v_lo), _mm256_cvtps_pd(v_hi));
            sa = _mm256_add_pd(sa, _mm256_mul_pd(x_lo, x_lo));
            sa = _mm256_add_pd(sa, _mm256_mul_pd(x_hi, x_hi));
            let (y_lo, y_hi) =
                (_mm256_cvtps_pd(_mm256_castps256_ps128(tv)), _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(tv)));
            st = _mm256_add_pd(st, _mm256_mul_pd(y_lo, y_lo));
            st = _mm256_add_pd(st, _mm256_mul_pd(y_hi, y_hi));
            let (vb, tb) = (_mm256_castps_si256(v), _mm256_castps_si256(tv));
            // A compare is -1 where true: subtracting it counts.
            bad = _mm256_sub_epi32(bad, _mm256_cmpeq_epi32(_mm256_and_si256(vb, exp), exp));
            bad = _mm256_sub_epi32(bad, _mm256_cmpeq_epi32(_mm256_and_si256(tb, exp), exp));
            let digit = _mm256_srli_epi32::<{ LEVEL1_SHIFT as i32 }>(_mm256_and_si256(vb, key_mask));
            _mm256_storeu_si256(bins.as_mut_ptr().cast(), _mm256_add_epi32(digit, tables));
            for &k in &bins {
                // Always in range (< 4 * 2048); the mask spares a bounds check.
                hist[k as usize & (SET_LEN - 1)] += 1;
            }
        }
        if STREAM {
            // Non-temporal stores are weakly ordered: make them visible before
            // the rayon task reports completion to the thread that reads `acc'`.
            _mm_sfence();
        }
        _mm256_storeu_pd(lanes.acc_sq.as_mut_ptr(), sa);
        _mm256_storeu_pd(lanes.theta_sq.as_mut_ptr(), st);
        _mm256_storeu_si256(bad_lanes.as_mut_ptr().cast(), bad);
    }
    lanes.bad = bad_lanes.iter().fold(lanes.bad, |sum, &x| sum.wrapping_add(x));
    body
}
