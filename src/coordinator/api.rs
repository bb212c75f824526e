//! [`CoordinatorApi`]: the operations a worker loop needs, behind one trait,
//! so the same loop runs against the in-process [`Coordinator`] or a remote
//! one (the `chronos-sync-service` crate's client).

use std::sync::Arc;
use std::time::Duration;

use super::commit::{CommitOutcome, CommitRequest};
use super::lease::Lease;
use super::service::Coordinator;
use crate::error::Result;

/// The current version and its outer parameters, read atomically.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentState {
    /// Current version (0 at creation, +1 per outer step).
    pub version: u64,
    /// The outer parameters of `version`.
    pub params: Arc<[f32]>,
}

/// What a worker loop calls on a coordinator, wherever it runs.
///
/// The contracts are those of the in-process [`Coordinator`]'s methods of the
/// same names (see `docs/coordinator.md`); an implementation that talks to a
/// remote coordinator adds transport errors
/// ([`crate::CoordinatorError::Unavailable`],
/// [`crate::CoordinatorError::Overloaded`],
/// [`crate::CoordinatorError::Unauthenticated`]) and keeps every call bounded
/// in time.
///
/// ```
/// use chronos_sync::coordinator::{CommitRequest, Coordinator, CoordinatorApi, CoordinatorConfig};
///
/// /// One worker's rounds, generic over where the coordinator lives.
/// fn rounds<C: CoordinatorApi + ?Sized>(coord: &C, worker: u64) -> chronos_sync::Result<()> {
///     for round in 0..2u64 {
///         let lease = coord.checkout(worker)?;
///         let hypergradient = lease.params.to_vec();
///         let request = CommitRequest { commit_id: round, hypergradient, validation_loss: 1.0 };
///         coord.commit(&lease, request)?;
///     }
///     Ok(())
/// }
/// let coord = Coordinator::new(vec![1.0, 2.0], CoordinatorConfig::default())?;
/// rounds(&coord, 0)?;
/// assert_eq!(CoordinatorApi::current_state(&coord)?.version, 2);
/// # Ok::<(), chronos_sync::Error>(())
/// ```
pub trait CoordinatorApi: Send + Sync {
    /// Leases the current version, waiting (bounded) under backpressure.
    fn checkout(&self, worker: u64) -> Result<Lease>;
    /// Renews `lease` for another `lease_ttl`.
    fn heartbeat(&self, lease: &Lease) -> Result<()>;
    /// Commits an inner run's result against `lease` (retry-safe by
    /// `(worker, commit_id)`).
    fn commit(&self, lease: &Lease, request: CommitRequest) -> Result<CommitOutcome>;
    /// Ends `lease` without a commit.
    fn release(&self, lease: &Lease) -> Result<()>;
    /// Waits until the version exceeds `after` (at most `timeout`); returns it.
    fn wait_for_version(&self, after: u64, timeout: Duration) -> Result<u64>;
    /// The current version and outer parameters.
    fn current_state(&self) -> Result<CurrentState>;
    /// The whole meta-state in the snapshot format ([`Coordinator::snapshot`]).
    fn export_snapshot(&self) -> Result<Vec<u8>>;
}

impl CoordinatorApi for Coordinator {
    fn checkout(&self, worker: u64) -> Result<Lease> {
        Coordinator::checkout(self, worker)
    }
    fn heartbeat(&self, lease: &Lease) -> Result<()> {
        Coordinator::heartbeat(self, lease)
    }
    fn commit(&self, lease: &Lease, request: CommitRequest) -> Result<CommitOutcome> {
        Coordinator::commit(self, lease, request)
    }
    fn release(&self, lease: &Lease) -> Result<()> {
        Coordinator::release(self, lease)
    }
    fn wait_for_version(&self, after: u64, timeout: Duration) -> Result<u64> {
        Coordinator::wait_for_version(self, after, timeout)
    }
    fn current_state(&self) -> Result<CurrentState> {
        let (version, params) = self.state();
        Ok(CurrentState { version, params })
    }
    fn export_snapshot(&self) -> Result<Vec<u8>> {
        Ok(self.snapshot())
    }
}

impl<T: CoordinatorApi + ?Sized> CoordinatorApi for Arc<T> {
    fn checkout(&self, worker: u64) -> Result<Lease> {
        (**self).checkout(worker)
    }
    fn heartbeat(&self, lease: &Lease) -> Result<()> {
        (**self).heartbeat(lease)
    }
    fn commit(&self, lease: &Lease, request: CommitRequest) -> Result<CommitOutcome> {
        (**self).commit(lease, request)
    }
    fn release(&self, lease: &Lease) -> Result<()> {
        (**self).release(lease)
    }
    fn wait_for_version(&self, after: u64, timeout: Duration) -> Result<u64> {
        (**self).wait_for_version(after, timeout)
    }
    fn current_state(&self) -> Result<CurrentState> {
        (**self).current_state()
    }
    fn export_snapshot(&self) -> Result<Vec<u8>> {
        (**self).export_snapshot()
    }
}
