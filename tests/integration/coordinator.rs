//! The coordinator: concurrency stress, staleness weights and rejections,
//! snapshot/restore continuation and corruption, continuum-memory retrieval
//! against a brute-force reference, outer optimizers against hand-computed
//! steps, backpressure and lease expiry.

use crate::common::fixed_proptest;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chronos_sync::coordinator::decay::{Exponential, Uniform};
use chronos_sync::coordinator::{
    CommitOutcome, CommitRequest, ContinuumMemory, Coordinator, CoordinatorConfig, Lease, MemoryConfig, Metric,
    OuterOptimizer, RejectReason, TimescaleGroup, similarity,
};
use chronos_sync::{CoordinatorError, Error};
use half::f16;
use proptest::prelude::*;

// ---------------------------------------------------------------- helpers

/// xorshift64*: a tiny deterministic generator for the stress workers.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// A fake hypergradient derived from the checked-out parameters.
fn fake_hypergradient(params: &[f32], salt: u64) -> Vec<f32> {
    params.iter().enumerate().map(|(i, p)| 0.5 * p + ((i as u64 + salt) % 7) as f32 * 0.01).collect()
}

fn request(commit_id: u64, hypergradient: Vec<f32>) -> CommitRequest {
    CommitRequest { commit_id, hypergradient, validation_loss: 1.0 + commit_id as f32 * 1e-3 }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Bitwise CRC-32 (IEEE), written independently of the crate's table version.
fn crc32_ref(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

fn is_coord_err(r: &Result<Coordinator, Error>, want: fn(&CoordinatorError) -> bool) -> bool {
    matches!(r, Err(Error::Coordinator(e)) if want(e))
}

// ---------------------------------------------------------------- stress

#[derive(Default)]
struct WorkerTally {
    ops: u64,
    accepted: Vec<(u64, u64)>,
    rejected: BTreeMap<String, u64>,
    deaths: u64,
    backpressure: u64,
    retries: u64,
}

#[test]
fn coordinator_stress_16_threads() {
    const THREADS: u64 = 16;
    const CYCLES: u64 = 400;
    const MAX_IN_FLIGHT: usize = 3;
    let config = CoordinatorConfig::builder()
        .max_in_flight(MAX_IN_FLIGHT)
        .max_staleness(2)
        .lease_ttl(Duration::from_millis(25))
        .checkout_timeout(Duration::from_millis(10))
        .min_commits(2)
        .optimizer(OuterOptimizer::Sgd { lr: 0.05, momentum: 0.5 })
        .audit_log(true)
        .build()
        .unwrap();
    let coord = Arc::new(Coordinator::new(vec![1.0; 32], config).unwrap());
    let violations = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|worker| {
            let coord = Arc::clone(&coord);
            let violations = Arc::clone(&violations);
            std::thread::spawn(move || {
                let mut rng = Rng::new(worker + 1);
                let mut t = WorkerTally::default();
                let check = |t: &mut WorkerTally| {
                    t.ops += 1;
                    let s = coord.stats();
                    if s.versions_in_flight > MAX_IN_FLIGHT || s.max_versions_in_flight > MAX_IN_FLIGHT {
                        violations.fetch_add(1, Ordering::Relaxed);
                    }
                };
                for cycle in 0..CYCLES {
                    let lease = match coord.checkout(worker) {
                        Ok(l) => l,
                        Err(Error::Coordinator(CoordinatorError::Backpressure { .. })) => {
                            t.backpressure += 1;
                            continue;
                        }
                        Err(e) => panic!("checkout: {e}"),
                    };
                    check(&mut t);
                    if rng.chance(4) {
                        // Death: go silent past the TTL; half never come back.
                        t.deaths += 1;
                        std::thread::sleep(Duration::from_millis(30 + rng.below(10)));
                        if rng.chance(50) {
                            continue;
                        }
                    } else {
                        for _ in 0..rng.below(3) {
                            std::thread::sleep(Duration::from_micros(rng.below(1500)));
                            match coord.heartbeat(&lease) {
                                Ok(()) | Err(Error::Coordinator(CoordinatorError::LeaseExpired { .. })) => {}
                                Err(e) => panic!("heartbeat: {e}"),
                            }
                            check(&mut t);
                        }
                    }
                    if rng.chance(3) {
                        let _ = coord.release(&lease);
                        check(&mut t);
                        continue;
                    }
                    let req = request(cycle, fake_hypergradient(&lease.params, worker));
                    let first = coord.commit(&lease, req.clone()).expect("commit");
                    check(&mut t);
                    if rng.chance(15) {
                        t.retries += 1;
                        let again = coord.commit(&lease, req).expect("retry");
                        check(&mut t);
                        assert_eq!(again, first, "a retried commit must get its first answer");
                    }
                    match first {
                        CommitOutcome::Accepted { .. } => t.accepted.push((worker, cycle)),
                        CommitOutcome::Rejected { reason, .. } => {
                            *t.rejected.entry(format!("{reason:?}")).or_insert(0) += 1
                        }
                    }
                    if rng.chance(30) {
                        let _ = coord.wait_for_version(lease.version, Duration::from_millis(2));
                        check(&mut t);
                    }
                }
                t
            })
        })
        .collect();
    let tallies: Vec<WorkerTally> = handles.into_iter().map(|h| h.join().expect("worker panicked")).collect();
    let wall = start.elapsed();

    assert_eq!(violations.load(Ordering::Relaxed), 0, "more than max_in_flight versions were out");
    let stats = coord.stats();
    assert!(stats.max_versions_in_flight <= MAX_IN_FLIGHT);
    let accepted: Vec<(u64, u64)> = tallies.iter().flat_map(|t| t.accepted.iter().copied()).collect();
    let accepted_set: HashSet<(u64, u64)> = accepted.iter().copied().collect();
    assert_eq!(accepted.len(), accepted_set.len());
    // No commit applied twice, none applied that was not accepted, none lost.
    let log = coord.applied_log();
    let mut applied: HashSet<(u64, u64)> = HashSet::new();
    for a in &log {
        assert!(applied.insert((a.worker, a.commit_id)), "commit {a:?} applied twice");
        assert!(accepted_set.contains(&(a.worker, a.commit_id)), "applied but never accepted: {a:?}");
    }
    let pending = coord.pending_commits();
    for p in &pending {
        assert!(!applied.contains(p) && accepted_set.contains(p));
    }
    assert_eq!(applied.len() + pending.len(), accepted_set.len(), "an accepted commit was lost");
    // Every outer step applied exactly min_commits (= 2) commits.
    let mut per_step: BTreeMap<u64, usize> = BTreeMap::new();
    for a in &log {
        *per_step.entry(a.applied_in).or_insert(0) += 1;
    }
    assert!(per_step.values().all(|&c| c == 2));
    assert_eq!(per_step.len() as u64, stats.outer_steps);
    assert_eq!(stats.version, stats.outer_steps);
    assert_eq!(stats.accepted, accepted.len() as u64);
    let rejected: u64 = tallies.iter().flat_map(|t| t.rejected.values()).sum();
    assert_eq!(stats.rejected(), rejected);
    assert!(coord.outer_params().iter().all(|x| x.is_finite()));

    let ops: u64 = tallies.iter().map(|t| t.ops).sum();
    let deaths: u64 = tallies.iter().map(|t| t.deaths).sum();
    let retries: u64 = tallies.iter().map(|t| t.retries).sum();
    let backpressure: u64 = tallies.iter().map(|t| t.backpressure).sum();
    assert_eq!(stats.backpressure_timeouts, backpressure);
    assert_eq!(stats.duplicate_commits, retries);
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for t in &tallies {
        for (k, v) in &t.rejected {
            *reasons.entry(k.clone()).or_insert(0) += v;
        }
    }
    eprintln!(
        "coordinator stress: {THREADS} threads, {ops} coordinator calls checked, {} checkouts, {} accepted, \
         {} rejected {reasons:?}, {} expirations ({deaths} simulated deaths), {retries} retries answered from \
         cache ({} duplicates), {} releases, {backpressure} backpressure timeouts, {} outer steps, \
         max versions in flight {}, staleness histogram {:?}, wall {:.2?}",
        stats.checkouts,
        stats.accepted,
        stats.rejected(),
        stats.expirations,
        stats.duplicate_commits,
        stats.releases,
        stats.outer_steps,
        stats.max_versions_in_flight,
        stats.staleness_histogram,
        wall
    );
    assert!(stats.expirations > 0, "the simulated deaths must expire leases");
    assert!(stats.accepted > 0 && stats.outer_steps > 0);
}

// ---------------------------------------------------------------- weights and rejections

/// Checks out a lease at the current version, then publishes `advance`
/// versions through another worker, then returns the lease's commit answer.
fn commit_with_staleness(coord: &Coordinator, advance: u64, id: u64) -> CommitOutcome {
    let lease = coord.checkout(0).unwrap();
    for i in 0..advance {
        let l = coord.checkout(1).unwrap();
        let out = coord.commit(&l, request(id * 100 + i, vec![0.0; 2])).unwrap();
        assert!(matches!(out, CommitOutcome::Accepted { published: Some(_), .. }));
    }
    coord.commit(&lease, request(id, vec![1.0, -1.0])).unwrap()
}

proptest! {
    #![proptest_config(fixed_proptest(48))]

    #[test]
    fn coordinator_staleness_weights_and_rejections(
        max_staleness in 0u64..4,
        base in 0.05f64..1.0,
        advances in proptest::collection::vec(0u64..6, 1..8),
    ) {
        let config = CoordinatorConfig::builder()
            .max_staleness(max_staleness)
            .decay(Exponential { base })
            .build()
            .unwrap();
        let coord = Coordinator::new(vec![0.5, 0.5], config).unwrap();
        for (id, &s) in advances.iter().enumerate() {
            let out = commit_with_staleness(&coord, s, id as u64);
            if s > max_staleness {
                prop_assert_eq!(out, CommitOutcome::Rejected { staleness: s, reason: RejectReason::TooStale { max_staleness } });
            } else {
                match out {
                    CommitOutcome::Accepted { weight, staleness, published } => {
                        prop_assert_eq!(staleness, s);
                        prop_assert_eq!(weight.to_bits(), base.powi(s as i32).to_bits());
                        prop_assert!(published.is_some());
                    }
                    other => prop_assert!(false, "expected acceptance, got {:?}", other),
                }
            }
        }
        let stats = coord.stats();
        let stale = advances.iter().filter(|&&s| s > max_staleness).count() as u64;
        prop_assert_eq!(stats.rejected_too_stale, stale);
        prop_assert_eq!(stats.versions_in_flight, 0);
    }

    /// With min_commits = k, the outer step applies the weighted mean of the
    /// k hypergradients (plain SGD, lr 1): params -= sum w h / sum w.
    #[test]
    fn coordinator_weighted_mean_step(
        grads in proptest::collection::vec(-4.0f32..4.0, 2..6),
        stale_mask in proptest::collection::vec(any::<bool>(), 6),
    ) {
        let k = grads.len();
        let config = CoordinatorConfig::builder()
            .min_commits(k)
            .max_in_flight(2)
            .optimizer(OuterOptimizer::Sgd { lr: 1.0, momentum: 0.0 })
            .build()
            .unwrap();
        let coord = Coordinator::new(vec![0.0], config).unwrap();
        // Stale leases (version 0) are taken before the first round closes.
        let old: Vec<Lease> = (0..k).map(|w| coord.checkout(w as u64).unwrap()).collect();
        let warm: Vec<Lease> = (0..k).map(|w| coord.checkout(100 + w as u64).unwrap()).collect();
        for (i, l) in warm.iter().enumerate() {
            coord.commit(l, request(i as u64, vec![0.0])).unwrap();
        }
        prop_assert_eq!(coord.current_version(), 1);
        let mut num = 0.0f64;
        let mut den = 0.0f64;
        for (i, &g) in grads.iter().enumerate() {
            let lease = if stale_mask[i] { old[i].clone() } else { coord.checkout(200 + i as u64).unwrap() };
            let out = coord.commit(&lease, request(1000 + i as u64, vec![g])).unwrap();
            let CommitOutcome::Accepted { weight, staleness, .. } = out else {
                return Err(TestCaseError::fail(format!("rejected: {out:?}")));
            };
            prop_assert_eq!(staleness, stale_mask[i] as u64);
            num += weight * g as f64;
            den += weight;
        }
        prop_assert_eq!(coord.current_version(), 2);
        let want = -((num / den) as f32);
        prop_assert_eq!(coord.outer_params()[0].to_bits(), want.to_bits());
    }
}

// ---------------------------------------------------------------- snapshot

fn rich_config() -> CoordinatorConfig {
    CoordinatorConfig::builder()
        .min_commits(3)
        .max_in_flight(3)
        .optimizer(OuterOptimizer::Adam { lr: 0.05, beta1: 0.8, beta2: 0.99, eps: 1e-6 })
        .timescale(TimescaleGroup { range: 2..5, every: 3, lr: 0.02, momentum: 0.5, warmup: 2 })
        .timescale(TimescaleGroup { range: 8..12, every: 2, lr: 0.1, momentum: 0.9, warmup: 0 })
        .warmup(3)
        .memory(MemoryConfig { capacity: 6, compress_after: 3, recency_decay: 0.1 })
        .audit_log(true)
        .lease_ttl(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A deterministic script of checkouts and commits; `leases` carries leases
/// across calls (some stay out to be committed stale later).
fn drive(coord: &Coordinator, rounds: u64, seed: u64, leases: &mut Vec<Lease>) {
    let mut rng = Rng::new(seed);
    for r in 0..rounds {
        let worker = rng.below(5);
        if let Ok(l) = coord.checkout_timeout(worker, Duration::from_millis(1)) {
            leases.push(l);
        }
        if leases.len() > 2 || rng.chance(50) {
            if leases.is_empty() {
                continue;
            }
            let i = rng.below(leases.len() as u64) as usize;
            let l = leases.remove(i);
            let mut g = fake_hypergradient(&l.params, seed + r);
            g.iter_mut().for_each(|x| *x += rng.unit());
            let id = seed * 10_000 + r;
            coord.commit(&l, request(id, g.clone())).unwrap();
            if rng.chance(20) {
                coord.commit(&l, request(id, g)).unwrap();
            }
        }
    }
}

/// Runs `first` scripted rounds, snapshots, restores, then runs the same
/// `second` rounds on both and checks they stay bitwise identical. Returns
/// whether the snapshot caught work in flight (pending commits or leases),
/// the final version and the memory size.
fn check_continuation(seed: u64, first: u64, second: u64) -> (bool, u64, usize) {
    let initial: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37 + seed as f32).sin()).collect();
    let a = Coordinator::new(initial, rich_config()).unwrap();
    let mut leases_a = Vec::new();
    drive(&a, first, seed, &mut leases_a);
    let in_flight = !a.pending_commits().is_empty() || !leases_a.is_empty();
    let bytes = a.snapshot();
    let b = Coordinator::restore(&bytes, rich_config()).unwrap();
    assert_eq!(b.snapshot().len(), bytes.len());
    assert_eq!(b.stats(), a.stats());
    let mut leases_b = leases_a.clone();
    drive(&a, second, seed + 1, &mut leases_a);
    drive(&b, second, seed + 1, &mut leases_b);
    // Commit whatever is still out so both end with no active lease.
    for (i, (la, lb)) in leases_a.iter().zip(&leases_b).enumerate() {
        let g = fake_hypergradient(&la.params, 99);
        let ra = a.commit(la, request(900_000 + i as u64, g.clone())).unwrap();
        let rb = b.commit(lb, request(900_000 + i as u64, g)).unwrap();
        assert_eq!(ra, rb);
    }
    assert_eq!(bits(&a.outer_params()), bits(&b.outer_params()));
    assert_eq!(a.stats(), b.stats());
    assert_eq!(a.applied_log(), b.applied_log());
    assert_eq!(a.pending_commits(), b.pending_commits());
    assert_eq!(a.timescale_status(), b.timescale_status());
    let q = a.outer_params();
    assert_eq!(a.retrieve(&q, 4, Metric::Cosine).unwrap(), b.retrieve(&q, 4, Metric::Cosine).unwrap());
    // No lease is out, so the snapshots hold no clock reading: identical bytes.
    assert_eq!(a.snapshot(), b.snapshot());
    (in_flight, a.current_version(), a.stats().memory_entries)
}

#[test]
fn coordinator_snapshot_restore_continues_bitwise() {
    let (in_flight, version, memory) = check_continuation(1, 40, 60);
    assert!(in_flight, "the snapshot should catch work in flight");
    assert!(version > 10, "version {version}");
    assert_eq!(memory, 6, "memory fills to its capacity");
}

proptest! {
    #![proptest_config(fixed_proptest(24))]

    #[test]
    fn coordinator_snapshot_restore_any_split(seed in 0u64..10_000, first in 0u64..50, second in 1u64..50) {
        check_continuation(seed, first, second);
    }
}

#[test]
fn coordinator_snapshot_rejects_corruption_without_panicking() {
    let a = Coordinator::new(vec![0.25; 12], rich_config()).unwrap();
    let mut leases = Vec::new();
    drive(&a, 30, 7, &mut leases);
    let bytes = a.snapshot();
    let corrupt =
        |r: &Result<Coordinator, Error>| is_coord_err(r, |e| matches!(e, CoordinatorError::CorruptSnapshot { .. }));
    for len in 0..bytes.len() {
        assert!(corrupt(&Coordinator::restore(&bytes[..len], rich_config())), "truncated to {len}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(corrupt(&Coordinator::restore(&longer, rich_config())));
    for pos in 0..bytes.len() {
        let mut b = bytes.clone();
        b[pos] ^= 1 << (pos % 8);
        assert!(corrupt(&Coordinator::restore(&b, rich_config())), "flip at {pos}");
    }
    // A different structure is a mismatch, not corruption.
    let sgd = CoordinatorConfig { optimizer: OuterOptimizer::default(), ..rich_config() };
    let r = Coordinator::restore(&bytes, sgd);
    assert!(is_coord_err(&r, |e| matches!(e, CoordinatorError::SnapshotMismatch { .. })));
    let flat = CoordinatorConfig { timescales: Vec::new(), ..rich_config() };
    let r = Coordinator::restore(&bytes, flat);
    assert!(is_coord_err(&r, |e| matches!(e, CoordinatorError::SnapshotMismatch { .. })));
}

proptest! {
    #![proptest_config(fixed_proptest(256))]

    /// Mutations with a recomputed (valid) checksum reach the body decoder:
    /// it must answer with an error or a coordinator, never panic.
    #[test]
    fn coordinator_snapshot_decoder_is_total(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let a = Coordinator::new(vec![0.5; 4], rich_config_small()).unwrap();
        let mut leases = Vec::new();
        drive(&a, 12, 3, &mut leases);
        let mut b = a.snapshot();
        let body = b.len() - 4;
        for (idx, byte) in edits {
            let i = 24 + idx.index(body - 24);
            b[i] = byte;
        }
        let crc = crc32_ref(&b[..body]);
        b[body..].copy_from_slice(&crc.to_le_bytes());
        let _ = Coordinator::restore(&b, rich_config_small());
    }
}

fn rich_config_small() -> CoordinatorConfig {
    CoordinatorConfig {
        timescales: vec![TimescaleGroup { range: 1..3, every: 2, lr: 0.1, momentum: 0.5, warmup: 1 }],
        ..rich_config()
    }
}

// ---------------------------------------------------------------- memory

/// What the memory should hold: every inserted entry (values rounded to f16
/// once compressed), minus the evicted.
fn reference_scores(
    entries: &[(u64, Vec<f32>, Vec<f32>)],
    cfg: MemoryConfig,
    query: &[f32],
    metric: Metric,
) -> Vec<(u64, f64, Vec<f32>)> {
    let newest = entries.iter().map(|e| e.0).max().unwrap_or(0);
    let mut kept: Vec<&(u64, Vec<f32>, Vec<f32>)> = entries.iter().collect();
    while kept.len() > cfg.capacity {
        let (i, _) = kept.iter().enumerate().min_by_key(|(_, e)| e.0).unwrap();
        kept.remove(i);
    }
    let round = |v: &[f32], step: u64| -> Vec<f32> {
        if step + cfg.compress_after < newest {
            v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
        } else {
            v.to_vec()
        }
    };
    let mut scored: Vec<(u64, f64, Vec<f32>)> = kept
        .iter()
        .map(|(step, p, g)| {
            let p = round(p, *step);
            // Independent similarity formulas.
            let sim = match metric {
                Metric::Cosine => {
                    let dot: f64 = p.iter().zip(query).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let np = p.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
                    let nq = query.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
                    let cos = if np == 0.0 || nq == 0.0 { 0.0 } else { (dot / (np * nq)).clamp(-1.0, 1.0) };
                    0.5 * (cos + 1.0)
                }
                _ => {
                    let d = p.iter().zip(query).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>().sqrt();
                    1.0 / (d + 1.0)
                }
            };
            let score = sim * (-cfg.recency_decay * (newest - step) as f64).exp();
            (*step, score, round(g, *step))
        })
        .collect();
    scored.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(b.0.cmp(&a.0)));
    scored
}

proptest! {
    #![proptest_config(fixed_proptest(128))]

    #[test]
    fn coordinator_memory_retrieval_matches_brute_force(
        raw in proptest::collection::vec((proptest::collection::vec(-8.0f32..8.0, 4), proptest::collection::vec(-2.0f32..2.0, 4)), 1..24),
        query in proptest::collection::vec(-8.0f32..8.0, 4),
        capacity in 1usize..16,
        compress_after in 0u64..8,
        recency_decay in 0.0f64..0.5,
        k in 1usize..10,
        cosine in any::<bool>(),
    ) {
        let cfg = MemoryConfig { capacity, compress_after, recency_decay };
        let metric = if cosine { Metric::Cosine } else { Metric::Euclidean };
        let mut mem = ContinuumMemory::new(4, cfg);
        // Steps are distinct (shuffled a little) so the order is unambiguous.
        let entries: Vec<(u64, Vec<f32>, Vec<f32>)> =
            raw.into_iter().enumerate().map(|(i, (p, g))| ((i as u64 * 7) % 29 + i as u64 * 29, p, g)).collect();
        for (step, p, g) in &entries {
            mem.insert(p, g, 0.5, *step).unwrap();
        }
        let got = mem.retrieve(&query, k, metric).unwrap();
        let want = reference_scores(&entries, cfg, &query, metric);
        prop_assert_eq!(got.len(), k.min(want.len()));
        for (g, w) in got.iter().zip(&want) {
            prop_assert_eq!(g.step, w.0);
            prop_assert!((g.score - w.1).abs() <= 1e-12 * w.1.abs().max(1.0), "{} vs {}", g.score, w.1);
            prop_assert_eq!(bits(&g.hypergradient), bits(&w.2));
            prop_assert!((g.similarity - similarity(&query, &g.params, metric)).abs() < 1e-15);
        }
        // Prediction = score-weighted mean of the top k.
        let top = &want[..got.len()];
        let total: f64 = top.iter().map(|w| w.1).sum();
        let pred = mem.predict_hypergradient(&query, k, metric).unwrap();
        if total > 0.0 {
            let pred = pred.unwrap();
            for (j, &pj) in pred.iter().enumerate() {
                let r = top.iter().map(|w| w.1 * w.2[j] as f64).sum::<f64>() / total;
                prop_assert!((pj as f64 - r).abs() <= 1e-5 * r.abs().max(1.0));
            }
        } else {
            prop_assert!(pred.is_none());
        }
    }
}

#[test]
fn coordinator_memory_records_outer_rounds() {
    let config = CoordinatorConfig::builder()
        .memory(MemoryConfig { capacity: 4, compress_after: 1, recency_decay: 0.0 })
        .optimizer(OuterOptimizer::Sgd { lr: 0.1, momentum: 0.0 })
        .build()
        .unwrap();
    let coord = Coordinator::new(vec![1.0, 0.0], config).unwrap();
    for i in 0..6u64 {
        let l = coord.checkout(0).unwrap();
        coord.commit(&l, request(i, vec![1.0, -(i as f32)])).unwrap();
    }
    let s = coord.stats();
    assert_eq!(s.memory_entries, 4);
    let got = coord.retrieve(&[1.0, 0.0], 10, Metric::Euclidean).unwrap();
    let mut steps: Vec<u64> = got.iter().map(|r| r.step).collect();
    steps.sort();
    assert_eq!(steps, vec![2, 3, 4, 5], "oldest rounds evicted");
    let newest = got.iter().find(|r| r.step == 5).unwrap();
    assert_eq!(newest.hypergradient, vec![1.0, -5.0]);
    assert!(!newest.compressed);
    assert!(got.iter().find(|r| r.step == 2).unwrap().compressed);
    let pred = coord.predict_hypergradient(&[1.0, 0.0], 1, Metric::Euclidean).unwrap().unwrap();
    assert_eq!(pred[0], 1.0);
    assert!(matches!(
        coord.retrieve(&[1.0], 1, Metric::Cosine),
        Err(Error::Coordinator(CoordinatorError::ShapeMismatch { expected: 2, actual: 1 }))
    ));
}

// ---------------------------------------------------------------- optimizers

fn one_step_each(opt: OuterOptimizer, start: f32, grads: &[f32]) -> Vec<f32> {
    let config = CoordinatorConfig::builder().optimizer(opt).build().unwrap();
    let coord = Coordinator::new(vec![start], config).unwrap();
    grads
        .iter()
        .enumerate()
        .map(|(i, &g)| {
            let l = coord.checkout(0).unwrap();
            coord.commit(&l, request(i as u64, vec![g])).unwrap();
            coord.outer_params()[0]
        })
        .collect()
}

#[test]
fn coordinator_sgd_momentum_against_hand_computation() {
    // lr 0.1, momentum 0.9, grads 1, 2, -1 from 1.0:
    // m = 1 -> p = 0.9; m = 0.9 + 2 = 2.9 -> p = 0.61; m = 2.61 - 1 = 1.61 -> p = 0.449.
    let got = one_step_each(OuterOptimizer::Sgd { lr: 0.1, momentum: 0.9 }, 1.0, &[1.0, 2.0, -1.0]);
    let want = [0.9f64, 0.61, 0.449];
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1e-6, "{got:?}");
    }
}

