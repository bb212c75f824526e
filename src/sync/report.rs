//! What one step did.

/// Outcome of one [`crate::SparseSync::step`] on one rank, or of one bucket
/// in a [`crate::SyncGroup::step`] (see [`crate::SyncGroup::reports`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepReport {
    /// Step number, counted from 1.
    pub step: u64,
    /// `s = ||acc|| / max(||theta||, 1e-8)` after accumulating this step.
    pub significance: f32,
    /// The threshold `tau_t` in force this step, as the f32 the device
    /// compared against (with a [`crate::SyncConfig::budget`], the steered
    /// value after warm-up, rounded from its f64 state).
    pub threshold: f32,
    /// This rank's significance passed the threshold.
    pub triggered: bool,
    /// This rank reached `max_accumulation_steps` without a sync.
    pub forced: bool,
    /// The group synced this step (some rank triggered or was forced).
    pub synced: bool,
    /// Entries this rank sent (0 without a sync).
    pub entries_sent: u64,
    /// Packed bytes this rank sent.
    pub bytes_sent: u64,
    /// Packed bytes this rank received from the other ranks.
    pub bytes_received: u64,
    /// What a dense f32 all-gather of the same step would have sent per rank (n * 4, or 0 without a sync).
    pub dense_equivalent_bytes: u64,
    /// Bytes of the vote and count exchange (the control traffic, every
    /// step). In a [`crate::SyncGroup`] the one vote and count exchange are
    /// counted in bucket 0's report (the others say 0).
    pub control_bytes: u64,
}

/// Outcome of one [`crate::SyncGroup::step`] on one rank, summed over its
/// buckets (each bucket's own is in [`crate::SyncGroup::reports`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupReport {
    /// Step number, counted from 1.
    pub step: u64,
    /// Buckets that synced this step.
    pub buckets_synced: usize,
    /// Packed bytes this rank sent, all buckets.
    pub bytes_sent: u64,
    /// Packed bytes this rank received from the other ranks, all buckets.
    pub bytes_received: u64,
    /// Bytes of the vote and the count exchange (one of each per step,
    /// whatever the number of buckets).
    pub control_bytes: u64,
}
