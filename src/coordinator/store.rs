//! The meta-state and every rule that changes it, free of locking and of
//! the clock (callers pass `now`), so it can be tested and snapshotted
//! directly. [`super::Coordinator`] wraps it in a mutex.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::commit::{AppliedCommit, CommitOutcome, CommitRequest, RejectReason};
use super::config::CoordinatorConfig;
use super::lease::{Ended, Lease, LeaseTable, Lookup};
use super::memory::ContinuumMemory;
use super::optimizer;
use super::stats::{CoordinatorStats, Counters};
use super::timescale::Timescales;
use crate::error::{CoordinatorError, Result};

/// An accepted commit waiting for its outer step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pending {
    pub worker: u64,
    pub commit_id: u64,
    pub lease: u64,
    pub checked_out: u64,
    pub weight: f64,
    pub validation_loss: f32,
    pub hypergradient: Vec<f32>,
}

/// Everything the coordinator knows.
#[derive(Debug, Clone)]
pub(crate) struct MetaState {
    pub version: u64,
    pub params: Arc<[f32]>,
    /// [`super::OuterOptimizer`] kind the moments belong to.
    pub optimizer_code: u8,
    /// First moment (SGD momentum buffer / Adam `m`), one per parameter.
    pub m: Vec<f32>,
    /// Adam's second moment; empty under SGD.
    pub v: Vec<f32>,
    pub timescales: Timescales,
    /// Accepted commits not yet applied, in acceptance order.
    pub pending: Vec<Pending>,
    /// First answer per `(worker, commit_id)`.
    pub answers: HashMap<(u64, u64), CommitOutcome>,
    /// Keys of `answers`, oldest first (eviction order).
    pub answer_order: VecDeque<(u64, u64)>,
    pub answer_capacity: usize,
    pub leases: LeaseTable,
    pub counters: Counters,
    /// Every applied commit when the audit log is on.
    pub applied: Option<Vec<AppliedCommit>>,
    pub memory: ContinuumMemory,
}

/// The result of an outer step computed on copies, installed only when every
/// new parameter is finite.
struct StepResult {
    params: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    timescales: Timescales,
    grad: Vec<f32>,
    loss: f32,
}

impl MetaState {
    /// A fresh state (config validated against `params.len()` by the caller).
    pub fn new(params: Vec<f32>, config: &CoordinatorConfig) -> Self {
        let n = params.len();
        let second = optimizer::has_second_moment(&config.optimizer);
        MetaState {
            version: 0,
            params: Arc::from(params),
            optimizer_code: config.optimizer.code(),
            m: vec![0.0; n],
            v: if second { vec![0.0; n] } else { Vec::new() },
            timescales: Timescales::new(config, n),
            pending: Vec::new(),
            answers: HashMap::new(),
            answer_order: VecDeque::new(),
            answer_capacity: config.dedup_capacity,
            leases: LeaseTable::new(config.dedup_capacity),
            counters: Counters::default(),
            applied: config.audit_log.then(Vec::new),
            memory: ContinuumMemory::new(n, config.memory),
        }
    }

    /// Expires silent leases; returns how many ended.
    pub fn expire(&mut self, now: Instant, config: &CoordinatorConfig) -> usize {
        let n = self.leases.expire(now, config.lease_ttl);
        self.counters.expirations += n as u64;
        n
    }

    /// Opens a lease on the current version if it fits under `max_in_flight`.
    pub fn try_checkout(&mut self, worker: u64, now: Instant, config: &CoordinatorConfig) -> Option<Lease> {
        if !self.leases.admits(self.version, config.max_in_flight) {
            return None;
        }
        let id = self.leases.open(worker, self.version, now);
        self.counters.checkouts += 1;
        let out = self.leases.versions_in_flight() as u64;
        self.counters.max_versions_in_flight = self.counters.max_versions_in_flight.max(out);
        Some(Lease { id, worker, version: self.version, params: Arc::clone(&self.params) })
    }

