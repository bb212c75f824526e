//! [`Coordinator`]: the meta-state behind one mutex, with a condition
//! variable for the two calls that wait (checkout under backpressure and
//! waiting for a new version). Lease expiry is checked lazily on every call
//! and at every wake-up of a waiter, so no background thread is needed: a
//! waiter sleeps at most until the next lease could expire.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::commit::{AppliedCommit, CommitOutcome, CommitRequest};
use super::config::CoordinatorConfig;
use super::lease::Lease;
use super::memory::{Metric, Retrieved};
use super::snapshot;
use super::stats::CoordinatorStats;
use super::store::MetaState;
use super::timescale::TimescaleStatus;
use crate::error::{CoordinatorError, Error, Result};

/// The versioned store of outer parameters, shareable across threads
/// (`Arc<Coordinator>`). See the [module docs](super) for the protocol.
#[derive(Debug)]
pub struct Coordinator {
    config: CoordinatorConfig,
    state: Mutex<MetaState>,
    /// Signalled whenever a lease ends or a version is published.
    changed: Condvar,
}

// `Arc<Coordinator>` must cross threads: fail the build if it cannot.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Coordinator>();
};

/// `now + d`, saturating far in the future instead of overflowing.
fn deadline(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

impl Coordinator {
    /// A coordinator at version 0 holding `initial_outer_params`.
    ///
    /// Errors: [`Error::InvalidConfig`] for a bad config, empty or non-finite
    /// parameters, or timescale groups reaching past the parameters.
    pub fn new(initial_outer_params: Vec<f32>, config: CoordinatorConfig) -> Result<Self> {
        config.validate()?;
        config.validate_for(initial_outer_params.len())?;
        if let Some(i) = initial_outer_params.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidConfig {
                field: "initial_outer_params",
                reason: format!("value at index {i} is not finite"),
            });
        }
        let state = MetaState::new(initial_outer_params, &config);
        Ok(Coordinator { config, state: Mutex::new(state), changed: Condvar::new() })
    }

    /// Rebuilds a coordinator from [`Coordinator::snapshot`] bytes. With the
    /// same `config` it continues exactly (bitwise) where the snapshotted one
    /// was; learning rates and other non-structural settings may be changed.
    ///
    /// Errors: [`Error::InvalidConfig`] for a bad config;
    /// [`CoordinatorError::CorruptSnapshot`] for bytes that are not an intact
    /// snapshot; [`CoordinatorError::SnapshotMismatch`] when the parameter
    /// count, optimizer kind or timescale layout differs from `config`.
    pub fn restore(bytes: &[u8], config: CoordinatorConfig) -> Result<Self> {
        config.validate()?;
        let state = snapshot::decode(bytes, &config, Instant::now())?;
        Ok(Coordinator { config, state: Mutex::new(state), changed: Condvar::new() })
    }

    /// The whole meta-state as bytes (little-endian, versioned, CRC-32
    /// guarded; layout in `docs/coordinator.md`):
    /// version, outer parameters, optimizer state, timescale accumulators,
    /// pending commits, commit answers, leases, counters, audit log, memory.
    pub fn snapshot(&self) -> Vec<u8> {
        let st = self.lock();
        snapshot::encode(&st, Instant::now())
    }

    /// The configuration in force.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, MetaState> {
        // Nothing panics while holding the lock except a user decay; the
        // state is only modified after that call, so it is consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Expires silent leases and wakes waiters if any ended.
    fn expire(&self, st: &mut MetaState, now: Instant) {
        if st.expire(now, &self.config) > 0 {
            self.changed.notify_all();
        }
    }

    /// Checks out the current version, waiting up to
    /// [`CoordinatorConfig::checkout_timeout`] for a slot.
    pub fn checkout(&self, worker: u64) -> Result<Lease> {
        self.checkout_timeout(worker, self.config.checkout_timeout)
    }

    /// Checks out the current version. Immediate when that version is already
    /// out or fewer than `max_in_flight` distinct versions are; otherwise
    /// waits (expiring silent leases as they time out) until a slot frees up,
    /// and fails with [`CoordinatorError::Backpressure`] after `timeout`.
    pub fn checkout_timeout(&self, worker: u64, timeout: Duration) -> Result<Lease> {
        let start = Instant::now();
        let until = deadline(start, timeout);
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            self.expire(&mut st, now);
            if let Some(lease) = st.try_checkout(worker, now, &self.config) {
                return Ok(lease);
            }
            if now >= until {
                st.counters.backpressure_timeouts += 1;
                return Err(CoordinatorError::Backpressure {
                    worker,
                    after: timeout,
                    in_flight: st.leases.versions_in_flight(),
                    max: self.config.max_in_flight,
                }
                .into());
            }
            let wake = st.leases.next_expiry(self.config.lease_ttl).map_or(until, |t| t.min(until));
            let nap = wake.saturating_duration_since(now).max(Duration::from_micros(100));
            st = self.changed.wait_timeout(st, nap).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Renews `lease` for another `lease_ttl`. Errors:
    /// [`CoordinatorError::LeaseExpired`] when it already expired (its slot is
    /// gone; check out again), [`CoordinatorError::UnknownLease`] when it ended
    /// otherwise or never existed.
    pub fn heartbeat(&self, lease: &Lease) -> Result<()> {
        let mut st = self.lock();
        let now = Instant::now();
        self.expire(&mut st, now);
        st.heartbeat(lease, now)
    }

    /// Renews every lease `worker` holds; returns how many (0: none left).
    pub fn heartbeat_worker(&self, worker: u64) -> usize {
        let mut st = self.lock();
        let now = Instant::now();
        self.expire(&mut st, now);
        st.heartbeat_worker(worker, now)
    }

    /// Gives `lease` back without committing (its slot frees at once). Errors
    /// as [`Coordinator::heartbeat`].
    pub fn release(&self, lease: &Lease) -> Result<()> {
        let mut st = self.lock();
        self.expire(&mut st, Instant::now());
        st.release(lease)?;
        self.changed.notify_all();
        Ok(())
    }

    /// Commits an inner run's result against `lease`.
    ///
    /// * A `(lease.worker, commit_id)` already answered gets that first answer
    ///   again, nothing applied (the last `dedup_capacity` answers are kept).
    /// * Errors, nothing changed and the lease still usable:
    ///   [`CoordinatorError::ShapeMismatch`], [`CoordinatorError::NonFinite`]
    ///   (also when the resulting outer step would overflow),
    ///   [`CoordinatorError::UnknownLease`] (never issued, forged, or
    ///   forgotten).
    /// * Rejected, lease ended: staleness (`current - lease.version`) above
    ///   `max_staleness`; lease expired, released, or already used by another
    ///   commit.
    /// * Otherwise accepted with `weight = decay(staleness)`. When
    ///   `min_commits` accepted commits are pending, the outer step runs in
    ///   this call and publishes version + 1: the pending hypergradients are
    ///   combined as the weighted mean `sum w_j h_j / sum w_j` and handed to
    ///   the outer optimizer (per timescale segment).
    pub fn commit(&self, lease: &Lease, request: CommitRequest) -> Result<CommitOutcome> {
        let mut st = self.lock();
        self.expire(&mut st, Instant::now());
        let out = st.commit(lease, request, &self.config)?;
        // A lease ended or a version was published: wake waiters.
        self.changed.notify_all();
        Ok(out)
    }

    /// Waits until the version exceeds `after`; returns the current version.
    /// Immediate when it already does. Errors:
    /// [`CoordinatorError::WaitTimeout`] after `timeout`.
    pub fn wait_for_version(&self, after: u64, timeout: Duration) -> Result<u64> {
        let until = deadline(Instant::now(), timeout);
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            self.expire(&mut st, now);
            if st.version > after {
                return Ok(st.version);
            }
            if now >= until {
                return Err(CoordinatorError::WaitTimeout { version: after, after: timeout }.into());
            }
            let nap = until.saturating_duration_since(now).max(Duration::from_micros(100));
            st = self.changed.wait_timeout(st, nap).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// The current version (0 at creation, +1 per outer step).
    pub fn current_version(&self) -> u64 {
        self.lock().version
    }

    /// The current version and outer parameters, read atomically.
    pub fn state(&self) -> (u64, Arc<[f32]>) {
        let st = self.lock();
        (st.version, Arc::clone(&st.params))
    }

    /// The current outer parameters (shared, not copied).
    pub fn outer_params(&self) -> Arc<[f32]> {
        Arc::clone(&self.lock().params)
    }

    /// Counters and the instantaneous lease picture, taken atomically.
    pub fn stats(&self) -> CoordinatorStats {
        let mut st = self.lock();
        self.expire(&mut st, Instant::now());
        st.stats()
    }

    /// Every commit applied so far, in application order (empty unless
    /// [`CoordinatorConfig::audit_log`] is on).
    pub fn applied_log(&self) -> Vec<AppliedCommit> {
        self.lock().applied.clone().unwrap_or_default()
    }

    /// `(worker, commit_id)` of the accepted commits still waiting for
    /// `min_commits`, in acceptance order.
    pub fn pending_commits(&self) -> Vec<(u64, u64)> {
        self.lock().pending.iter().map(|p| (p.worker, p.commit_id)).collect()
    }

    /// Progress of every timescale segment, in index order.
    pub fn timescale_status(&self) -> Vec<TimescaleStatus> {
        self.lock().timescales.status()
    }

    /// The `k` past rounds most similar to `query` (see
    /// [`super::ContinuumMemory::retrieve`]).
    pub fn retrieve(&self, query: &[f32], k: usize, metric: Metric) -> Result<Vec<Retrieved>> {
        self.lock().memory.retrieve(query, k, metric)
    }

    /// A warm-start hypergradient for `query` (see
    /// [`super::ContinuumMemory::predict_hypergradient`]).
    pub fn predict_hypergradient(&self, query: &[f32], k: usize, metric: Metric) -> Result<Option<Vec<f32>>> {
        self.lock().memory.predict_hypergradient(query, k, metric)
    }
}
