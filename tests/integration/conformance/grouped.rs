//! Buckets and rank-local failures: a [`SyncGroup`]'s buckets behave exactly
//! as separate engines would (bitwise, every step), and an error that arises
//! on one rank only (a wrong length) fails that step on every rank, naming
//! the rank, with every rank still aligned for the next step.

use crate::common::{Synthetic, assert_bitwise_eq, initial_params, make_ranks};
use chronos_sync::{
    Backend, BucketStep, Error, FailureCause, LocalCollective, RankFailure, Selection, SparseSync, SyncConfig,
    SyncGroup, WireDtype,
};
use std::borrow::{Borrow, BorrowMut};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Three buckets with different lengths, rules, dtypes and thresholds.
fn bucket_specs() -> Vec<(usize, SyncConfig)> {
    vec![
        (3000, SyncConfig::builder().threshold(0.02).build().unwrap()),
        (
            70_001,
            SyncConfig::builder()
                .selection(Selection::TopKApprox { ratio: 0.02, slack: 0.5 })
                .wire_dtype(WireDtype::F16)
                .max_accumulation_steps(3)
                .build()
                .unwrap(),
        ),
        (
            17,
            SyncConfig::builder()
                .adaptive(false)
                .threshold(0.5)
                .selection(Selection::Dense)
                .wire_dtype(WireDtype::F32)
                .max_accumulation_steps(4)
                .build()
                .unwrap(),
        ),
    ]
}

fn download<B: Backend>(b: &B, v: &B::Buffer, n: usize) -> Vec<f32> {
    let mut host = vec![0.0; n];
    b.download(v.borrow(), &mut host).expect("download");
    host
}

