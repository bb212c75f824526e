//! Selection and packing: byte-identical to the spec-level reference for
//! every rule and dtype, on random, tie-heavy and edge-sized inputs, and
//! independent of the thread count.

use proptest::prelude::*;

use super::reference::{self, key};
use super::{DTYPES, Rng, config, loaded};
use crate::backend::Backend;
use crate::backend::cpu::CpuBackend;
use crate::config::{Selection, WireDtype};
use crate::wire::quantize::quantize;

/// The indices the spec selects from `acc` (`acc_sq` as the status reported it).
fn expected(acc: &[f32], selection: Selection, acc_sq: f32) -> Vec<usize> {
    let n = acc.len();
    match selection {
        Selection::TopK { .. } => reference::topk_by_sort(acc, selection.k(n).unwrap()),
        Selection::TopKApprox { slack, .. } => {
            let k = selection.k(n).unwrap();
            reference::radix_select(acc, k, (k as f64 * (1.0 + slack)).floor() as usize)
        }
        Selection::Threshold { rel } => {
            let c = (rel as f32) * (acc_sq / n as f32).sqrt();
            (0..n).filter(|&i| key(acc[i]) >= key(c)).collect()
        }
        Selection::Dense => (0..n).collect(),
    }
}

/// Packs `input` with the backend and checks the bytes against the
/// reference packer and decoder. Returns the bytes.
fn check(backend: &CpuBackend, input: &[f32], selection: Selection, dtype: WireDtype) -> Vec<u8> {
    let cfg = config(selection, dtype);
    let (mut state, acc) = loaded(backend, input, &cfg);
    let acc_sq = state.stats.acc_sq;
    let want = expected(&acc, selection, acc_sq);
    let got = backend.select_pack(&mut state).unwrap().to_vec();
    // The crate's own decoder accepts it too.
    crate::wire::validate(&got, acc.len() as u64, dtype).unwrap();
    let decoded = reference::decode(&got);
    assert_eq!(decoded.n, acc.len());
    assert_eq!(decoded.dtype, dtype);
    assert_eq!(decoded.indices, want, "{selection:?} n = {}", acc.len());
    let values: Vec<u32> = want.iter().map(|&i| quantize(acc[i], dtype)).collect();
    assert_eq!(decoded.values, values);
    assert!(got == reference::pack(&acc, &want, dtype), "bytes differ: {selection:?} {dtype:?} n = {}", acc.len());
    if let Selection::TopKApprox { slack, .. } = selection {
        let k = selection.k(acc.len()).unwrap();
        let count = decoded.indices.len();
        assert!(k <= count && count <= (k as f64 * (1.0 + slack)).floor() as usize, "k {k} count {count}");
    }
    got
}

fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(0.0f32),
        Just(-0.0f32),
        Just(1.0f32),
        Just(-1.0f32),
        Just(1.5f32),
        -1.0e3f32..1.0e3f32,
        any::<f32>().prop_filter("finite", |x| x.is_finite()),
    ]
}

fn rule() -> impl Strategy<Value = Selection> {
    prop_oneof![
        (1.0e-4f64..=1.0).prop_map(|ratio| Selection::TopK { ratio }),
        (1.0e-4f64..=1.0, 0.0f64..1.0).prop_map(|(ratio, slack)| Selection::TopKApprox { ratio, slack }),
        (0.0f64..3.0).prop_map(|rel| Selection::Threshold { rel }),
        Just(Selection::Dense),
    ]
}

proptest! {
    #![proptest_config(crate::testing::fixed_proptest(300))]

    #[test]
    fn packs_like_the_reference(acc in prop::collection::vec(value(), 1..1200), selection in rule(), d in 0usize..3) {
        check(&CpuBackend::new(), &acc, selection, DTYPES[d]);
    }

    /// Few distinct keys: the level-3 exact cut with ties is the common case.
    #[test]
    fn exact_ties_go_to_the_lower_index(
        acc in prop::collection::vec(prop::sample::select(vec![0.0f32, 2.0, -2.0, 0.25, -0.0]), 1..1500),
        ratio in 1.0e-3f64..=1.0,
    ) {
        check(&CpuBackend::new(), &acc, Selection::TopK { ratio }, WireDtype::Bf16);
        check(&CpuBackend::new(), &acc, Selection::TopKApprox { ratio, slack: 0.1 }, WireDtype::F16);
    }
}

