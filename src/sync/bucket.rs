//! One bucket of a [`super::SyncGroup`]: one vector's accumulator on the
//! device, its counters, and the host-side scratch its steps reuse.

use super::budget::BudgetController;
use crate::backend::StepStatus;
use crate::collective::Gathered;
use crate::config::SyncConfig;
use crate::error::Result;
use crate::wire;

pub(crate) struct Bucket<S> {
    pub(crate) n: usize,
    pub(crate) config: SyncConfig,
    /// The backend's state: accumulators and workspaces, on the device.
    pub(crate) state: S,
    /// Steps completed, counted from 1 (0 before the first).
    pub(crate) t: u64,
    /// Steps since the last sync.
    pub(crate) since: u64,
    /// The largest packed buffer this bucket's rule can produce: the bound
    /// every peer's announced length is held to before allocation.
    pub(crate) max_bytes: usize,
    /// The status of this step's fused pass.
    pub(crate) status: StepStatus,
    pub(crate) validator: wire::Validator,
    /// This bucket's share of a grouped exchange (several buckets syncing).
    pub(crate) gathered: Gathered,
    /// What this rank sent and received in its last sync.
    pub(crate) entries_sent: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
    /// Every rank's packed bytes in the last sync (the same on every rank).
    pub(crate) bytes_exchanged: u64,
    /// The budget controller, when the configuration has a budget.
    pub(crate) budget: Option<BudgetController>,
    /// Set by a sync whose exchange the backend may have validated
    /// asynchronously ([`crate::Backend::deferred_verdict`]): what the
    /// counters were before it, restored if the verdict comes back invalid.
    pub(crate) retraction: Option<Retraction>,
}

/// A bucket's counters as they were before a sync, for when its deferred
/// verdict turns it into a step taken without a sync.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retraction {
    /// Steps since the last sync, the synced step included.
    pub(crate) since: u64,
    /// The budget controller before it saw the sync.
    pub(crate) budget: Option<BudgetController>,
}

impl<S> Bucket<S> {
    pub(crate) fn new(n: usize, config: SyncConfig, state: S, world: usize) -> Self {
        let entries = config.selection.max_entries(n) as u64;
        let max_bytes =
            usize::try_from(wire::layout::max_packed_bytes(n as u64, config.wire_dtype, entries)).unwrap_or(usize::MAX);
        let mut gathered = Gathered::new();
        gathered.reserve_total(max_bytes.saturating_mul(world), world);
        let budget = config.budget.map(|_| BudgetController::new(&config));
        Bucket {
            n,
            config,
            state,
            t: 0,
            since: 0,
            max_bytes,
            status: StepStatus::default(),
            validator: wire::Validator::for_len(n as u64),
            gathered,
            entries_sent: 0,
            bytes_sent: 0,
            bytes_received: 0,
            bytes_exchanged: 0,
            budget,
            retraction: None,
        }
    }

    /// The threshold in force at step `t` (from 1): the configuration's
    /// schedule, or from `warmup_steps` on the budget's steered value.
    pub(crate) fn tau(&self, t: u64) -> f64 {
        match &self.budget {
            Some(state) if t >= self.config.warmup_steps => state.tau,
            _ => self.config.tau(t),
        }
    }

    /// Feeds the step just completed successfully (`self.t`) to the budget
    /// controller, if any: `synced` is the vote's verdict, the bytes are
    /// those of the exchange this step (read only when `synced`).
    pub(crate) fn steer(&mut self, synced: bool, world: usize) {
        if let (Some(state), Some(budget)) = (self.budget.as_mut(), self.config.budget.as_ref()) {
            let bytes_per_rank = self.bytes_exchanged as f64 / world as f64;
            state.observe(&self.config, budget, self.t, synced, bytes_per_rank);
        }
    }

    /// Records this rank's traffic from a validated exchange.
    /// `entries` is this rank's entry count when the bytes are not on the
    /// host (a device exchange); else it is read from its buffer's header.
    pub(crate) fn note_exchange(&mut self, gathered: &Gathered, own_rank: usize, entries: Option<u64>) -> Result<()> {
        let offsets = gathered.offsets();
        let own = (offsets[own_rank + 1] - offsets[own_rank]) as u64;
        self.entries_sent = match entries {
            Some(e) => e,
            None => wire::peek_count(gathered.rank_bytes(own_rank))?,
        };
        self.bytes_sent = own;
        self.bytes_received = gathered.total_len() as u64 - own;
        self.bytes_exchanged = gathered.total_len() as u64;
        Ok(())
    }
}
