//! Model-based property test of the commit rules: random scripts of
//! checkouts, heartbeats, releases, commits, retries and clock advances run
//! against the meta-state and against a few lines of reference logic written
//! from the spec; every answer must agree.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::commit::{CommitOutcome, CommitRequest, RejectReason};
use super::config::{CoordinatorConfig, OuterOptimizer};
use super::decay::Exponential;
use super::lease::Lease;
use super::store::MetaState;

#[derive(Debug, Clone)]
enum Op {
    Checkout(u64),
    Heartbeat(usize),
    Release(usize),
    Commit(usize, u64),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..4).prop_map(Op::Checkout),
        2 => any::<usize>().prop_map(Op::Heartbeat),
        1 => any::<usize>().prop_map(Op::Release),
        4 => (any::<usize>(), 0u64..6).prop_map(|(l, id)| Op::Commit(l, id)),
        2 => (0u64..8).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ModelLease {
    Active { last: u64 },
    Expired,
    Released,
    Committed,
}

/// The reference: the spec's rules on plain data, time in milliseconds.
struct Model {
    version: u64,
    pending: usize,
    leases: Vec<(Lease, ModelLease)>,
    answers: HashMap<(u64, u64), CommitOutcome>,
}

impl Model {
    fn expire(&mut self, now: u64, ttl: u64) {
        for (_, st) in &mut self.leases {
            if let ModelLease::Active { last } = *st {
                if now - last >= ttl {
                    *st = ModelLease::Expired;
                }
            }
        }
    }

    fn versions_out(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, s)| matches!(s, ModelLease::Active { .. }))
            .map(|(l, _)| l.version)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

proptest! {
    #![proptest_config(crate::testing::fixed_proptest(200))]

    #[test]
    fn commit_rules_match_the_reference(
        ops in proptest::collection::vec(op(), 1..80),
        max_in_flight in 1usize..4,
        max_staleness in 0u64..3,
        min_commits in 1usize..3,
    ) {
        const TTL: u64 = 10;
        let config = CoordinatorConfig {
            max_in_flight,
            max_staleness,
            min_commits,
            decay: std::sync::Arc::new(Exponential { base: 0.5 }),
            lease_ttl: Duration::from_millis(TTL),
            optimizer: OuterOptimizer::Sgd { lr: 0.1, momentum: 0.5 },
            ..CoordinatorConfig::default()
        };
        let t0 = Instant::now();
        let mut now = 0u64;
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = MetaState::new(vec![1.0, 2.0], &config);
        let mut m = Model { version: 0, pending: 0, leases: Vec::new(), answers: HashMap::new() };
        for op in ops {
            s.expire(at(now), &config);
            m.expire(now, TTL);
            match op {
                Op::Advance(ms) => now += ms,
                Op::Checkout(worker) => {
                    let out = m.versions_out();
                    let admit = out.contains(&m.version) || out.len() < max_in_flight;
                    let got = s.try_checkout(worker, at(now), &config);
                    prop_assert_eq!(got.is_some(), admit);
                    if let Some(l) = got {
                        prop_assert_eq!(l.version, m.version);
                        m.leases.push((l, ModelLease::Active { last: now }));
                    }
                }
                Op::Heartbeat(i) if !m.leases.is_empty() => {
                    let i = i % m.leases.len();
                    let r = s.heartbeat(&m.leases[i].0, at(now));
                    match &mut m.leases[i].1 {
                        ModelLease::Active { last } => {
                            prop_assert!(r.is_ok());
                            *last = now;
                        }
                        _ => prop_assert!(r.is_err()),
                    }
                }
                Op::Release(i) if !m.leases.is_empty() => {
                    let i = i % m.leases.len();
                    let r = s.release(&m.leases[i].0);
                    let st = &mut m.leases[i].1;
                    prop_assert_eq!(r.is_ok(), matches!(st, ModelLease::Active { .. }));
                    if r.is_ok() {
                        *st = ModelLease::Released;
                    }
                }
                Op::Commit(i, id) if !m.leases.is_empty() => {
                    let i = i % m.leases.len();
                    let lease = m.leases[i].0.clone();
                    let req = CommitRequest { commit_id: id, hypergradient: vec![0.5, -0.25], validation_loss: 1.0 };
                    let got = s.commit(&lease, req, &config).expect("well-formed commit");
                    let key = (lease.worker, id);
                    let staleness = m.version - lease.version;
                    let want = if let Some(&first) = m.answers.get(&key) {
                        first
                    } else {
                        let st = m.leases[i].1;
                        let reject = |reason| CommitOutcome::Rejected { staleness, reason };
                        let want = match st {
                            ModelLease::Expired => reject(RejectReason::LeaseExpired),
                            ModelLease::Released => reject(RejectReason::LeaseReleased),
                            ModelLease::Committed => reject(RejectReason::LeaseAlreadyCommitted),
                            ModelLease::Active { .. } if staleness > max_staleness => {
                                m.leases[i].1 = ModelLease::Committed;
                                reject(RejectReason::TooStale { max_staleness })
                            }
                            ModelLease::Active { .. } => {
                                m.leases[i].1 = ModelLease::Committed;
                                m.pending += 1;
                                let published = if m.pending >= min_commits {
                                    m.pending = 0;
                                    m.version += 1;
                                    Some(m.version)
                                } else {
                                    None
                                };
                                CommitOutcome::Accepted { weight: 0.5f64.powi(staleness as i32), staleness, published }
                            }
                        };
                        m.answers.insert(key, want);
                        want
                    };
                    prop_assert_eq!(got, want);
                }
                _ => {}
            }
            prop_assert_eq!(s.version, m.version);
            prop_assert_eq!(s.pending.len(), m.pending);
            prop_assert!(s.leases.versions_in_flight() <= max_in_flight);
            prop_assert_eq!(s.leases.versions_in_flight(), m.versions_out().len());
        }
    }
}