/// A vector of `n` entries for [`taken_candidates_merge_with_the_marked_ones`]:
/// a few distinct large magnitudes (above the cut), many exact ties at 1.0
/// and near-ties in its level-1 bin (the candidates), small values below,
/// all with random signs. Returns it with the number of entries above the
/// bin of 1.0 and in it.
fn tie_bin_vector(seed: u64, n: usize, above_per_mille: u64, bin_per_mille: u64) -> (Vec<f32>, usize, usize) {
    const ONE: u32 = 0x3f80_0000;
    let mut rng = Rng::new(seed);
    let (mut above, mut in_bin) = (0, 0);
    let acc = (0..n)
        .map(|_| {
            let draw = rng.next() % 1000;
            let magnitude = if draw < above_per_mille {
                above += 1;
                [4.0f32, 6.5, 1.0e3][(rng.next() % 3) as usize]
            } else if draw < above_per_mille + bin_per_mille {
                in_bin += 1;
                // Half exact ties; the rest differ from 1.0 only in the
                // level-2 or level-3 digit (same level-1 bin).
                let near = [0u32, 0, 1, 2, 511, 512, 1 << 19];
                f32::from_bits(ONE + near[(rng.next() % near.len() as u64) as usize])
            } else {
                [0.0f32, 0.25, 0.5][(rng.next() % 3) as usize]
            };
            if rng.next() % 2 == 0 { -magnitude } else { magnitude }
        })
        .collect();
    (acc, above, in_bin)
}

proptest! {
    #![proptest_config(crate::testing::fixed_proptest(16))]

    /// The cut falls inside the level-1 bin of 1.0, which is full of ties,
    /// on vectors of two or three chunks: the search goes through the
    /// candidates (and usually the exact tie rule, whose quota spans chunk
    /// boundaries), and every chunk's packer merges taken candidates with
    /// the entries above the cut.
    #[test]
    fn taken_candidates_merge_with_the_marked_ones(
        seed in any::<u64>(),
        extra in 1usize..(2 * 65_536),
        above_per_mille in 1u64..60,
        bin_per_mille in 50u64..400,
        into_bin in 0.0f64..1.0,
        d in 0usize..3,
    ) {
        let n = 65_536 + extra;
        let (acc, above, in_bin) = tie_bin_vector(seed, n, above_per_mille, bin_per_mille);
        // `k` between the entries above the bin and those up to its end.
        let k = above + 1 + ((in_bin.saturating_sub(1)) as f64 * into_bin) as usize;
        let ratio = (k as f64 + 0.5) / n as f64;
        let backend = CpuBackend::with_threads(2).unwrap();
        check(&backend, &acc, Selection::TopK { ratio }, DTYPES[d]);
        check(&backend, &acc, Selection::TopKApprox { ratio, slack: 0.0 }, DTYPES[(d + 1) % 3]);
        check(&backend, &acc, Selection::TopKApprox { ratio, slack: 0.02 }, DTYPES[(d + 2) % 3]);
    }
}

/// The selection pass's portable build (the one a CPU without AVX2 runs)
/// packs like the reference too; every other test runs the AVX2 build where
/// the CPU has it. The switch is global, and other tests running meanwhile
/// only take the other, equally correct, build.
#[test]
fn portable_selection_pass_packs_like_the_reference() {
    use std::sync::atomic::Ordering;
    let backend = CpuBackend::with_threads(2).unwrap();
    let mut rng = Rng::new(13);
    let rules = [
        Selection::TopK { ratio: 0.01 },
        Selection::TopKApprox { ratio: 0.01, slack: 0.5 },
        Selection::Threshold { rel: 1.0 },
        Selection::Dense,
    ];
    crate::backend::cpu::mark::PORTABLE_ONLY.store(true, Ordering::Relaxed);
    for (case, n) in [31usize, 65_537, 2 * 65_536 + 33].into_iter().enumerate() {
        for tie_heavy in [false, true] {
            let acc = rng.vec(n, tie_heavy);
            for (r, &selection) in rules.iter().enumerate() {
                check(&backend, &acc, selection, DTYPES[(case + r) % 3]);
            }
        }
    }
    let (acc, above, in_bin) = tie_bin_vector(17, 2 * 65_536 + 5, 20, 200);
    let ratio = (above + in_bin / 3) as f64 / acc.len() as f64;
    check(&backend, &acc, Selection::TopK { ratio }, WireDtype::Bf16);
    crate::backend::cpu::mark::PORTABLE_ONLY.store(false, Ordering::Relaxed);
}

#[test]
fn reference_radix_select_is_exact_top_k() {
    let mut rng = Rng::new(7);
    for n in [1, 2, 3, 100, 1000] {
        for tie_heavy in [false, true] {
            let acc = rng.vec(n, tie_heavy);
            for k in [1, n / 3 + 1, n] {
                assert_eq!(reference::radix_select(&acc, k, k), reference::topk_by_sort(&acc, k));
            }
        }
    }
}

/// Sizes around the chunk and block boundaries, every rule.
#[test]
fn edge_sizes_pack_like_the_reference() {
    let backend = CpuBackend::with_threads(2).unwrap();
    let rules = [
        Selection::TopK { ratio: 1.0e-5 },
        Selection::TopK { ratio: 0.01 },
        Selection::TopK { ratio: 0.3 },
        Selection::TopK { ratio: 1.0 },
        Selection::TopKApprox { ratio: 0.01, slack: 0.5 },
        Selection::TopKApprox { ratio: 0.2, slack: 0.0 },
        Selection::Threshold { rel: 1.0 },
        Selection::Dense,
    ];
    let mut rng = Rng::new(11);
    for (case, n) in [1usize, 2, 31, 16_385, 65_535, 65_536, 65_537, 3 * 65_536 + 5].into_iter().enumerate() {
        for tie_heavy in [false, true] {
            let acc = rng.vec(n, tie_heavy);
            for (r, &selection) in rules.iter().enumerate() {
                check(&backend, &acc, selection, DTYPES[(case + r) % 3]);
            }
        }
    }
}

