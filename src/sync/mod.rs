//! [`SparseSync`]: one rank's significance-triggered sparse synchronization,
//! the spec's whole step over a [`Backend`] and a [`Collective`].

mod report;

pub use report::StepReport;

use crate::backend::Backend;
use crate::collective::{Collective, Gathered};
use crate::config::SyncConfig;
use crate::error::{Error, Result};
use crate::wire;

/// One rank's sync engine. Owns the backend state (accumulator and
/// workspaces, resident on the device) and the collective handle.
///
/// Every rank of a group must call [`SparseSync::step`] the same number of
/// times; the collective calls inside are the same on every rank whatever the
/// local outcome, so no rank waits on a collective another rank skipped.
pub struct SparseSync<B: Backend, C: Collective> {
    backend: B,
    collective: C,
    config: SyncConfig,
    state: B::State,
    n: usize,
    /// Steps completed, counted from 1 (0 before the first).
    t: u64,
    /// Steps since the last sync.
    since: u64,
    vote: Vec<u32>,
    lens: Vec<u64>,
    gathered: Gathered,
}

impl<B: Backend, C: Collective> SparseSync<B, C> {
    /// Creates the engine for vectors of `n` elements. Validates `config` and
    /// allocates all device state up front.
    pub fn new(backend: B, collective: C, n: usize, config: SyncConfig) -> Result<Self> {
        config.validate()?;
        if n == 0 {
            return Err(Error::InvalidConfig { field: "n", reason: "must be >= 1".into() });
        }
        let world = collective.world_size();
        if world == 0 || collective.rank() >= world {
            return Err(crate::error::CollectiveError::InvalidRank { rank: collective.rank(), world }.into());
        }
        let state = backend.create_state(n, &config)?;
        Ok(SparseSync {
            backend,
            collective,
            config,
            state,
            n,
            t: 0,
            since: 0,
            vote: vec![0; 1 + world],
            lens: Vec::with_capacity(world),
            gathered: Gathered::new(),
        })
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }
    /// The collective.
    pub fn collective(&self) -> &C {
        &self.collective
    }
    /// The configuration.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }
    /// Elements per vector.
    pub fn len(&self) -> usize {
        self.n
    }
    /// Always false: a `SparseSync` has at least one element.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Steps completed.
    pub fn steps(&self) -> u64 {
        self.t
    }
    /// Steps since the last sync.
    pub fn steps_since_sync(&self) -> u64 {
        self.since
    }
    /// Copies the committed accumulator to `dst`.
    pub fn read_accumulator(&self, dst: &mut [f32]) -> Result<()> {
        check_len("accumulator", self.n, dst.len())?;
        self.backend.read_accumulator(&self.state, dst)
    }

    /// Runs one step of the spec on this rank: accumulate `delta`, test
    /// significance, vote, and if the group syncs, pack, exchange and apply to
    /// `params`.
    ///
    /// Errors leave the accumulator and `params` as they were before the call
    /// on every rank: non-finite input ([`Error::NonFinite`], naming every
    /// offending rank, returned on all ranks), a timeout in the vote, or an
    /// invalid peer buffer. A timeout during the exchange keeps everything
    /// this step accumulated (nothing is lost), leaves `params` untouched, and
    /// counts the step as taken without a sync.
    pub fn step(&mut self, delta: &B::Buffer, params: &mut B::Buffer) -> Result<StepReport> {
        check_len("delta", self.n, self.backend.buffer_len(delta))?;
        check_len("params", self.n, self.backend.buffer_len(params))?;
        let t = self.t + 1;
        let since = self.since + 1;
        let tau = self.config.tau(t) as f32;
        let status = self.backend.accumulate(&mut self.state, delta, params, tau)?;

        let world = self.collective.world_size();
        let rank = self.collective.rank();
        let local_error = status.nonfinite > 0;
        let forced = since >= self.config.max_accumulation_steps;
        let wants = status.triggered != 0 || forced;
        self.vote.iter_mut().for_each(|v| *v = 0);
        self.vote[0] = u32::from(wants && !local_error);
        self.vote[1 + rank] = u32::from(local_error);
        self.collective.all_reduce_max(&mut self.vote)?;
        let failed: Vec<usize> = (0..world).filter(|&r| self.vote[1 + r] != 0).collect();
        if !failed.is_empty() {
            return Err(Error::NonFinite { ranks: failed });
        }
        self.backend.commit_accumulate(&mut self.state)?;
        let control_bytes = (self.vote.len() * 4) as u64;
        let mut report = StepReport {
            step: t,
            significance: status.significance,
            threshold: tau,
            triggered: status.triggered != 0,
            forced,
            control_bytes,
            ..StepReport::default()
        };
        self.t = t;
        self.since = since;
        if self.vote[0] == 0 {
            return Ok(report);
        }

        let packed = self.backend.select_pack(&mut self.state)?;
        let sent = packed.len() as u64;
        let entries = wire::peek_count(packed)?;
        self.collective.all_gather_u64(sent, &mut self.lens)?;
        self.collective.all_gather_bytes(packed, &self.lens, &mut self.gathered)?;
        for (r, bytes) in self.gathered.iter() {
            wire::validate(bytes, self.n as u64, self.config.wire_dtype)
                .map_err(|source| Error::InvalidPeerBuffer { rank: r, source })?;
        }
        let weight = self.config.apply_weight.unwrap_or(1.0 / world as f32);
        self.backend.apply(&mut self.state, params, &self.gathered, rank, weight)?;
        self.since = 0;
        report.synced = true;
        report.entries_sent = entries;
        report.bytes_sent = sent;
        report.bytes_received = self.gathered.total_len() as u64 - sent;
        report.dense_equivalent_bytes = self.n as u64 * 4;
        report.control_bytes += (world * 8) as u64;
        Ok(report)
    }
}

fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected != actual {
        return Err(Error::LengthMismatch { what, expected, actual });
    }
    Ok(())
}