#[test]
fn coordinator_adam_against_hand_computation() {
    let (lr, b1, b2, eps) = (0.01f64, 0.9f64, 0.999f64, 1e-8f64);
    let grads = [0.5f32, -0.25, 1.0, 0.0];
    let got = one_step_each(
        OuterOptimizer::Adam { lr: lr as f32, beta1: b1 as f32, beta2: b2 as f32, eps: eps as f32 },
        2.0,
        &grads,
    );
    let (mut p, mut m, mut v) = (2.0f64, 0.0f64, 0.0f64);
    for (t, (&g, &out)) in grads.iter().zip(&got).enumerate() {
        let g = g as f64;
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        let t = t as i32 + 1;
        p -= lr * (m / (1.0 - b1.powi(t))) / ((v / (1.0 - b2.powi(t))).sqrt() + eps);
        assert!((out as f64 - p).abs() < 1e-5, "step {t}: {out} vs {p}");
    }
}

#[test]
fn coordinator_timescale_groups_update_on_their_own_period() {
    let config = CoordinatorConfig::builder()
        .optimizer(OuterOptimizer::Sgd { lr: 1.0, momentum: 0.0 })
        .timescale(TimescaleGroup { range: 1..2, every: 3, lr: 0.5, momentum: 0.0, warmup: 0 })
        .decay(Uniform)
        .build()
        .unwrap();
    let coord = Coordinator::new(vec![0.0, 0.0, 0.0], config).unwrap();
    let mut trace = Vec::new();
    for (i, g) in [1.0f32, 2.0, 6.0, 1.0].into_iter().enumerate() {
        let l = coord.checkout(0).unwrap();
        coord.commit(&l, request(i as u64, vec![g; 3])).unwrap();
        trace.push(coord.outer_params().to_vec());
    }
    // The slow group waits 3 rounds, then applies 0.5 * mean(1, 2, 6) = 1.5.
    assert_eq!(trace[0], vec![-1.0, 0.0, -1.0]);
    assert_eq!(trace[1], vec![-3.0, 0.0, -3.0]);
    assert_eq!(trace[2], vec![-9.0, -1.5, -9.0]);
    assert_eq!(trace[3], vec![-10.0, -1.5, -10.0]);
    let status = coord.timescale_status();
    assert_eq!(status[1].updates, 1);
    assert_eq!(status[1].pending_rounds, 1);
}

