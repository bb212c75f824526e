//! Checkpoint and restore: a job stopped at step k and restored into fresh
//! engines continues bitwise identically to one that never stopped.

use crate::common::{Synthetic, assert_bitwise_eq, initial_params};
use chronos_sync::{Backend, BucketStep, LocalCollective, Selection, SyncConfig, SyncGroup, WireDtype};
use std::borrow::{Borrow, BorrowMut};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const WORLD: usize = 4;

/// Two buckets; the second forces a sync every 4th step, so the restart
/// lands with residuals in both and a forced-sync clock mid-count.
fn specs() -> Vec<(usize, SyncConfig)> {
    vec![
        (20_000, SyncConfig::builder().threshold(0.01).warmup_steps(30).build().unwrap()),
        (
            70_001,
            SyncConfig::builder()
                .adaptive(false)
                .threshold(1e30)
                .max_threshold(1e30)
                .max_accumulation_steps(4)
                .selection(Selection::TopK { ratio: 0.01 })
                .wire_dtype(WireDtype::Bf16)
                .build()
                .unwrap(),
        ),
    ]
}

/// What a rank ends with: parameters and accumulators, per bucket.
type RankState = Vec<(Vec<f32>, Vec<f32>)>;

/// Runs steps `from..=to` on `WORLD` fresh ranks starting from `params` (per
/// rank, per bucket) and, when given, each rank's checkpoint; returns every
/// rank's state and checkpoint at the end.
fn run<B: Backend>(
    backend: &Arc<B>,
    from: u64,
    to: u64,
    params: Vec<Vec<Vec<f32>>>,
    checkpoints: Option<Vec<Vec<u8>>>,
) -> Vec<(RankState, Vec<u8>)> {
    let handles = LocalCollective::group(WORLD, Duration::from_secs(30)).unwrap();
    let specs = specs();
    let specs = &specs;
    let mut checkpoints = checkpoints.map(|c| c.into_iter());
    thread::scope(|s| {
        let joins: Vec<_> = handles
            .into_iter()
            .zip(params)
            .enumerate()
            .map(|(rank, (c, host_params))| {
                let backend = Arc::clone(backend);
                let checkpoint = checkpoints.as_mut().and_then(|c| c.next());
                s.spawn(move || {
                    let mut group = SyncGroup::new(Arc::clone(&backend), c).unwrap();
                    let mut params = Vec::new();
                    let mut deltas = Vec::new();
                    for ((n, config), host) in specs.iter().zip(&host_params) {
                        group.add_bucket(*n, config.clone()).unwrap();
                        let mut p = backend.alloc(*n).unwrap();
                        backend.upload(host, p.borrow_mut()).unwrap();
                        params.push(p);
                        deltas.push(backend.alloc(*n).unwrap());
                    }
                    if let Some(bytes) = checkpoint {
                        group.restore(&bytes).unwrap_or_else(|e| panic!("rank {rank}: restore: {e}"));
                        assert_eq!(group.steps(), from - 1, "rank {rank}: restored step count");
                    }
                    for t in from..=to {
                        for (b, (n, _)) in specs.iter().enumerate() {
                            let host = Synthetic::new(300 + b as u64).delta(rank, t, *n);
                            backend.upload(&host, deltas[b].borrow_mut()).unwrap();
                        }
                        let mut inputs: Vec<BucketStep<'_, Arc<B>>> = deltas
                            .iter()
                            .zip(params.iter_mut())
                            .map(|(d, p)| BucketStep { delta: d.borrow(), params: p.borrow_mut() })
                            .collect();
                        group.step(&mut inputs).unwrap_or_else(|e| panic!("rank {rank} step {t}: {e}"));
                    }
                    let state = specs
                        .iter()
                        .enumerate()
                        .map(|(b, (n, _))| {
                            let mut theta = vec![0.0; *n];
                            backend.download(params[b].borrow(), &mut theta).unwrap();
                            let mut acc = vec![0.0; *n];
                            group.read_accumulator(b, &mut acc).unwrap();
                            (theta, acc)
                        })
                        .collect();
                    (state, group.checkpoint().unwrap())
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().expect("rank thread panicked")).collect()
    })
}

/// 4 ranks, two buckets: 24 steps straight, against 11 steps, a checkpoint
/// of every rank, everything dropped, fresh engines and collectives
/// restored from the bytes, and 13 more steps. Parameters and accumulators
/// end bitwise equal on every rank and bucket, and so do the final
/// checkpoints (counters included).
pub fn checkpoint_restore_continues_bitwise<B: Backend>(backend: &Arc<B>) {
    let start: Vec<Vec<Vec<f32>>> = (0..WORLD)
        .map(|_| specs().iter().enumerate().map(|(b, (n, _))| initial_params(310 + b as u64, *n, 1.0)).collect())
        .collect();
    let straight = run(backend, 1, 24, start.clone(), None);
    let first = run(backend, 1, 11, start, None);
    let (params, checkpoints): (Vec<Vec<Vec<f32>>>, Vec<Vec<u8>>) =
        first.into_iter().map(|(state, ck)| (state.into_iter().map(|(theta, _)| theta).collect(), ck)).unzip();
    let resumed = run(backend, 12, 24, params, Some(checkpoints));
    for (rank, ((a, ck_a), (b, ck_b))) in straight.iter().zip(&resumed).enumerate() {
        for (bucket, ((ta, aa), (tb, ab))) in a.iter().zip(b).enumerate() {
            assert_bitwise_eq(&format!("rank {rank} bucket {bucket} theta"), ta, tb);
            assert_bitwise_eq(&format!("rank {rank} bucket {bucket} acc"), aa, ab);
        }
        assert!(ck_a == ck_b, "rank {rank}: final checkpoints differ");
    }
}