    /// Renews `lease`. Errors: expired or unknown lease.
    pub fn heartbeat(&mut self, lease: &Lease, now: Instant) -> Result<()> {
        match self.leases.lookup(lease.id) {
            Lookup::Active { worker, version } if worker == lease.worker && version == lease.version => {
                self.leases.heartbeat(lease.id, now);
                self.counters.heartbeats += 1;
                Ok(())
            }
            Lookup::Ended { worker, how: Ended::Expired } if worker == lease.worker => {
                Err(CoordinatorError::LeaseExpired { lease: lease.id, worker }.into())
            }
            _ => Err(CoordinatorError::UnknownLease { lease: lease.id, worker: lease.worker }.into()),
        }
    }

    /// Renews every lease of `worker`; returns how many.
    pub fn heartbeat_worker(&mut self, worker: u64, now: Instant) -> usize {
        let n = self.leases.heartbeat_worker(worker, now);
        if n > 0 {
            self.counters.heartbeats += 1;
        }
        n
    }

    /// Gives `lease` back without committing. Errors as [`Self::heartbeat`].
    pub fn release(&mut self, lease: &Lease) -> Result<()> {
        match self.leases.lookup(lease.id) {
            Lookup::Active { worker, version } if worker == lease.worker && version == lease.version => {
                self.leases.end(lease.id, Ended::Released);
                self.counters.releases += 1;
                Ok(())
            }
            Lookup::Ended { worker, how: Ended::Expired } if worker == lease.worker => {
                Err(CoordinatorError::LeaseExpired { lease: lease.id, worker }.into())
            }
            _ => Err(CoordinatorError::UnknownLease { lease: lease.id, worker: lease.worker }.into()),
        }
    }

    /// Answers a commit (see [`super::Coordinator::commit`] for the contract).
    /// On error nothing changed.
    pub fn commit(&mut self, lease: &Lease, req: CommitRequest, config: &CoordinatorConfig) -> Result<CommitOutcome> {
        let key = (lease.worker, req.commit_id);
        if let Some(&first) = self.answers.get(&key) {
            self.counters.duplicate_commits += 1;
            return Ok(first);
        }
        let n = self.params.len();
        if req.hypergradient.len() != n {
            return Err(CoordinatorError::ShapeMismatch { expected: n, actual: req.hypergradient.len() }.into());
        }
        if !(req.validation_loss.is_finite() && req.hypergradient.iter().all(|x| x.is_finite())) {
            return Err(CoordinatorError::NonFinite { commit: req.commit_id }.into());
        }
        let staleness = self.version.saturating_sub(lease.version);
        let ended_reason = match self.leases.lookup(lease.id) {
            Lookup::Active { worker, version } if worker == lease.worker && version == lease.version => None,
            Lookup::Ended { worker, how } if worker == lease.worker => Some(match how {
                Ended::Expired => RejectReason::LeaseExpired,
                Ended::Released => RejectReason::LeaseReleased,
                Ended::Committed => RejectReason::LeaseAlreadyCommitted,
            }),
            _ => {
                return Err(CoordinatorError::UnknownLease { lease: lease.id, worker: lease.worker }.into());
            }
        };
        if let Some(reason) = ended_reason {
            let c = &mut self.counters;
            match reason {
                RejectReason::LeaseExpired => c.rejected_expired += 1,
                RejectReason::LeaseReleased => c.rejected_released += 1,
                _ => c.rejected_reused += 1,
            }
            return Ok(self.answer(key, CommitOutcome::Rejected { staleness, reason }));
        }
        if staleness > config.max_staleness {
            self.leases.end(lease.id, Ended::Committed);
            self.counters.rejected_too_stale += 1;
            *self.counters.staleness_histogram.entry(staleness).or_insert(0) += 1;
            let reason = RejectReason::TooStale { max_staleness: config.max_staleness };
            return Ok(self.answer(key, CommitOutcome::Rejected { staleness, reason }));
        }
        let weight = config.decay.weight(staleness);
        let pending = Pending {
            worker: lease.worker,
            commit_id: req.commit_id,
            lease: lease.id,
            checked_out: lease.version,
            weight,
            validation_loss: req.validation_loss,
            hypergradient: req.hypergradient,
        };
        let mut published = None;
        if self.pending.len() + 1 >= config.min_commits {
            // Compute on copies first: an update that overflows is refused
            // with the state (this commit included) left as it was.
            let step = self.compute_step(&pending, config);
            if !step.params.iter().all(|x| x.is_finite()) {
                return Err(CoordinatorError::NonFinite { commit: req.commit_id }.into());
            }
            self.pending.push(pending);
            published = Some(self.install(step));
        } else {
            self.pending.push(pending);
        }
        self.leases.end(lease.id, Ended::Committed);
        self.counters.accepted += 1;
        *self.counters.staleness_histogram.entry(staleness).or_insert(0) += 1;
        Ok(self.answer(key, CommitOutcome::Accepted { weight, staleness, published }))
    }