// ---------------------------------------------------------------- backpressure and leases

#[test]
fn coordinator_backpressure_release_and_expiry() {
    let config = CoordinatorConfig::builder()
        .max_in_flight(1)
        .lease_ttl(Duration::from_millis(300))
        .checkout_timeout(Duration::from_millis(40))
        .build()
        .unwrap();
    let coord = Arc::new(Coordinator::new(vec![0.0; 2], config).unwrap());
    let a = coord.checkout(1).unwrap();
    let b = coord.checkout(2).unwrap(); // same version: no new slot needed
    coord.commit(&a, request(0, vec![0.1, 0.1])).unwrap();
    assert_eq!(coord.current_version(), 1);
    // Version 0 is still out (b), so version 1 cannot be handed out.
    let t = Instant::now();
    let r = coord.checkout(3);
    assert!(matches!(r, Err(Error::Coordinator(CoordinatorError::Backpressure { in_flight: 1, max: 1, .. }))), "{r:?}");
    assert!(t.elapsed() >= Duration::from_millis(40));
    coord.release(&b).unwrap();
    let c = coord.checkout(3).unwrap();
    assert_eq!(c.version, 1);
    // A silent lease frees its slot by expiry while a checkout waits.
    coord.commit(&c, request(0, vec![0.1, 0.1])).unwrap();
    let silent = coord.checkout(4).unwrap();
    coord.commit(&coord.checkout(5).unwrap(), request(0, vec![0.1, 0.1])).unwrap();
    let t = Instant::now();
    let d = coord.checkout_timeout(6, Duration::from_secs(5)).unwrap();
    assert!(t.elapsed() < Duration::from_secs(4));
    assert_eq!(d.version, 3);
    let late = coord.commit(&silent, request(1, vec![0.1, 0.1])).unwrap();
    assert!(matches!(late, CommitOutcome::Rejected { reason: RejectReason::LeaseExpired, .. }));
    assert!(matches!(coord.heartbeat(&silent), Err(Error::Coordinator(CoordinatorError::LeaseExpired { .. }))));
    let s = coord.stats();
    assert_eq!((s.expirations, s.releases, s.backpressure_timeouts, s.rejected_expired), (1, 1, 1, 1));
    // Heartbeats keep a lease alive past its TTL.
    let kept = coord.checkout(6).unwrap();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(60));
        coord.heartbeat(&kept).unwrap();
    }
    assert!(coord.commit(&kept, request(2, vec![0.0, 0.0])).unwrap().is_accepted());
}

