//! Operation 3: rank-order sums, the multiply-then-add, error feedback, and
//! refusal of broken buffers.

use std::collections::{BTreeMap, BTreeSet};

use super::reference::{self, decode};
use super::{DTYPES, Rng, config, loaded};
use crate::backend::Backend;
use crate::backend::cpu::CpuBackend;
use crate::collective::Gathered;
use crate::config::{Selection, WireDtype};
use crate::error::Error;
use crate::wire::quantize::dequantize;

/// The spec's apply, written naively: per index, rank-order f32 sum from +0.0,
/// one multiply, one add; then `acc -= own value` (or zero without feedback).
fn naive_apply(buffers: &[Vec<u8>], theta: &mut [f32], acc: &mut [f32], own: usize, weight: f32, feedback: bool) {
    let ranks: Vec<BTreeMap<usize, f32>> = buffers
        .iter()
        .map(|b| {
            let d = decode(b);
            d.indices.iter().zip(&d.values).map(|(&i, &v)| (i, dequantize(v, d.dtype))).collect()
        })
        .collect();
    let present: BTreeSet<usize> = ranks.iter().flat_map(|m| m.keys().copied()).collect();
    for i in present {
        let mut s = 0.0f32;
        for m in &ranks {
            if let Some(v) = m.get(&i) {
                s += v;
            }
        }
        let p = weight * s;
        theta[i] += p;
    }
    if feedback {
        for (&i, &v) in &ranks[own] {
            acc[i] -= v;
        }
    } else {
        acc.fill(0.0);
    }
}

/// Bitwise equality, reporting the first difference only.
fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: first difference at {i}: {} vs {}", got[i], want[i]);
    }
}

/// Three ranks with overlapping selections (one dense, so bitmap chunks
/// occur), own rank 1, every dtype, with and without error feedback.
#[test]
fn apply_matches_the_naive_rank_order_sum() {
    let n = 2 * 65_536 + 77;
    let mut rng = Rng::new(21);
    let rules = [Selection::TopK { ratio: 0.05 }, Selection::TopK { ratio: 0.2 }, Selection::Dense];
    for dtype in DTYPES {
        for feedback in [true, false] {
            let backend = CpuBackend::with_threads(2).unwrap();
            let mut accs: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(n, true)).collect();
            // Shared indices with values that cancel or are signed zeros.
            for acc in &mut accs {
                acc[10] = -0.0;
                acc[11] = 1.0e30;
            }
            accs[2][11] = -1.0e30;
            let mut buffers = Vec::new();
            let mut own = None;
            for (r, acc) in accs.iter().enumerate() {
                let mut cfg = config(rules[r], dtype);
                cfg.error_feedback = feedback;
                let (mut state, stored) = loaded(&backend, acc, &cfg);
                buffers.push(backend.select_pack(&mut state).unwrap().to_vec());
                if r == 1 {
                    own = Some((state, stored));
                }
            }
            let (mut state, stored) = own.unwrap();
            let mut gathered = Gathered::new();
            gathered.reset(&buffers.iter().map(|b| b.len() as u64).collect::<Vec<_>>()).expect("small lengths");
            buffers.iter().for_each(|b| gathered.push_rank(b));
            let mut theta = rng.vec(n, true);
            theta[10] = -0.0;
            let mut want_theta = theta.clone();
            let mut want_acc = stored;
            naive_apply(&buffers, &mut want_theta, &mut want_acc, 1, 1.0 / 3.0, feedback);
            backend.apply(&mut state, &mut theta, &gathered, 1, 1.0 / 3.0).unwrap();
            assert_same_bits(&theta, &want_theta, &format!("theta, {dtype:?}, feedback {feedback}"));
            assert_eq!(theta[10].to_bits(), 0, "-0.0 + weight * (+0.0) is +0.0");
            let mut acc = vec![0.0; n];
            backend.read_accumulator(&state, &mut acc).unwrap();
            assert_same_bits(&acc, &want_acc, &format!("acc, {dtype:?}, feedback {feedback}"));
            // The statistics follow the changed accumulator.
            let packed = backend.select_pack(&mut state).unwrap().to_vec();
            let want = reference::topk_by_sort(&acc, rules[1].k(n).unwrap());
            assert!(packed == reference::pack(&acc, &want, dtype), "repacked after apply, {dtype:?}");
        }
    }
}

#[test]
fn broken_buffers_are_refused_before_anything_changes() {
    let n = 70_000;
    let backend = CpuBackend::new();
    let acc = Rng::new(4).vec(n, false);
    let cfg = config(Selection::TopK { ratio: 0.01 }, WireDtype::Bf16);
    let (mut state, stored) = loaded(&backend, &acc, &cfg);
    let good = backend.select_pack(&mut state).unwrap().to_vec();
    let theta0 = Rng::new(5).vec(n, false);

    let mut cases: Vec<Vec<u8>> = vec![good[..good.len() - 4].to_vec(), good[..20].to_vec(), Vec::new()];
    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 4]);
    cases.push(longer);
    let mut wrong_n = good.clone();
    wrong_n[8] ^= 1;
    cases.push(wrong_n);
    let mut wrong_dtype = good.clone();
    wrong_dtype[6] = WireDtype::F16.code();
    cases.push(wrong_dtype);
    let mut overfull = good.clone();
    overfull[32..36].copy_from_slice(&70_000u32.to_le_bytes());
    cases.push(overfull);
    let mut magic = good.clone();
    magic[0] = b'X';
    cases.push(magic);
    for bad in cases {
        let mut gathered = Gathered::new();
        gathered.push_rank(&good);
        gathered.push_rank(&bad);
        let mut theta = theta0.clone();
        let err = backend.apply(&mut state, &mut theta, &gathered, 0, 0.5).unwrap_err();
        assert!(matches!(err, Error::InvalidPeerBuffer { rank: 1, .. }), "{err:?}");
        assert_same_bits(&theta, &theta0, "theta after a refused apply");
        let mut now = vec![0.0; n];
        backend.read_accumulator(&state, &mut now).unwrap();
        assert_same_bits(&now, &stored, "acc after a refused apply");
    }
    let mut gathered = Gathered::new();
    gathered.push_rank(&good);
    let mut theta = theta0.clone();
    assert!(backend.apply(&mut state, &mut theta, &gathered, 1, 0.5).is_err());
    assert!(backend.apply(&mut state, &mut theta, &Gathered::new(), 0, 0.5).is_err());
    assert_same_bits(&theta, &theta0, "theta after a refused apply");
}
