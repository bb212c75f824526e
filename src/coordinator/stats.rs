//! Counters of everything the coordinator did.

use std::collections::BTreeMap;

/// A consistent picture of the coordinator's counters (taken under its lock).
/// Every counter survives [`super::Coordinator::snapshot`] / restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoordinatorStats {
    /// Current version of the outer parameters.
    pub version: u64,
    /// Successful checkouts.
    pub checkouts: u64,
    /// Checkouts that failed with backpressure.
    pub backpressure_timeouts: u64,
    /// Heartbeats that renewed at least one lease.
    pub heartbeats: u64,
    /// Commits accepted.
    pub accepted: u64,
    /// Commits rejected as too stale.
    pub rejected_too_stale: u64,
    /// Commits rejected because their lease had expired.
    pub rejected_expired: u64,
    /// Commits rejected because their lease had been released.
    pub rejected_released: u64,
    /// Commits rejected because their lease already carried a commit.
    pub rejected_reused: u64,
    /// Retried commits answered from the dedup cache (not re-applied).
    pub duplicate_commits: u64,
    /// Leases expired for lack of heartbeats.
    pub expirations: u64,
    /// Leases released by their workers.
    pub releases: u64,
    /// Outer steps applied (= versions published since creation).
    pub outer_steps: u64,
    /// Staleness → number of commits answered with it (accepted or too stale).
    pub staleness_histogram: BTreeMap<u64, u64>,
    /// Leases out now.
    pub active_leases: usize,
    /// Distinct versions checked out now.
    pub versions_in_flight: usize,
    /// Highest `versions_in_flight` ever observed (never above `max_in_flight`).
    pub max_versions_in_flight: usize,
    /// Accepted commits waiting for `min_commits`.
    pub pending_commits: usize,
    /// Entries in the continuum memory.
    pub memory_entries: usize,
}

impl CoordinatorStats {
    /// All rejections, every reason.
    pub fn rejected(&self) -> u64 {
        self.rejected_too_stale + self.rejected_expired + self.rejected_released + self.rejected_reused
    }
}

/// The persistent counters (the instantaneous fields of
/// [`CoordinatorStats`] are derived from the state).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub checkouts: u64,
    pub backpressure_timeouts: u64,
    pub heartbeats: u64,
    pub accepted: u64,
    pub rejected_too_stale: u64,
    pub rejected_expired: u64,
    pub rejected_released: u64,
    pub rejected_reused: u64,
    pub duplicate_commits: u64,
    pub expirations: u64,
    pub releases: u64,
    pub outer_steps: u64,
    pub max_versions_in_flight: u64,
    pub staleness_histogram: BTreeMap<u64, u64>,
}

impl Counters {
    /// The scalar counters in a fixed order (the snapshot layout).
    pub fn scalars(&self) -> [u64; 13] {
        [
            self.checkouts,
            self.backpressure_timeouts,
            self.heartbeats,
            self.accepted,
            self.rejected_too_stale,
            self.rejected_expired,
            self.rejected_released,
            self.rejected_reused,
            self.duplicate_commits,
            self.expirations,
            self.releases,
            self.outer_steps,
            self.max_versions_in_flight,
        ]
    }

    /// Inverse of [`Counters::scalars`] (histogram left empty).
    pub fn from_scalars(s: [u64; 13]) -> Self {
        Counters {
            checkouts: s[0],
            backpressure_timeouts: s[1],
            heartbeats: s[2],
            accepted: s[3],
            rejected_too_stale: s[4],
            rejected_expired: s[5],
            rejected_released: s[6],
            rejected_reused: s[7],
            duplicate_commits: s[8],
            expirations: s[9],
            releases: s[10],
            outer_steps: s[11],
            max_versions_in_flight: s[12],
            staleness_histogram: BTreeMap::new(),
        }
    }
}