#[test]
fn coordinator_wait_for_version_wakes_and_times_out() {
    let coord = Arc::new(Coordinator::new(vec![1.0], CoordinatorConfig::default()).unwrap());
    let r = coord.wait_for_version(0, Duration::from_millis(20));
    assert!(matches!(r, Err(Error::Coordinator(CoordinatorError::WaitTimeout { version: 0, .. }))));
    let waiter = {
        let coord = Arc::clone(&coord);
        std::thread::spawn(move || coord.wait_for_version(0, Duration::from_secs(10)))
    };
    std::thread::sleep(Duration::from_millis(20));
    let l = coord.checkout(0).unwrap();
    coord.commit(&l, request(0, vec![1.0])).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), 1);
    assert_eq!(coord.wait_for_version(0, Duration::from_millis(1)).unwrap(), 1);
}

#[test]
fn coordinator_rejects_bad_construction() {
    let field = |r: Result<Coordinator, Error>| match r {
        Err(Error::InvalidConfig { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(Coordinator::new(vec![], CoordinatorConfig::default())), "initial_outer_params");
    assert_eq!(field(Coordinator::new(vec![f32::NAN], CoordinatorConfig::default())), "initial_outer_params");
    let wide = CoordinatorConfig {
        timescales: vec![TimescaleGroup { range: 0..4, every: 1, lr: 0.1, momentum: 0.0, warmup: 0 }],
        ..CoordinatorConfig::default()
    };
    assert_eq!(field(Coordinator::new(vec![0.0; 3], wide)), "timescales.range");
    let bad = CoordinatorConfig { max_in_flight: 0, ..CoordinatorConfig::default() };
    assert_eq!(field(Coordinator::new(vec![0.0], bad)), "max_in_flight");
}

#[test]
fn coordinator_retries_survive_a_restore() {
    let coord = Coordinator::new(vec![1.0, 1.0], CoordinatorConfig::default()).unwrap();
    let l = coord.checkout(9).unwrap();
    let first = coord.commit(&l, request(42, vec![1.0, 1.0])).unwrap();
    let restored = Coordinator::restore(&coord.snapshot(), CoordinatorConfig::default()).unwrap();
    let params = restored.outer_params();
    assert_eq!(restored.commit(&l, request(42, vec![5.0, 5.0])).unwrap(), first);
    assert_eq!(bits(&restored.outer_params()), bits(&params));
    assert_eq!(restored.stats().duplicate_commits, 1);
}

#[test]
fn coordinator_restored_leases_keep_their_remaining_ttl() {
    let config = || CoordinatorConfig::builder().lease_ttl(Duration::from_millis(1000)).build().unwrap();
    let coord = Coordinator::new(vec![0.0; 3], config()).unwrap();
    let idle = coord.checkout(1).unwrap();
    let fresh = coord.checkout(2).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    coord.heartbeat(&fresh).unwrap();
    let restored = Coordinator::restore(&coord.snapshot(), config()).unwrap();
    assert_eq!(restored.stats().active_leases, 2);
    std::thread::sleep(Duration::from_millis(500));
    // `idle` has been silent ~1.1 s across the restore, `fresh` ~0.5 s.
    restored.heartbeat(&fresh).unwrap();
    let late = restored.commit(&idle, request(0, vec![1.0; 3])).unwrap();
    assert!(matches!(late, CommitOutcome::Rejected { reason: RejectReason::LeaseExpired, .. }));
    assert!(restored.commit(&fresh, request(0, vec![1.0; 3])).unwrap().is_accepted());
    // Lease ids continue where the old coordinator stopped.
    assert!(restored.checkout(3).unwrap().id > fresh.id);
}
