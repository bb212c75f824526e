//! The checkpoint format: round trips, canonical bytes, rejection of every
//! single-byte change and every truncation, bounded allocation for absurd
//! announced lengths, and each field check. Deterministic: exhaustive loops
//! over fixed checkpoints, and proptests with a fixed seed and no
//! regression files.

use proptest::prelude::*;

use super::*;
use crate::config::SyncConfig;
use crate::testing::fixed_proptest;

/// A bucket; odd seeds carry a budget state, even ones none.
fn bucket(n: u64, dtype: WireDtype, seed: u64) -> BucketState {
    let accumulator = (0..n).map(|i| ((i * 7 + seed) % 13) as f32 * 0.25 - 1.5).collect();
    let budget = (seed % 2 == 1).then(|| BudgetState {
        tau: 0.01 * (seed + 1) as f64,
        mean_bytes: 100.5 + seed as f64,
        syncs: seed + 1,
    });
    BucketState {
        n,
        dtype,
        config_fingerprint: 0xdead_beef ^ seed,
        steps: 10 + seed,
        since_sync: seed,
        accumulator,
        budget,
    }
}

/// A few fixed checkpoints: empty, odd and even lengths, every dtype.
fn samples() -> Vec<Checkpoint> {
    vec![
        Checkpoint { world: 1, rank: 0, buckets: vec![] },
        Checkpoint { world: 2, rank: 1, buckets: vec![bucket(0, WireDtype::F32, 0)] },
        Checkpoint {
            world: 4,
            rank: 3,
            buckets: vec![bucket(3, WireDtype::Bf16, 1), bucket(4, WireDtype::F16, 2), bucket(1, WireDtype::F32, 3)],
        },
    ]
}

fn encoded(c: &Checkpoint) -> Vec<u8> {
    let mut out = Vec::new();
    c.encode(&mut out).unwrap();
    out
}