#[test]
fn constant_vectors_take_the_first_k() {
    let backend = CpuBackend::new();
    for v in [0.0f32, -0.0, 1.0, -3.5] {
        for n in [1usize, 5, 70_000] {
            let acc = vec![v; n];
            let bytes = check(&backend, &acc, Selection::TopK { ratio: 0.1 }, WireDtype::F32);
            let k = (n / 10).max(1);
            assert_eq!(reference::decode(&bytes).indices, (0..k).collect::<Vec<_>>());
        }
    }
}

/// Same input, 1, 2 or 3 threads: same status bits, same bytes.
#[test]
fn results_do_not_depend_on_thread_count() {
    let n = 3 * 65_536 + 5;
    let mut rng = Rng::new(3);
    let delta = rng.vec(n, true);
    let acc0 = rng.vec(n, false);
    let theta = rng.vec(n, false);
    let rules = [
        Selection::TopK { ratio: 0.01 },
        Selection::TopKApprox { ratio: 0.05, slack: 0.2 },
        Selection::Threshold { rel: 2.0 },
        Selection::Dense,
    ];
    for selection in rules {
        let mut seen: Option<(Vec<u8>, Vec<u8>, Vec<u32>)> = None;
        for threads in [1, 2, 3] {
            let backend = CpuBackend::with_threads(threads).unwrap();
            let (mut state, _) = loaded(&backend, &acc0, &config(selection, WireDtype::Bf16));
            let status = backend.accumulate(&mut state, &delta, &theta, 0.5).unwrap();
            backend.commit_accumulate(&mut state).unwrap();
            let bytes = backend.select_pack(&mut state).unwrap().to_vec();
            let hist = state.stats.hist1.clone();
            let got = (bytemuck::bytes_of(&status).to_vec(), bytes, hist);
            match &seen {
                None => seen = Some(got),
                Some(first) => assert!(*first == got, "{threads} threads differ for {selection:?}"),
            }
        }
    }
}

/// Packing twice without a new step gives the same bytes, and packing does
/// not touch the accumulator.
#[test]
fn packing_is_repeatable_and_read_only() {
    let backend = CpuBackend::new();
    let acc = Rng::new(5).vec(100_000, true);
    let (mut state, stored) = loaded(&backend, &acc, &config(Selection::TopK { ratio: 0.02 }, WireDtype::Bf16));
    let first = backend.select_pack(&mut state).unwrap().to_vec();
    let second = backend.select_pack(&mut state).unwrap().to_vec();
    assert_eq!(first, second);
    let mut after = vec![0.0; acc.len()];
    backend.read_accumulator(&state, &mut after).unwrap();
    assert_eq!(
        after.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        stored.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}

/// Inputs built so the cut search stops at level 1, 2, 3, or needs the
/// exact tie rule, spread over several chunks.
#[test]
fn every_stage_of_the_cut_search() {
    let n = 2 * 65_536 + 9;
    const BASE: u32 = 0x3f80_0000; // 1.0
    type Make = Box<dyn Fn(usize) -> f32>;
    let stages: [(&str, Make); 4] = [
        // Distinct level-1 digits for the largest entries.
        ("level 1", Box::new(|i| if i % 1000 == 7 { f32::from_bits(BASE + ((i as u32 / 1000) << 20)) } else { 0.5 })),
        // Same level-1 digit, distinct level-2 digits.
        ("level 2", Box::new(|i| if i % 1000 == 7 { f32::from_bits(BASE + ((i as u32 / 1000) << 9)) } else { 0.5 })),
        // Same level-1 and level-2 digits, distinct level-3 digits.
        ("level 3", Box::new(|i| if i % 1000 == 7 { f32::from_bits(BASE + (i as u32 / 1000)) } else { 0.5 })),
        // Ties across chunks.
        ("exact", Box::new(|i| if i % 3 == 0 { -2.0 } else { 1.0 })),
    ];
    let backend = CpuBackend::with_threads(3).unwrap();
    for (stage, f) in &stages {
        let acc: Vec<f32> = (0..n).map(f).collect();
        for ratio in [1.0 / n as f64, 50.0 / n as f64, 0.25, 0.4] {
            for selection in [Selection::TopK { ratio }, Selection::TopKApprox { ratio, slack: 0.05 }] {
                let bytes = check(&backend, &acc, selection, WireDtype::F32);
                assert!(!bytes.is_empty(), "{stage}");
            }
        }
    }
}
