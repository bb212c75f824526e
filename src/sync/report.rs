//! What one step did.

/// Outcome of one [`crate::SparseSync::step`] on one rank.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepReport {
    /// Step number, counted from 1.
    pub step: u64,
    /// `s = ||acc|| / max(||theta||, 1e-8)` after accumulating this step.
    pub significance: f32,
    /// The threshold `tau_t` in force.
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
    /// Bytes of the vote and count exchange (the control traffic, every step).
    pub control_bytes: u64,
}
