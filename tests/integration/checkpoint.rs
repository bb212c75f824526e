//! Restoring checkpoints that do not fit: another world size, rank, bucket
//! layout, length, dtype or configuration, and corrupt or truncated bytes.
//! Each is a typed `CheckpointError` and leaves the engine exactly as it was.

use crate::common::{Synthetic, assert_bitwise_eq};
use chronos_sync::error::CheckpointError;
use chronos_sync::{CpuBackend, Error, LocalCollective, SparseSync, SyncConfig, SyncGroup, WireDtype};
use std::time::Duration;

fn engine(world: usize, rank: usize, n: usize, config: SyncConfig) -> SparseSync<CpuBackend, LocalCollective> {
    let c = LocalCollective::group(world, Duration::from_secs(5)).unwrap().remove(rank);
    SparseSync::new(CpuBackend::new(), c, n, config).unwrap()
}

/// A single-rank engine after a few steps (residual and counters non-zero).
fn trained(n: usize, config: SyncConfig) -> SparseSync<CpuBackend, LocalCollective> {
    let mut sync = engine(1, 0, n, config);
    let mut theta = vec![1.0f32; n];
    for t in 1..=3 {
        sync.step(&Synthetic::new(9).delta(0, t, n), &mut theta).unwrap();
    }
    sync
}

fn state(sync: &SparseSync<CpuBackend, LocalCollective>) -> (Vec<f32>, u64, u64) {
    let mut acc = vec![0.0; sync.len()];
    sync.read_accumulator(&mut acc).unwrap();
    (acc, sync.steps(), sync.steps_since_sync())
}

/// Restores `bytes` into `target`, expects a checkpoint error matching
/// `expected`, and checks that `target` did not change.
#[track_caller]
fn refused(target: &mut SparseSync<CpuBackend, LocalCollective>, bytes: &[u8], expected: fn(&CheckpointError) -> bool) {
    let before = state(target);
    match target.restore(bytes) {
        Err(Error::Checkpoint(e)) if expected(&e) => {}
        other => panic!("unexpected restore result: {other:?}"),
    }
    let after = state(target);
    assert_bitwise_eq("accumulator", &after.0, &before.0);
    assert_eq!((after.1, after.2), (before.1, before.2), "counters");
}

fn config() -> SyncConfig {
    SyncConfig::builder().threshold(1e9).max_threshold(1e9).adaptive(false).build().unwrap()
}

#[test]
fn a_checkpoint_restores_into_an_engine_of_the_same_shape() {
    let saved = trained(1000, config());
    let bytes = saved.checkpoint().unwrap();
    let mut fresh = engine(1, 0, 1000, config());
    fresh.restore(&bytes).unwrap();
    let (a, b) = (state(&saved), state(&fresh));
    assert_bitwise_eq("accumulator", &a.0, &b.0);
    assert_eq!((a.1, a.2), (3, 3));
    assert_eq!((b.1, b.2), (3, 3));
    assert!(a.0.iter().any(|&x| x != 0.0), "the residual is non-zero, so the test means something");
}

#[test]
fn another_shape_or_configuration_is_refused() {
    let bytes = trained(1000, config()).checkpoint().unwrap();
    refused(&mut engine(2, 0, 1000, config()), &bytes, |e| matches!(e, CheckpointError::WorldMismatch { .. }));
    let other_rank = {
        // A 2-rank checkpoint from rank 1, restored into rank 0.
        let handles = LocalCollective::group(2, Duration::from_secs(5)).unwrap();
        let mut it = handles.into_iter();
        let (_r0, r1) = (it.next().unwrap(), it.next().unwrap());
        SparseSync::new(CpuBackend::new(), r1, 1000, config()).unwrap().checkpoint().unwrap()
    };
    refused(&mut engine(2, 0, 1000, config()), &other_rank, |e| matches!(e, CheckpointError::RankMismatch { .. }));
    refused(&mut engine(1, 0, 999, config()), &bytes, |e| matches!(e, CheckpointError::LengthMismatch { .. }));
    let mut f16 = config();
    f16.wire_dtype = WireDtype::F16;
    refused(&mut engine(1, 0, 1000, f16), &bytes, |e| matches!(e, CheckpointError::DtypeMismatch { .. }));
    let mut other = config();
    other.max_accumulation_steps = 7;
    refused(&mut engine(1, 0, 1000, other), &bytes, |e| matches!(e, CheckpointError::ConfigMismatch { .. }));
    let mut two =
        SyncGroup::new(CpuBackend::new(), LocalCollective::group(1, Duration::from_secs(5)).unwrap().remove(0))
            .unwrap();
    two.add_bucket(1000, config()).unwrap();
    two.add_bucket(10, config()).unwrap();
    match two.restore(&bytes) {
        Err(Error::Checkpoint(CheckpointError::BucketCountMismatch { expected: 2, found: 1 })) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn corrupt_or_truncated_bytes_are_refused() {
    let bytes = trained(300, config()).checkpoint().unwrap();
    let mut target = trained(300, config());
    // Every truncation, and a flip of every bit of a sample of bytes
    // spread over header, counters and accumulator.
    for len in 0..bytes.len() {
        refused(&mut target, &bytes[..len], |_| true);
    }
    for i in (0..bytes.len()).step_by(7) {
        for bit in 0..8 {
            let mut bad = bytes.clone();
            bad[i] ^= 1 << bit;
            refused(&mut target, &bad, |_| true);
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    refused(&mut target, &longer, |_| true);
}