/// A 4-rank group of three buckets on one shared backend and one collective
/// against three separate engines (each with its own collective) fed the
/// same updates: after every step each bucket's parameters and accumulator
/// equal its separate engine's bitwise, its report says the same, and the
/// replicas are identical across ranks. Buckets sync independently (the
/// Dense bucket is forced every 4th step, the TopKApprox one every 3rd).
pub fn group_buckets_match_separate_engines<B: Backend>(backend: &Arc<B>) {
    let world = 4;
    let steps = 12u64;
    let specs = bucket_specs();
    let timeout = Duration::from_secs(30);
    let mut group_handles = LocalCollective::group(world, timeout).unwrap();
    let mut single_handles: Vec<Vec<LocalCollective>> =
        specs.iter().map(|_| LocalCollective::group(world, timeout).unwrap()).collect();
    let per_rank: Vec<(LocalCollective, Vec<LocalCollective>)> = (0..world)
        .rev()
        .map(|_| (group_handles.pop().unwrap(), single_handles.iter_mut().map(|h| h.pop().unwrap()).collect()))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let specs = &specs;
    let finals: Vec<Vec<Vec<f32>>> = thread::scope(|s| {
        let joins: Vec<_> = per_rank
            .into_iter()
            .enumerate()
            .map(|(rank, (gc, sc))| {
                let backend = Arc::clone(backend);
                s.spawn(move || {
                    let mut group = SyncGroup::new(Arc::clone(&backend), gc).unwrap();
                    let mut singles: Vec<SparseSync<Arc<B>, LocalCollective>> = Vec::new();
                    let mut gp = Vec::new();
                    let mut sp = Vec::new();
                    let mut deltas = Vec::new();
                    for ((b, (n, config)), c) in specs.iter().enumerate().zip(sc) {
                        assert_eq!(group.add_bucket(*n, config.clone()).unwrap(), b);
                        singles.push(SparseSync::new(Arc::clone(&backend), c, *n, config.clone()).unwrap());
                        let theta0 = initial_params(900 + b as u64, *n, 1.0);
                        let mut p = backend.alloc(*n).unwrap();
                        backend.upload(&theta0, p.borrow_mut()).unwrap();
                        gp.push(p);
                        let mut p = backend.alloc(*n).unwrap();
                        backend.upload(&theta0, p.borrow_mut()).unwrap();
                        sp.push(p);
                        deltas.push(backend.alloc(*n).unwrap());
                    }
                    let mut syncs = vec![0u64; specs.len()];
                    for t in 1..=steps {
                        for (b, (n, _)) in specs.iter().enumerate() {
                            let host = Synthetic::new(910 + b as u64).delta(rank, t, *n);
                            backend.upload(&host, deltas[b].borrow_mut()).unwrap();
                        }
                        let mut inputs: Vec<BucketStep<'_, Arc<B>>> = deltas
                            .iter()
                            .zip(gp.iter_mut())
                            .map(|(d, p)| BucketStep { delta: d.borrow(), params: p.borrow_mut() })
                            .collect();
                        let summary = group.step(&mut inputs).unwrap_or_else(|e| panic!("rank {rank} step {t}: {e}"));
                        drop(inputs);
                        assert_eq!(summary.step, t);
                        for (b, (n, _)) in specs.iter().enumerate() {
                            let single = singles[b].step(deltas[b].borrow(), sp[b].borrow_mut()).unwrap();
                            let grouped = group.reports()[b];
                            let what = format!("rank {rank} step {t} bucket {b}");
                            assert_eq!(grouped.synced, single.synced, "{what}: synced");
                            assert_eq!(grouped.bytes_sent, single.bytes_sent, "{what}: bytes sent");
                            assert_eq!(grouped.significance.to_bits(), single.significance.to_bits(), "{what}");
                            syncs[b] += u64::from(grouped.synced);
                            assert_bitwise_eq(
                                &format!("{what} theta"),
                                &download(&*backend, &gp[b], *n),
                                &download(&*backend, &sp[b], *n),
                            );
                            let (mut ga, mut sa) = (vec![0.0; *n], vec![0.0; *n]);
                            group.read_accumulator(b, &mut ga).unwrap();
                            singles[b].read_accumulator(&mut sa).unwrap();
                            assert_bitwise_eq(&format!("{what} acc"), &ga, &sa);
                        }
                    }
                    assert!(syncs[1] >= steps / 3 && syncs[2] >= steps / 4, "rank {rank}: forced syncs ran: {syncs:?}");
                    assert!(
                        syncs.iter().any(|&s| s < steps),
                        "rank {rank}: not every bucket syncs every step: {syncs:?}"
                    );
                    specs.iter().enumerate().map(|(b, (n, _))| download(&*backend, &gp[b], *n)).collect()
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().expect("rank thread panicked")).collect()
    });
    for (rank, f) in finals.iter().enumerate().skip(1) {
        for b in 0..f.len() {
            assert_bitwise_eq(&format!("bucket {b}: rank {rank} vs rank 0"), &f[b], &finals[0][b]);
        }
    }
}

/// Rank 1 of 4 passes a delta of the wrong length at step 3: every rank's
/// step 3 fails with the same [`Error::RankFailed`] naming rank 1
/// ([`FailureCause::LengthMismatch`]), rank 1's also carrying its own
/// `LengthMismatch`; no rank's state or step count changes; the retried
/// step 3 succeeds everywhere and the replicas stay identical.
pub fn wrong_length_on_one_rank_fails_every_rank_at_the_same_step<B: Backend>(backend: &Arc<B>) {
    let (world, n) = (4, 5000);
    let config = SyncConfig::builder().threshold(0.001).adaptive(false).build().unwrap();
    let theta0 = initial_params(31, n, 1.0);
    let updates = Synthetic::new(32);
    let ranks = make_ranks(backend, world, &config, &theta0, Duration::from_secs(30)).unwrap();
    let thetas: Vec<Vec<f32>> = thread::scope(|s| {
        let joins: Vec<_> = ranks
            .into_iter()
            .map(|mut r| {
                s.spawn(move || {
                    for t in 1..=2 {
                        r.step_host(&updates.delta(r.rank, t, n)).unwrap();
                    }
                    let (acc, theta) = (r.acc(), r.theta());
                    let bad_len = if r.rank == 1 { n - 1 } else { n };
                    let mut short = r.sync.backend().alloc(bad_len).unwrap();
                    let host = updates.delta(r.rank, 3, bad_len);
                    r.sync.backend().upload(&host, short.borrow_mut()).unwrap();
                    let err = r.sync.step(short.borrow(), r.theta.borrow_mut()).unwrap_err();
                    let want = vec![RankFailure { rank: 1, bucket: Some(0), cause: FailureCause::LengthMismatch }];
                    match &err {
                        Error::RankFailed { failures, local } => {
                            assert_eq!(failures, &want, "rank {}", r.rank);
                            assert_eq!(local.is_some(), r.rank == 1, "rank {}: only rank 1 has a local error", r.rank);
                            if let Some(local) = local {
                                assert!(matches!(**local, Error::LengthMismatch { what: "delta", .. }), "{local:?}");
                            }
                        }
                        other => panic!("rank {}: expected RankFailed, got {other:?}", r.rank),
                    }
                    assert!(err.to_string().contains("rank 1"), "{err}");
                    assert_eq!(r.sync.steps(), 2, "rank {}: the failed step does not count", r.rank);
                    assert_bitwise_eq(&format!("rank {} acc", r.rank), &r.acc(), &acc);
                    assert_bitwise_eq(&format!("rank {} theta", r.rank), &r.theta(), &theta);
                    for t in 3..=5 {
                        r.step_host(&updates.delta(r.rank, t, n))
                            .unwrap_or_else(|e| panic!("rank {} step {t}: {e}", r.rank));
                    }
                    assert_eq!(r.sync.steps(), 5);
                    r.theta()
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().expect("rank thread panicked")).collect()
    });
    for (rank, theta) in thetas.iter().enumerate().skip(1) {
        assert_bitwise_eq(&format!("rank {rank} vs rank 0"), theta, &thetas[0]);
    }
}

/// The grouped step given the wrong number of buckets on rank 2 only: every
/// rank fails that step naming rank 2 (no bucket), and the next step works.
pub fn wrong_bucket_count_on_one_rank_fails_every_rank<B: Backend>(backend: &Arc<B>) {
    let world = 3;
    let specs = &bucket_specs()[..2];
    let handles = LocalCollective::group(world, Duration::from_secs(30)).unwrap();
    thread::scope(|s| {
        for (rank, c) in handles.into_iter().enumerate() {
            let backend = Arc::clone(backend);
            s.spawn(move || {
                let mut group = SyncGroup::new(Arc::clone(&backend), c).unwrap();
                let mut params: Vec<B::Buffer> = Vec::new();
                let mut deltas: Vec<B::Buffer> = Vec::new();
                for (b, (n, config)) in specs.iter().enumerate() {
                    group.add_bucket(*n, config.clone()).unwrap();
                    let mut p = backend.alloc(*n).unwrap();
                    backend.upload(&initial_params(b as u64, *n, 1.0), p.borrow_mut()).unwrap();
                    params.push(p);
                    let mut d = backend.alloc(*n).unwrap();
                    backend.upload(&Synthetic::new(5).delta(rank, 1, *n), d.borrow_mut()).unwrap();
                    deltas.push(d);
                }
                let take = if rank == 2 { 1 } else { 2 };
                let mut inputs: Vec<BucketStep<'_, Arc<B>>> = deltas
                    .iter()
                    .zip(params.iter_mut())
                    .take(take)
                    .map(|(d, p)| BucketStep { delta: d.borrow(), params: p.borrow_mut() })
                    .collect();
                match group.step(&mut inputs) {
                    Err(Error::RankFailed { failures, .. }) => assert_eq!(
                        failures,
                        vec![RankFailure { rank: 2, bucket: None, cause: FailureCause::LengthMismatch }],
                        "rank {rank}"
                    ),
                    other => panic!("rank {rank}: expected RankFailed, got {other:?}"),
                }
                drop(inputs);
                assert_eq!(group.steps(), 0);
                let mut inputs: Vec<BucketStep<'_, Arc<B>>> = deltas
                    .iter()
                    .zip(params.iter_mut())
                    .map(|(d, p)| BucketStep { delta: d.borrow(), params: p.borrow_mut() })
                    .collect();
                let report = group.step(&mut inputs).unwrap_or_else(|e| panic!("rank {rank}: {e}"));
                assert_eq!(report.step, 1);
            });
        }
    });
}