    /// Remembers the first answer to `key`, forgetting the oldest beyond
    /// capacity.
    fn answer(&mut self, key: (u64, u64), outcome: CommitOutcome) -> CommitOutcome {
        if self.answers.insert(key, outcome).is_none() {
            self.answer_order.push_back(key);
        }
        while self.answer_order.len() > self.answer_capacity {
            if let Some(old) = self.answer_order.pop_front() {
                self.answers.remove(&old);
            }
        }
        outcome
    }

    /// The outer step over the pending commits plus `extra`, on copies.
    ///
    /// Combined hypergradient: `g = sum_j w_j h_j / sum_j w_j` (weighted mean,
    /// f64 accumulation in `(worker, commit_id)` order, rounded to f32 once),
    /// so the step size does not depend on how many commits or how stale they
    /// were, only their relative say does. Validation losses are combined the
    /// same way. The fixed order makes the step a function of the set of
    /// commits, not of which thread or process reached the lock first: a
    /// synchronous outer loop is then reproducible to the bit.
    fn compute_step(&self, extra: &Pending, config: &CoordinatorConfig) -> StepResult {
        let n = self.params.len();
        let mut all: Vec<&Pending> = self.pending.iter().chain(std::iter::once(extra)).collect();
        all.sort_unstable_by_key(|p| (p.worker, p.commit_id));
        let mut total = 0.0f64;
        let mut loss = 0.0f64;
        let mut sum = vec![0.0f64; n];
        for p in all {
            total += p.weight;
            loss += p.weight * p.validation_loss as f64;
            for (s, &h) in sum.iter_mut().zip(&p.hypergradient) {
                *s += p.weight * h as f64;
            }
        }
        let grad: Vec<f32> = sum.iter().map(|s| (s / total) as f32).collect();
        let mut params = self.params.to_vec();
        let (mut m, mut v, mut timescales) = (self.m.clone(), self.v.clone(), self.timescales.clone());
        timescales.round(&config.optimizer, &grad, &mut params, &mut m, &mut v);
        StepResult { params, m, v, timescales, grad, loss: (loss / total) as f32 }
    }

    /// Installs a computed step: publishes version + 1. Returns it.
    fn install(&mut self, step: StepResult) -> u64 {
        let old_version = self.version;
        let old_params = std::mem::replace(&mut self.params, Arc::from(step.params));
        // Cannot fail: lengths match and every value is finite (the weighted
        // mean of finite values is finite, and the caller checked the rest).
        let _ = self.memory.insert(&old_params, &step.grad, step.loss, old_version);
        self.m = step.m;
        self.v = step.v;
        self.timescales = step.timescales;
        self.version += 1;
        self.counters.outer_steps += 1;
        let version = self.version;
        let drained = std::mem::take(&mut self.pending);
        if let Some(log) = self.applied.as_mut() {
            log.extend(drained.iter().map(|p| AppliedCommit {
                worker: p.worker,
                commit_id: p.commit_id,
                lease: p.lease,
                checked_out: p.checked_out,
                weight: p.weight,
                applied_in: version,
            }));
        }
        version
    }