/// Rewrites the checksum so that a hand-edited buffer gets past it.
fn reseal(b: &mut [u8]) {
    let sum = checksum(b).unwrap();
    b[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 8].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn layout_is_as_documented() {
    let c = Checkpoint { world: 2, rank: 1, buckets: vec![bucket(3, WireDtype::Bf16, 1)] };
    let b = encoded(&c);
    assert_eq!(b.len(), 32 + 64 + 12 + 4);
    assert_eq!(c.encoded_len(), b.len());
    assert_eq!(&b[0..4], b"CSCK");
    assert_eq!(&b[4..8], &[2, 0, 0, 0]);
    assert_eq!(&b[8..16], &[2, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(&b[16..24], &1u64.to_le_bytes());
    assert_eq!(&b[24..32], &checksum(&b).unwrap().to_le_bytes());
    assert_eq!(&b[32..40], &3u64.to_le_bytes());
    assert_eq!(&b[40..48], &[2, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&b[48..56], &(0xdead_beefu64 ^ 1).to_le_bytes());
    assert_eq!(&b[56..64], &11u64.to_le_bytes());
    assert_eq!(&b[64..72], &1u64.to_le_bytes());
    assert_eq!(&b[72..80], &0.02f64.to_bits().to_le_bytes());
    assert_eq!(&b[80..88], &101.5f64.to_bits().to_le_bytes());
    assert_eq!(&b[88..96], &2u64.to_le_bytes());
    assert_eq!(&b[96..100], &(-1.25f32).to_bits().to_le_bytes());
    assert_eq!(&b[108..112], &[0; 4]);
    // Without a budget: flag 0 and the 24 state bytes zero.
    let c = Checkpoint { world: 1, rank: 0, buckets: vec![bucket(1, WireDtype::F32, 2)] };
    let b = encoded(&c);
    assert_eq!(b.len(), 32 + 64 + 8);
    assert_eq!(&b[40..48], &[0; 8]);
    assert_eq!(&b[72..96], &[0; 24]);
}

#[test]
fn round_trips_and_appends() {
    for c in samples() {
        let b = encoded(&c);
        assert_eq!(b.len(), c.encoded_len());
        assert_eq!(Checkpoint::decode(&b), Ok(c.clone()));
        // Appends after what is there, leaving it alone.
        let mut out = vec![0xAA; 5];
        c.encode(&mut out).unwrap();
        assert_eq!(&out[..5], &[0xAA; 5]);
        assert_eq!(&out[5..], &b[..]);
    }
}

#[test]
fn every_single_byte_change_is_rejected() {
    for c in samples() {
        let good = encoded(&c);
        let mut b = good.clone();
        for at in 0..b.len() {
            for v in 0..=255u8 {
                if v == good[at] {
                    continue;
                }
                b[at] = v;
                assert!(Checkpoint::decode(&b).is_err(), "byte {at} = {v:#04x} accepted");
                b[at] = good[at];
            }
        }
    }
}

#[test]
fn every_truncation_and_extension_is_rejected() {
    for c in samples() {
        let b = encoded(&c);
        for len in 0..b.len() {
            let e = Checkpoint::decode(&b[..len]).unwrap_err();
            assert!(
                matches!(e, CheckpointError::Truncated { available, .. } if available == len as u64),
                "length {len}: {e:?}"
            );
        }
        for extra in 1..=16 {
            let mut long = b.clone();
            long.resize(b.len() + extra, 0);
            assert_eq!(
                Checkpoint::decode(&long),
                Err(CheckpointError::TrailingBytes { expected: b.len() as u64, found: (b.len() + extra) as u64 })
            );
        }
    }
}

/// Announced lengths far past the buffer are a `Truncated` error found from
/// the lengths alone: an attempt to allocate 2^64 bytes would abort the
/// test instead.
#[test]
fn huge_announced_lengths_are_rejected_before_allocating() {
    let c = Checkpoint { world: 1, rank: 0, buckets: vec![bucket(2, WireDtype::F32, 0)] };
    let good = encoded(&c);
    for n in [1u64 << 62, u64::MAX, u64::MAX / 4, 3] {
        let mut b = good.clone();
        b[32..40].copy_from_slice(&n.to_le_bytes());
        reseal(&mut b);
        let e = Checkpoint::decode(&b).unwrap_err();
        assert!(matches!(e, CheckpointError::Truncated { needed, available: 104 } if needed > 104), "n = {n}: {e:?}");
    }
    for count in [1u64 << 62, u64::MAX, 2] {
        let mut b = good.clone();
        b[16..24].copy_from_slice(&count.to_le_bytes());
        reseal(&mut b);
        let e = Checkpoint::decode(&b).unwrap_err();
        assert!(
            matches!(e, CheckpointError::Truncated { needed, available: 104 } if needed > 104),
            "count {count}: {e:?}"
        );
    }
    // A header-only buffer announcing 2^62 buckets of 2^62 values.
    let mut b = vec![0u8; 32 + 64];
    b[0..4].copy_from_slice(&MAGIC);
    b[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&(1u64 << 62).to_le_bytes());
    b[32..40].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(matches!(Checkpoint::decode(&b), Err(CheckpointError::Truncated { .. })));
}

#[test]
fn header_errors_are_typed() {
    let good = encoded(&samples()[2]);
    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(Checkpoint::decode(&b), Err(CheckpointError::BadMagic { found: *b"XSCK" }));
    // Version 1 (before the budget state) is refused, as is any other.
    for version in [1u8, 3, 0] {
        let mut b = good.clone();
        b[4] = version;
        assert_eq!(
            Checkpoint::decode(&b),
            Err(CheckpointError::UnsupportedVersion { found: u16::from(version), supported: 2 })
        );
    }
    let mut b = good.clone();
    b[100] ^= 1;
    assert!(matches!(Checkpoint::decode(&b), Err(CheckpointError::ChecksumMismatch { .. })));
    let mut b = good.clone();
    b[CHECKSUM_OFFSET] ^= 1;
    assert!(matches!(Checkpoint::decode(&b), Err(CheckpointError::ChecksumMismatch { .. })));
}

/// Field checks behind a valid checksum (what a buggy writer could produce).
#[test]
fn field_errors_are_typed() {
    let good = encoded(&samples()[2]);
    // Bucket 0 at 32 (n = 3: 64 header bytes, 12 value bytes + 4 padding),
    // bucket 1 at 112.
    let cases: Vec<(usize, Vec<u8>, CheckpointError)> = vec![
        (6, vec![1], CheckpointError::NonZeroReserved { offset: 6 }),
        (
            8,
            0u32.to_le_bytes().to_vec(),
            CheckpointError::InvalidField { field: "world", reason: "must be at least 1".into() },
        ),
        (
            12,
            4u32.to_le_bytes().to_vec(),
            CheckpointError::InvalidField { field: "rank", reason: "rank 4 is not below world 4".into() },
        ),
        (40, vec![3], CheckpointError::InvalidDtype { bucket: 0, code: 3 }),
        (112 + 8, vec![255], CheckpointError::InvalidDtype { bucket: 1, code: 255 }),
        (47, vec![1], CheckpointError::NonZeroReserved { offset: 47 }),
        (
            64,
            12u64.to_le_bytes().to_vec(),
            CheckpointError::InvalidField {
                field: "since_sync",
                reason: "bucket 0: since_sync 12 exceeds steps 11".into(),
            },
        ),
        (42, vec![1], CheckpointError::NonZeroReserved { offset: 42 }),
        (110, vec![1], CheckpointError::NonZeroReserved { offset: 110 }),
        // Bucket 1 has no budget: its state bytes must be zero.
        (112 + 40 + 3, vec![1], CheckpointError::NonZeroReserved { offset: 155 }),
        (100, f32::NAN.to_bits().to_le_bytes().to_vec(), CheckpointError::NonFinite { bucket: 0, index: 1 }),
        (
            112 + 64 + 12,
            f32::NEG_INFINITY.to_bits().to_le_bytes().to_vec(),
            CheckpointError::NonFinite { bucket: 1, index: 3 },
        ),
    ];
    for (at, bytes, want) in cases {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(&bytes);
        reseal(&mut b);
        assert_eq!(Checkpoint::decode(&b), Err(want), "patch at {at}");
    }
}

/// The budget flag and state behind a valid checksum: each bad value is an
/// `InvalidField` naming the budget field.
#[test]
fn budget_field_errors_are_typed() {
    let good = encoded(&samples()[2]);
    // Bucket 0 (budget) at 32: flag at 41, tau at 72, mean at 80, syncs at
    // 88. Bucket 1 (none) at 112: flag at 121.
    let cases: Vec<(usize, Vec<u8>, &str)> = vec![
        (41, vec![2], "budget"),
        (41, vec![255], "budget"),
        (72, f64::NAN.to_bits().to_le_bytes().to_vec(), "budget.tau"),
        (72, f64::INFINITY.to_bits().to_le_bytes().to_vec(), "budget.tau"),
        (72, 0.0f64.to_bits().to_le_bytes().to_vec(), "budget.tau"),
        (72, (-0.5f64).to_bits().to_le_bytes().to_vec(), "budget.tau"),
        (80, f64::NAN.to_bits().to_le_bytes().to_vec(), "budget.mean_bytes"),
        (80, (-1.0f64).to_bits().to_le_bytes().to_vec(), "budget.mean_bytes"),
        (80, 0.0f64.to_bits().to_le_bytes().to_vec(), "budget.mean_bytes"),
        (88, 0u64.to_le_bytes().to_vec(), "budget.mean_bytes"),
        // Flag 1 on bucket 1, whose state bytes are all zero: tau = 0.
        (121, vec![1], "budget.tau"),
    ];
    for (at, bytes, field) in cases {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(&bytes);
        reseal(&mut b);
        match Checkpoint::decode(&b) {
            Err(CheckpointError::InvalidField { field: f, .. }) if f == field => {}
            other => panic!("patch at {at}: expected InvalidField {{ field: {field} }}, got {other:?}"),
        }
    }
}

#[test]
fn encode_rejects_states_no_engine_has() {
    let ok = samples()[2].clone();
    let mut out = vec![7u8; 3];
    let mut check = |c: &Checkpoint, want: CheckpointError| {
        assert_eq!(c.encode(&mut out), Err(want));
        assert_eq!(out, vec![7u8; 3], "a failed encode must leave `out` alone");
    };
    let mut c = ok.clone();
    c.buckets[1].accumulator.pop();
    check(&c, CheckpointError::AccumulatorLength { bucket: 1, n: 4, len: 3 });
    let mut c = ok.clone();
    c.buckets[2].accumulator[0] = f32::INFINITY;
    check(&c, CheckpointError::NonFinite { bucket: 2, index: 0 });
    let mut c = ok.clone();
    c.buckets[0].since_sync = 12;
    check(
        &c,
        CheckpointError::InvalidField {
            field: "since_sync",
            reason: "bucket 0: since_sync 12 exceeds steps 11".into(),
        },
    );
    let mut c = ok.clone();
    c.buckets[0].budget = Some(BudgetState { tau: f64::NAN, mean_bytes: 0.0, syncs: 0 });
    check(
        &c,
        CheckpointError::InvalidField {
            field: "budget.tau",
            reason: "bucket 0: must be finite and > 0, got NaN".into(),
        },
    );
    let mut c = ok.clone();
    c.buckets[2].budget = Some(BudgetState { tau: 0.5, mean_bytes: 3.0, syncs: 0 });
    check(
        &c,
        CheckpointError::InvalidField {
            field: "budget.mean_bytes",
            reason: "bucket 2: must be finite, > 0 after a sync and 0 before one, got 3 after 0 syncs".into(),
        },
    );
    let mut c = ok.clone();
    c.world = 0;
    c.rank = 0;
    check(&c, CheckpointError::InvalidField { field: "world", reason: "must be at least 1".into() });
    let mut c = ok;
    c.rank = 4;
    check(&c, CheckpointError::InvalidField { field: "rank", reason: "rank 4 is not below world 4".into() });
}

#[test]
fn checkpoint_error_converts_into_the_crate_error() {
    let e: crate::Error = CheckpointError::WorldMismatch { expected: 2, found: 3 }.into();
    assert!(matches!(e, crate::Error::Checkpoint(CheckpointError::WorldMismatch { expected: 2, found: 3 })));
    assert_eq!(e.to_string(), "checkpoint is for world size 3, this group has 2");
}

#[test]
fn fingerprint_is_stored_as_given() {
    let fp = SyncConfig::default().fingerprint();
    let c = Checkpoint {
        world: 1,
        rank: 0,
        buckets: vec![BucketState { config_fingerprint: fp, ..bucket(2, WireDtype::Bf16, 0) }],
    };
    assert_eq!(Checkpoint::decode(&encoded(&c)).unwrap().buckets[0].config_fingerprint, fp);
}

fn any_dtype() -> impl Strategy<Value = WireDtype> {
    prop_oneof![Just(WireDtype::F32), Just(WireDtype::F16), Just(WireDtype::Bf16)]
}

/// Any finite f32 bit pattern (subnormals and signed zeros included).
fn any_finite() -> impl Strategy<Value = f32> {
    any::<u32>().prop_map(|b| {
        let v = f32::from_bits(b);
        if v.is_finite() { v } else { f32::from_bits(b & 0xbf7f_ffff) }
    })
}

/// No budget, or a valid budget state (positive tau; a mean exactly when
/// there were syncs).
fn any_budget() -> impl Strategy<Value = Option<BudgetState>> {
    (any::<bool>(), 1e-9f64..1e3, 0u64..4, 1e-3f64..1e9).prop_map(|(has, tau, syncs, mean)| {
        has.then_some(BudgetState { tau, mean_bytes: if syncs == 0 { 0.0 } else { mean }, syncs })
    })
}

fn any_bucket() -> impl Strategy<Value = BucketState> {
    (any_dtype(), any::<u64>(), any::<u64>(), any::<u64>(), prop::collection::vec(any_finite(), 0..12), any_budget())
        .prop_map(|(dtype, config_fingerprint, steps, since, accumulator, budget)| BucketState {
            n: accumulator.len() as u64,
            dtype,
            config_fingerprint,
            steps,
            since_sync: if steps == 0 { 0 } else { since % (steps.saturating_add(1)).max(1) },
            accumulator,
            budget,
        })
}

fn any_checkpoint() -> impl Strategy<Value = Checkpoint> {
    (1u32..6, any::<u32>(), prop::collection::vec(any_bucket(), 0..4)).prop_map(|(world, rank, buckets)| Checkpoint {
        world,
        rank: rank % world,
        buckets,
    })
}

proptest! {
    #![proptest_config(fixed_proptest(256))]

    /// Decoding gives back the checkpoint, and re-encoding the very same
    /// bytes (one encoding per state: the bits of every value survive).
    #[test]
    fn prop_round_trip_is_exact(c in any_checkpoint()) {
        let b = encoded(&c);
        prop_assert_eq!(b.len(), c.encoded_len());
        let back = Checkpoint::decode(&b).unwrap();
        prop_assert_eq!(encoded(&back), b);
        prop_assert_eq!(back, c);
    }

    /// Any one byte replaced by another value is rejected.
    #[test]
    fn prop_single_byte_change_is_rejected(c in any_checkpoint(), at in any::<prop::sample::Index>(), x in 1u8..=255) {
        let mut b = encoded(&c);
        let at = at.index(b.len());
        b[at] ^= x;
        prop_assert!(Checkpoint::decode(&b).is_err());
    }

    /// Every proper prefix is `Truncated`.
    #[test]
    fn prop_truncation_is_rejected(c in any_checkpoint(), cut in any::<prop::sample::Index>()) {
        let b = encoded(&c);
        let len = cut.index(b.len());
        let truncated = matches!(Checkpoint::decode(&b[..len]), Err(CheckpointError::Truncated { .. }));
        prop_assert!(truncated);
    }

    /// Arbitrary bytes never panic; what is accepted re-encodes to itself.
    #[test]
    fn prop_arbitrary_bytes_are_handled(mut bytes in prop::collection::vec(any::<u8>(), 0..160), seal in any::<bool>()) {
        if bytes.len() >= 4 {
            bytes[0..4].copy_from_slice(&MAGIC);
        }
        if bytes.len() >= 6 {
            bytes[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        }
        if seal && bytes.len() >= HEADER_BYTES && bytes.len() % 8 == 0 {
            reseal(&mut bytes);
        }
        if let Ok(c) = Checkpoint::decode(&bytes) {
            prop_assert_eq!(encoded(&c), bytes);
        }
    }
}
