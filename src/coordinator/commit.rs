//! What a worker sends back and what it is told.

/// The result of one inner run, committed against a lease.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitRequest {
    /// Id chosen by the worker, unique per worker: a retry with the same
    /// `(worker, commit_id)` gets the first answer back and is never applied
    /// twice.
    pub commit_id: u64,
    /// Gradient of the validation loss with respect to the outer parameters
    /// (same length, every value finite).
    pub hypergradient: Vec<f32>,
    /// Validation loss reached by the inner run (finite); kept in memory.
    pub validation_loss: f32,
}

/// Why a commit was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// More than `max_staleness` versions were published since the checkout.
    TooStale {
        /// The configured maximum.
        max_staleness: u64,
    },
    /// The lease expired (no heartbeat within `lease_ttl`) before the commit.
    LeaseExpired,
    /// The worker released the lease before committing.
    LeaseReleased,
    /// The lease already carried another commit (one commit per lease).
    LeaseAlreadyCommitted,
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::TooStale { max_staleness } => {
                write!(f, "too stale (max staleness {max_staleness})")
            }
            RejectReason::LeaseExpired => f.write_str("lease expired: no heartbeat within the lease TTL"),
            RejectReason::LeaseReleased => f.write_str("lease was released before the commit"),
            RejectReason::LeaseAlreadyCommitted => f.write_str("lease already carried another commit"),
        }
    }
}

/// The coordinator's answer to a commit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CommitOutcome {
    /// Applied (or pending until `min_commits` are in) with this weight.
    Accepted {
        /// Staleness weight given by the configured decay.
        weight: f64,
        /// Versions published between checkout and commit.
        staleness: u64,
        /// The version this commit's outer step published, when the commit
        /// completed a round (`None`: it waits in the pending set).
        published: Option<u64>,
    },
    /// Not applied.
    Rejected {
        /// Versions published between checkout and commit.
        staleness: u64,
        /// Why.
        reason: RejectReason,
    },
}

impl CommitOutcome {
    /// Whether the commit was accepted.
    pub fn is_accepted(&self) -> bool {
        matches!(self, CommitOutcome::Accepted { .. })
    }
}

/// One commit folded into an outer step (see
/// [`super::Coordinator::applied_log`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AppliedCommit {
    /// Worker that committed.
    pub worker: u64,
    /// Its commit id.
    pub commit_id: u64,
    /// The lease it was committed on.
    pub lease: u64,
    /// Version the worker had checked out.
    pub checked_out: u64,
    /// Weight it carried.
    pub weight: f64,
    /// Version published by the outer step that applied it.
    pub applied_in: u64,
}