    /// A consistent picture of the counters.
    pub fn stats(&self) -> CoordinatorStats {
        let c = &self.counters;
        CoordinatorStats {
            version: self.version,
            checkouts: c.checkouts,
            backpressure_timeouts: c.backpressure_timeouts,
            heartbeats: c.heartbeats,
            accepted: c.accepted,
            rejected_too_stale: c.rejected_too_stale,
            rejected_expired: c.rejected_expired,
            rejected_released: c.rejected_released,
            rejected_reused: c.rejected_reused,
            duplicate_commits: c.duplicate_commits,
            expirations: c.expirations,
            releases: c.releases,
            outer_steps: c.outer_steps,
            staleness_histogram: c.staleness_histogram.clone(),
            active_leases: self.leases.active.len(),
            versions_in_flight: self.leases.versions_in_flight(),
            max_versions_in_flight: c.max_versions_in_flight as usize,
            pending_commits: self.pending.len(),
            memory_entries: self.memory.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Error;
    use crate::coordinator::config::OuterOptimizer;

    fn cfg(min_commits: usize) -> CoordinatorConfig {
        CoordinatorConfig {
            optimizer: OuterOptimizer::Sgd { lr: 1.0, momentum: 0.0 },
            min_commits,
            audit_log: true,
            lease_ttl: Duration::from_millis(100),
            ..CoordinatorConfig::default()
        }
    }

    fn req(id: u64, g: &[f32]) -> CommitRequest {
        CommitRequest { commit_id: id, hypergradient: g.to_vec(), validation_loss: 1.0 }
    }

    #[test]
    fn accepted_commit_publishes_and_retry_is_not_reapplied() {
        let c = cfg(1);
        let now = Instant::now();
        let mut s = MetaState::new(vec![1.0, 2.0], &c);
        let l = s.try_checkout(7, now, &c).unwrap();
        let first = s.commit(&l, req(1, &[0.5, 0.5]), &c).unwrap();
        assert_eq!(first, CommitOutcome::Accepted { weight: 1.0, staleness: 0, published: Some(1) });
        assert_eq!(&*s.params, &[0.5, 1.5]);
        assert_eq!(s.commit(&l, req(1, &[9.0, 9.0]), &c).unwrap(), first);
        assert_eq!(&*s.params, &[0.5, 1.5]);
        assert_eq!(s.counters.duplicate_commits, 1);
        let again = s.commit(&l, req(2, &[0.5, 0.5]), &c).unwrap();
        assert!(matches!(again, CommitOutcome::Rejected { reason: RejectReason::LeaseAlreadyCommitted, .. }));
        assert_eq!(s.applied.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn weighted_mean_over_pending_commits() {
        let c = cfg(2);
        let now = Instant::now();
        let mut s = MetaState::new(vec![0.0], &c);
        let stale = s.try_checkout(1, now, &c).unwrap();
        // Two commits at version 0 close round 1.
        let a = s.try_checkout(2, now, &c).unwrap();
        let b = s.try_checkout(3, now, &c).unwrap();
        assert!(s.commit(&a, req(1, &[1.0]), &c).unwrap().is_accepted());
        assert_eq!(s.pending.len(), 1);
        s.commit(&b, req(1, &[1.0]), &c).unwrap();
        assert_eq!(s.version, 1);
        assert_eq!(&*s.params, &[-1.0]);
        // Staleness 1 (weight 0.5) and 0 (weight 1): g = (0.5 * 4 + 1 * 1) / 1.5 = 2.
        let fresh = s.try_checkout(4, now, &c).unwrap();
        let out = s.commit(&stale, req(1, &[4.0]), &c).unwrap();
        assert_eq!(out, CommitOutcome::Accepted { weight: 0.5, staleness: 1, published: None });
        s.commit(&fresh, req(1, &[1.0]), &c).unwrap();
        assert_eq!(&*s.params, &[-3.0]);
    }

    #[test]
    fn outer_step_does_not_depend_on_arrival_order() {
        // Values whose f64 sum depends on the order it is taken in: 1e16 + 1
        // - 1e16 is 0 one way and 1 another.
        let grads: [[f32; 2]; 3] = [[1e16, 3.0], [1.0, -7.5e-8], [-1e16, 0.1]];
        let c = CoordinatorConfig { optimizer: OuterOptimizer::Sgd { lr: 1.0, momentum: 0.0 }, ..cfg(3) };
        let now = Instant::now();
        let run = |order: [usize; 3]| {
            let mut s = MetaState::new(vec![0.0, 0.0], &c);
            let leases: Vec<Lease> = (0..3).map(|w| s.try_checkout(w, now, &c).unwrap()).collect();
            for w in order {
                s.commit(&leases[w], req(1, &grads[w]), &c).unwrap();
            }
            assert_eq!(s.version, 1);
            s.params.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        };
        let first = run([0, 1, 2]);
        for order in [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            assert_eq!(run(order), first, "arrival order {order:?}");
        }
    }

    #[test]
    fn stale_expired_and_bad_commits() {
        let c = cfg(1);
        let t0 = Instant::now();
        let mut s = MetaState::new(vec![0.0], &c);
        let old = s.try_checkout(1, t0, &c).unwrap();
        let silent = s.try_checkout(2, t0, &c).unwrap();
        for w in 0..3 {
            let l = s.try_checkout(10 + w, t0, &c).unwrap();
            s.commit(&l, req(0, &[0.0]), &c).unwrap();
        }
        let out = s.commit(&old, req(0, &[0.0]), &c).unwrap();
        assert_eq!(out, CommitOutcome::Rejected { staleness: 3, reason: RejectReason::TooStale { max_staleness: 2 } });
        assert_eq!(s.expire(t0 + Duration::from_millis(100), &c), 1);
        let out = s.commit(&silent, req(0, &[0.0]), &c).unwrap();
        assert!(matches!(out, CommitOutcome::Rejected { reason: RejectReason::LeaseExpired, .. }));
        assert!(matches!(s.heartbeat(&silent, t0), Err(Error::Coordinator(CoordinatorError::LeaseExpired { .. }))));
        // Bad input: typed errors, lease still usable afterwards.
        let l = s.try_checkout(3, t0, &c).unwrap();
        let before = (s.version, s.params.clone());
        assert!(matches!(
            s.commit(&l, req(5, &[0.0, 1.0]), &c),
            Err(Error::Coordinator(CoordinatorError::ShapeMismatch { expected: 1, actual: 2 }))
        ));
        assert!(matches!(
            s.commit(&l, req(5, &[f32::INFINITY]), &c),
            Err(Error::Coordinator(CoordinatorError::NonFinite { commit: 5 }))
        ));
        let forged = Lease { id: 999, ..l.clone() };
        assert!(matches!(
            s.commit(&forged, req(7, &[0.0]), &c),
            Err(Error::Coordinator(CoordinatorError::UnknownLease { lease: 999, .. }))
        ));
        assert_eq!((s.version, &s.params), (before.0, &before.1));
        assert!(s.commit(&l, req(5, &[0.0]), &c).unwrap().is_accepted());
    }

    #[test]
    fn overflowing_step_is_refused_and_state_kept() {
        let c = CoordinatorConfig { optimizer: OuterOptimizer::Sgd { lr: 4.0, momentum: 0.0 }, ..cfg(1) };
        let now = Instant::now();
        let mut s = MetaState::new(vec![-f32::MAX], &c);
        let l = s.try_checkout(1, now, &c).unwrap();
        let r = s.commit(&l, req(1, &[f32::MAX]), &c);
        assert!(matches!(r, Err(Error::Coordinator(CoordinatorError::NonFinite { commit: 1 }))));
        assert_eq!(s.version, 0);
        assert_eq!(&*s.params, &[-f32::MAX]);
        assert!(s.pending.is_empty());
        assert!(s.answers.is_empty());
        // The lease is still usable with a sane result.
        assert!(s.commit(&l, req(1, &[-1.0]), &c).unwrap().is_accepted());
    }
}
