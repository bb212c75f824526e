//! Packed bytes, parameters and accumulators against the f64 reference for
//! every selection rule, every wire dtype, and sizes from 1 to 10^7.

use super::lockstep::lockstep;
use crate::common::{Job, Synthetic, initial_params};
use chronos_sync::{Backend, Selection, SyncConfig, WireDtype};
use std::sync::Arc;

const DTYPES: [WireDtype; 3] = [WireDtype::F32, WireDtype::F16, WireDtype::Bf16];

/// Syncs when the significance passes `threshold` and at least every 3 steps.
fn config(selection: Selection, dtype: WireDtype, threshold: f64) -> SyncConfig {
    SyncConfig::builder()
        .adaptive(false)
        .threshold(threshold)
        .max_accumulation_steps(3)
        .selection(selection)
        .wire_dtype(dtype)
        .build()
        .unwrap()
}

/// `TopK` buffers are byte-identical to the reference's for every dtype, on
/// every rank and every sync, and so are the resulting parameters and
/// accumulators. Includes values beyond f16's range (they saturate).
pub fn topk_bytes_match_reference_every_dtype<B: Backend>(backend: &Arc<B>) {
    let n = 140_001; // three wire chunks, the last one partial
    for dtype in DTYPES {
        for (ratio, scale) in [(0.01, 1e-2f32), (0.2, 1e5)] {
            let job = Job::new(4, config(Selection::TopK { ratio }, dtype, 0.004), 8);
            let theta0 = initial_params(31, n, 1.0);
            let updates = Synthetic { scale, ..Synthetic::new(32) };
            let s = lockstep(backend, &job, &theta0, updates);
            assert!(s.syncs >= 3, "{dtype:?} ratio {ratio}: {s:?}");
            assert_eq!(s.entries, s.syncs * 4 * (n as f64 * ratio).floor() as u64, "{dtype:?}: {s:?}");
        }
    }
}

/// Every rule with every dtype agrees with the reference: byte-identical for
/// `TopK`, `TopKApprox` (with and without slack) and `Dense`; for `Threshold`
/// only entries exactly at the cut may differ (docs/selection.md), and the
/// suite prints how many did.
pub fn every_rule_and_dtype_matches_reference<B: Backend>(backend: &Arc<B>) {
    let n = 70_001;
    let rules = [
        Selection::TopK { ratio: 0.003 },
        Selection::TopKApprox { ratio: 0.02, slack: 0.25 },
        Selection::TopKApprox { ratio: 0.05, slack: 0.0 },
        Selection::TopKApprox { ratio: 0.001, slack: 3.0 },
        Selection::Threshold { rel: 2.0 },
        Selection::Threshold { rel: 0.0 },
        Selection::Dense,
    ];
    let mut boundary = 0;
    for dtype in DTYPES {
        for selection in rules {
            let job = Job::new(3, config(selection, dtype, 0.004), 7);
            let theta0 = initial_params(41, n, 1.0);
            let s = lockstep(backend, &job, &theta0, Synthetic::new(42));
            assert!(s.syncs >= 2, "{selection:?} {dtype:?}: {s:?}");
            if let Selection::TopKApprox { ratio, slack } = selection {
                let k = (n as f64 * ratio).floor() as u64;
                let per_sync = s.entries / (s.syncs * 3);
                assert!(per_sync >= k && per_sync as f64 <= k as f64 * (1.0 + slack), "{selection:?}: {s:?}");
            }
            boundary += s.boundary_differences;
        }
    }
    println!("Threshold entries at the cut selected differently from the reference: {boundary}");
}

/// Sizes around every block and chunk boundary, from a single element up,
/// with an odd number of ranks and syncs on every step.
pub fn sizes_across_block_and_chunk_boundaries<B: Backend>(backend: &Arc<B>) {
    let sizes = [1usize, 2, 3, 7, 31, 32, 33, 255, 1023, 4097, 65_535, 65_536, 65_537, 131_071, 196_615, 1_000_003];
    for n in sizes {
        for (selection, dtype) in
            [(Selection::TopK { ratio: 0.01 }, WireDtype::Bf16), (Selection::Dense, WireDtype::F16)]
        {
            let config = config(selection, dtype, 0.0);
            let job = Job::new(3, config, 3);
            let theta0 = initial_params(51, n, 1.0);
            let s = lockstep(backend, &job, &theta0, Synthetic::new(52));
            assert_eq!(s.syncs, 3, "n={n}: threshold 0 syncs every step: {s:?}");
        }
    }
}

/// 10^7 elements on two ranks: `TopK` bytes and state match the reference.
pub fn ten_million_elements<B: Backend>(backend: &Arc<B>) {
    let n = 10_000_000;
    let job = Job::new(2, config(Selection::TopK { ratio: 0.001 }, WireDtype::Bf16, 0.0), 2);
    let theta0 = initial_params(61, n, 1.0);
    let s = lockstep(backend, &job, &theta0, Synthetic::new(62));
    assert_eq!(s.syncs, 2);
    assert_eq!(s.entries, 2 * 2 * 10_000);
}
