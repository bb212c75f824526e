//! One backend and one communicator behind several engines: two
//! `SparseSync` engines per rank share a `SharedCollective` and borrow one
//! `CpuBackend`, stepped one after the other as a DDP hook sees buckets.
//! They end bitwise equal to engines with a collective each.

use crate::common::{Synthetic, assert_bitwise_eq, initial_params};
use chronos_sync::{CpuBackend, LocalCollective, SharedCollective, SparseSync, SyncConfig};
use std::thread;
use std::time::Duration;

const WORLD: usize = 3;
const LENS: [usize; 2] = [4000, 777];
const STEPS: u64 = 12;

fn config() -> SyncConfig {
    SyncConfig::builder().threshold(0.02).warmup_steps(4).max_accumulation_steps(5).build().unwrap()
}

/// Every rank's final parameters per bucket, with each rank's two engines
/// on one shared collective (`shared`) or on one collective each.
fn run(backend: &CpuBackend, shared: bool) -> Vec<Vec<Vec<f32>>> {
    let timeout = Duration::from_secs(30);
    let mut groups: Vec<std::vec::IntoIter<LocalCollective>> = (0..if shared { 1 } else { LENS.len() })
        .map(|_| LocalCollective::group(WORLD, timeout).unwrap().into_iter())
        .collect();
    let per_rank: Vec<Vec<LocalCollective>> =
        (0..WORLD).map(|_| groups.iter_mut().map(|g| g.next().unwrap()).collect()).collect();
    thread::scope(|s| {
        let joins: Vec<_> = per_rank
            .into_iter()
            .enumerate()
            .map(|(rank, mut handles)| {
                s.spawn(move || {
                    let one = shared.then(|| SharedCollective::new(handles.remove(0)));
                    let mut engines = Vec::new();
                    for (b, &n) in LENS.iter().enumerate() {
                        let collective = match &one {
                            Some(c) => c.clone(),
                            None => SharedCollective::new(handles.remove(0)),
                        };
                        engines.push((
                            SparseSync::new(backend, collective, n, config()).unwrap(),
                            initial_params(b as u64, n, 1.0),
                        ));
                    }
                    for t in 1..=STEPS {
                        for (b, (sync, theta)) in engines.iter_mut().enumerate() {
                            let delta = Synthetic::new(40 + b as u64).delta(rank, t, theta.len());
                            sync.step(&delta, theta).unwrap_or_else(|e| panic!("rank {rank} bucket {b} step {t}: {e}"));
                        }
                    }
                    engines.into_iter().map(|(_, theta)| theta).collect()
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().expect("rank thread panicked")).collect()
    })
}

#[test]
fn engines_sharing_one_collective_match_engines_with_their_own() {
    let backend = CpuBackend::new();
    let shared = run(&backend, true);
    let separate = run(&backend, false);
    for rank in 0..WORLD {
        for b in 0..LENS.len() {
            assert_bitwise_eq(&format!("rank {rank} bucket {b}"), &shared[rank][b], &separate[rank][b]);
            assert_bitwise_eq(&format!("rank {rank} vs 0, bucket {b}"), &shared[rank][b], &shared[0][b]);
        }
    }
}
