//! [`SyncGroup`]: the buckets of one rank's model on one backend and one
//! collective, stepped together with one vote and one exchange.

use super::bucket::{Bucket, Retraction};
use super::report::{GroupReport, StepReport};
use super::vote;
use crate::backend::{Backend, HostPeerCheck};
use crate::collective::{Collective, DeviceVote, Gathered};
use crate::config::SyncConfig;
use crate::error::{CollectiveError, Error, FailureCause, Result, WireError};

/// One bucket's inputs to a grouped step: its update and its parameters,
/// borrowed from the caller (on the CPU, any `&[f32]` / `&mut [f32]`: a
/// tensor's storage, an arena slice).
pub struct BucketStep<'a, B: Backend + ?Sized> {
    /// The update this step, `n` elements.
    pub delta: &'a B::Vector,
    /// The parameters, `n` elements, updated in place when the bucket syncs.
    pub params: &'a mut B::Vector,
}

/// One rank's sync engine for a model's buckets (parameter groups): N
/// buckets share one backend, one collective, one vote per step and one
/// exchange for the buckets that sync.
///
/// Each bucket is its own instance of the spec (its accumulator, step and
/// sync counters, [`SyncConfig`]); a bucket syncs when any rank wants it to
/// (triggered or forced). Conservation, bitwise-identical replicas and
/// the packed bytes hold per bucket exactly as for a [`crate::SparseSync`]
/// of that bucket alone.
///
/// Every rank of the group must add the same buckets in the same order and
/// call [`SyncGroup::step`] the same number of times. Whatever happens on a
/// rank inside a step, it makes the same collective calls as its peers:
/// local failures are voted, so every rank fails the same step.
pub struct SyncGroup<B: Backend, C: Collective> {
    pub(super) backend: B,
    pub(super) collective: C,
    pub(super) buckets: Vec<Bucket<B::State>>,
    reports: Vec<StepReport>,
    /// The vote (see `vote`): one word per bucket, then one per rank.
    vote: Vec<u32>,
    lens: Vec<u64>,
    /// This rank's payload when two or more buckets sync (their packed
    /// buffers back to back); a single syncing bucket is sent from the
    /// backend's staging without a copy.
    send: Vec<u8>,
    gathered: Gathered,
    /// Buckets syncing this step, ascending.
    syncing: Vec<usize>,
    /// Set when a step failed on this rank after the exchange began changing
    /// parameters: from then on this rank votes [`FailureCause::Diverged`].
    pub(super) diverged: bool,
}

impl<B: Backend, C: Collective> SyncGroup<B, C> {
    /// A group with no buckets yet on `backend` and `collective` (pass
    /// `&backend` or an `Arc` to share a backend with other engines).
    pub fn new(backend: B, collective: C) -> Result<Self> {
        let world = collective.world_size();
        if world == 0 || collective.rank() >= world {
            return Err(CollectiveError::InvalidRank { rank: collective.rank(), world }.into());
        }
        Ok(SyncGroup {
            backend,
            collective,
            buckets: Vec::new(),
            reports: Vec::new(),
            vote: vec![0; world],
            lens: Vec::with_capacity(world),
            send: Vec::new(),
            gathered: Gathered::new(),
            syncing: Vec::new(),
            diverged: false,
        })
    }

    /// Adds a bucket of `n` elements under `config` (validated) and returns
    /// its index (0, 1, ...: the order of [`SyncGroup::step`]'s inputs).
    /// Allocates the bucket's device state and grows the exchange's buffers
    /// to the new worst case, so that steps allocate nothing. Every rank must
    /// add the same buckets in the same order, before its first step.
    pub fn add_bucket(&mut self, n: usize, config: SyncConfig) -> Result<usize> {
        config.validate()?;
        if n == 0 {
            return Err(Error::InvalidConfig { field: "n", reason: "must be >= 1".into() });
        }
        let state = self.backend.create_state(n, &config)?;
        self.buckets.push(Bucket::new(n, config, state, self.collective.world_size()));
        self.reports.push(StepReport::default());
        self.syncing.reserve(self.buckets.len());
        self.vote.resize(self.buckets.len() + self.collective.world_size(), 0);
        let max_payload = self.max_payload_all();
        let world = self.collective.world_size();
        self.collective.reserve_payload(max_payload);
        self.gathered.reserve_total(max_payload.saturating_mul(world), world);
        if self.buckets.len() > 1 {
            self.send.reserve(max_payload.saturating_sub(self.send.len()));
        }
        Ok(self.buckets.len() - 1)
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }
    /// The collective.
    pub fn collective(&self) -> &C {
        &self.collective
    }
    /// Number of buckets.
    pub fn num_buckets(&self) -> usize {
        self.buckets.len()
    }
    /// Bucket `b`'s configuration (`None` past the last bucket).
    pub fn config(&self, b: usize) -> Option<&SyncConfig> {
        self.buckets.get(b).map(|k| &k.config)
    }
    /// Bucket `b`'s length (`None` past the last bucket).
    pub fn bucket_len(&self, b: usize) -> Option<usize> {
        self.buckets.get(b).map(|k| k.n)
    }
    /// Steps completed (the same for every bucket).
    pub fn steps(&self) -> u64 {
        self.buckets.first().map_or(0, |k| k.t)
    }
    /// Bucket `b`'s steps since its last sync (`None` past the last bucket).
    pub fn steps_since_sync(&self, b: usize) -> Option<u64> {
        self.buckets.get(b).map(|k| k.since)
    }
    /// The threshold bucket `b` tests its significance against at its next
    /// step (`None` past the last bucket): the warm-up ramp, then
    /// `threshold`, or with a [`SyncConfig::budget`] the steered value.
    /// The same bits on every rank of the group.
    pub fn next_threshold(&self, b: usize) -> Option<f64> {
        self.buckets.get(b).map(|k| k.tau(k.t + 1))
    }
    /// Each bucket's report for the last successful step, by bucket.
    pub fn reports(&self) -> &[StepReport] {
        &self.reports
    }
    /// True when a step failed on this rank after parameters began to change
    /// (an apply failed): every later step fails with
    /// [`FailureCause::Diverged`] on every rank until [`SyncGroup::restore`].
    pub fn is_diverged(&self) -> bool {
        self.diverged
    }

    /// Copies bucket `b`'s committed accumulator to `dst`.
    pub fn read_accumulator(&self, b: usize, dst: &mut [f32]) -> Result<()> {
        let bucket = self.bucket(b)?;
        check_len("accumulator", bucket.n, dst.len())?;
        self.backend.read_accumulator(&bucket.state, dst)
    }

    pub(super) fn bucket(&self, b: usize) -> Result<&Bucket<B::State>> {
        let count = self.buckets.len();
        self.buckets.get(b).ok_or(Error::LengthMismatch {
            what: "bucket index (must be < buckets)",
            expected: count,
            actual: b,
        })
    }

    fn max_payload_all(&self) -> usize {
        self.buckets.iter().map(|b| b.max_bytes).fold(0usize, usize::saturating_add)
    }

    /// Runs one step of the spec for every bucket: `steps[b]` is bucket
    /// `b`'s update and parameters. Accumulates every bucket, then one vote
    /// decides for all of them; the buckets that sync are packed, exchanged
    /// in one count exchange and one byte exchange, validated, and applied.
    /// Per-bucket reports are in [`SyncGroup::reports`].
    ///
    /// Errors, the same on every rank for the same step:
    /// - a failure on any rank before the vote (non-finite input,
    ///   [`Error::NonFinite`]; a wrong length or wrong number of inputs,
    ///   a backend failure, a diverged rank: [`Error::RankFailed`] naming
    ///   each rank) fails the step on every rank; no accumulator, parameter
    ///   or counter changes anywhere, and the next step runs normally;
    /// - a select-and-pack failure on any rank ([`Error::RankFailed`],
    ///   [`FailureCause::Backend`]), a peer announcing a buffer longer than
    ///   its bucket's rule allows, or an invalid peer buffer
    ///   ([`Error::InvalidPeerBuffer`]) fail the step on every rank after the
    ///   accumulation was committed: nothing is lost (it stays in the
    ///   accumulators and is sent at a later sync), the parameters are
    ///   unchanged, and the step counts as taken without a sync.
    ///
    /// - an exchange in device memory that the backend validates
    ///   asynchronously ([`Backend::validate_peers`]; the CUDA backend, so
    ///   that a step reads back one small block) returns `Ok` even with an
    ///   invalid peer buffer: its apply kernels change nothing on any rank,
    ///   and the next step, before its vote and before anything of it is
    ///   taken, returns the [`Error::InvalidPeerBuffer`] with the synced
    ///   step turned into one taken without a sync, as above (its report
    ///   from then said `synced`). [`SyncGroup::settle`] asks at once.
    ///
    /// A collective failure (a timeout, a broken group) returns at once on
    /// the rank that sees it; a timeout during the exchange keeps the
    /// committed accumulation as above. A backend failure while applying
    /// may leave this rank's parameters partly updated: it is returned here,
    /// and every later step fails on every rank with
    /// [`FailureCause::Diverged`] until the group is restored.
    pub fn step(&mut self, steps: &mut [BucketStep<'_, B>]) -> Result<GroupReport> {
        let world = self.collective.world_size();
        let rank = self.collective.rank();
        let nb = self.buckets.len();

        // 1. Local work. Nothing below returns before the vote: a failure is
        // recorded and voted, so every rank leaves this step together. The
        // one exception is the last sync's deferred verdict, the same on
        // every rank (read with this step's status where the backend can).
        //
        // 2. Vote. With one bucket whose backend and collective share
        // device memory, the vote and the count exchange run there and the
        // step reads back one block (`vote_on_device`).
        let voted_on_device = self.votes_on_device();
        let local = if voted_on_device {
            self.vote_on_device(steps)?
        } else {
            let local = self.accumulate_all(steps);
            self.settle_deferred()?;
            self.vote.iter_mut().for_each(|v| *v = 0);
            match &local {
                Some((cause, bucket, _)) => self.vote[nb + rank] = vote::encode(*cause, *bucket),
                None => {
                    for (b, bucket) in self.buckets.iter().enumerate() {
                        let forced = bucket.since + 1 >= bucket.config.max_accumulation_steps;
                        self.vote[b] = u32::from(bucket.status.triggered != 0 || forced);
                    }
                }
            }
            self.collective.all_reduce_max(&mut self.vote)?;
            local
        };
        if self.vote[nb..].iter().any(|&w| w != 0) {
            return Err(vote::failure_error(&self.vote[nb..], local.and_then(|(_, _, e)| e)));
        }

        // 3. Commit every bucket's accumulation and count the step. A failed
        // commit leaves this rank unlike its peers (diverged); if the step
        // syncs it is announced in the count exchange like a failed pack, so
        // every rank fails this step, and later steps vote it.
        let control_bytes = (self.vote.len() * 4) as u64;
        self.syncing.clear();
        let mut commit_failure = None;
        for (b, bucket) in self.buckets.iter_mut().enumerate() {
            if commit_failure.is_none() {
                if let Err(e) = self.backend.commit_accumulate(&mut bucket.state) {
                    self.diverged = true;
                    commit_failure = Some((b, e));
                }
            }
            bucket.t += 1;
            bucket.since += 1;
            let forced = bucket.since >= bucket.config.max_accumulation_steps;
            self.reports[b] = StepReport {
                step: bucket.t,
                significance: bucket.status.significance,
                threshold: bucket.status.tau,
                triggered: bucket.status.triggered != 0,
                forced,
                control_bytes: if b == 0 { control_bytes } else { 0 },
                ..StepReport::default()
            };
            if self.vote[b] != 0 {
                self.syncing.push(b);
            }
        }
        let mut report = GroupReport { step: self.steps(), control_bytes, ..GroupReport::default() };
        if self.syncing.is_empty() {
            return match commit_failure {
                Some((_, e)) => Err(e),
                None => {
                    self.steer_thresholds(world);
                    Ok(report)
                }
            };
        }

        // 4. Pack, exchange, validate, apply.
        self.exchange(world, commit_failure, voted_on_device)?;
        self.reports[0].control_bytes += (world * 8) as u64;
        report.control_bytes += (world * 8) as u64;
        if let Err(e) = self.apply_all(steps, rank, world) {
            self.diverged = true;
            return Err(e);
        }
        for &b in &self.syncing {
            let r = &mut self.reports[b];
            let bucket = &mut self.buckets[b];
            bucket.retraction = Some(Retraction { since: bucket.since, budget: bucket.budget });
            bucket.since = 0;
            r.synced = true;
            r.entries_sent = bucket.entries_sent;
            r.bytes_sent = bucket.bytes_sent;
            r.bytes_received = bucket.bytes_received;
            r.dense_equivalent_bytes = bucket.n as u64 * 4;
            report.buckets_synced += 1;
            report.bytes_sent += r.bytes_sent;
            report.bytes_received += r.bytes_received;
        }
        self.steer_thresholds(world);
        Ok(report)
    }

    /// Settles the last sync: every bucket that synced in it asks the
    /// backend for the verdicts of an exchange validated asynchronously
    /// ([`Backend::deferred_verdict`]). For an invalid one the step becomes
    /// one taken without a sync, as if the error had been returned then
    /// (its `since` counter and budget controller restored; the apply
    /// kernels changed nothing), and the first error, by bucket, is
    /// returned. Each sync is settled once.
    ///
    /// [`SyncGroup::step`] does this before its vote, so an invalid buffer
    /// in a device exchange is reported by the next step; call it after
    /// the last step of a run to learn that step's verdict. Every rank gets
    /// the same answer (they validated the same bytes).
    pub fn settle(&mut self) -> Result<()> {
        self.settle_deferred()
    }

    fn settle_deferred(&mut self) -> Result<()> {
        let mut first = None;
        for bucket in &mut self.buckets {
            let Some(retraction) = bucket.retraction.take() else { continue };
            if let Err(e) = self.backend.deferred_verdict(&bucket.state) {
                bucket.since = retraction.since;
                bucket.budget = retraction.budget;
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// After a successful step only (a failed one changes no controller):
    /// each budgeted bucket's controller sees the vote's verdict and the
    /// exchanged lengths, which every rank holds identically.
    fn steer_thresholds(&mut self, world: usize) {
        for (b, bucket) in self.buckets.iter_mut().enumerate() {
            bucket.steer(self.vote[b] != 0, world);
        }
    }

    /// Whether this step votes in device memory: one bucket, and a
    /// collective of the backend's device memory.
    fn votes_on_device(&self) -> bool {
        self.buckets.len() == 1
            && self.backend.device_memory().is_some_and(|m| self.collective.device_memory() == Some(m))
    }

    /// Step parts 1 and 2 in device memory, for one bucket: the host's
    /// checks, the fused pass and this rank's vote words
    /// ([`Backend::accumulate_and_vote`]), the vote's max over the ranks
    /// in place, the pack behind it, every rank's packed length gathered
    /// there too, and one readback of all of it with the status
    /// ([`Backend::read_device_vote`]), into `vote` and `lens`. Then the
    /// last sync's deferred verdicts, which came with it. Returns this
    /// rank's own failure, as `accumulate_all` does; a backend or
    /// collective error returns at once (a rank whose device fails cannot
    /// take part; its peers' next collective call times out).
    fn vote_on_device(&mut self, steps: &[BucketStep<'_, B>]) -> Result<LocalFailure> {
        let (world, rank) = (self.collective.world_size(), self.collective.rank());
        let bucket = &mut self.buckets[0];
        let local: LocalFailure = if self.diverged {
            Some((FailureCause::Diverged, None, None))
        } else if steps.len() != 1 {
            let err = Error::LengthMismatch { what: "bucket steps", expected: 1, actual: steps.len() };
            Some((FailureCause::LengthMismatch, None, Some(err)))
        } else {
            check_len("delta", bucket.n, self.backend.buffer_len(steps[0].delta))
                .and_then(|()| check_len("params", bucket.n, self.backend.buffer_len(steps[0].params)))
                .err()
                .map(|e| (FailureCause::LengthMismatch, Some(0), Some(e)))
        };
        let step = match &local {
            None => Some((steps[0].delta, &*steps[0].params, bucket.tau(bucket.t + 1) as f32)),
            Some(_) => None,
        };
        let device_vote = DeviceVote {
            forced: bucket.since + 1 >= bucket.config.max_accumulation_steps,
            rank,
            world,
            code: local.as_ref().map_or(0, |(cause, b, _)| vote::encode(*cause, *b)),
            nonfinite_code: vote::encode(FailureCause::NonFinite, Some(0)),
        };
        let words = self.backend.accumulate_and_vote(&mut bucket.state, step, device_vote)?;
        // SAFETY: `words` is the backend's control block, device memory of
        // the collective's kind (checked by `votes_on_device`), which only
        // work ordered on the shared stream touches until the readback.
        unsafe { self.collective.all_reduce_max_device(words) }?;
        let lens = self.backend.pack_after_device_vote(&mut bucket.state)?;
        // SAFETY: as above; `send` and `recv` are disjoint words of it.
        unsafe { self.collective.all_gather_u64_device(lens.send, lens.recv) }?;
        self.lens.resize(world, 0);
        let status = self.backend.read_device_vote(&mut bucket.state, &mut self.vote, &mut self.lens)?;
        if local.is_none() {
            bucket.status = status;
        }
        self.settle_deferred()?;
        Ok(local)
    }

    /// Step part 1 for every bucket: checks and the fused pass. Returns the
    /// first failure (cause, bucket, this rank's own error when it has more
    /// to say than the cause) instead of stopping
    /// the step, so that it can be voted.
    fn accumulate_all(&mut self, steps: &[BucketStep<'_, B>]) -> LocalFailure {
        if self.diverged {
            return Some((FailureCause::Diverged, None, None));
        }
        if steps.len() != self.buckets.len() {
            let err = Error::LengthMismatch { what: "bucket steps", expected: self.buckets.len(), actual: steps.len() };
            return Some((FailureCause::LengthMismatch, None, Some(err)));
        }
        for (b, (bucket, step)) in self.buckets.iter_mut().zip(steps).enumerate() {
            let lens = check_len("delta", bucket.n, self.backend.buffer_len(step.delta))
                .and_then(|()| check_len("params", bucket.n, self.backend.buffer_len(step.params)));
            if let Err(e) = lens {
                return Some((FailureCause::LengthMismatch, Some(b), Some(e)));
            }
            let tau = bucket.tau(bucket.t + 1) as f32;
            match self.backend.accumulate(&mut bucket.state, step.delta, step.params, tau) {
                Ok(status) if status.nonfinite > 0 => return Some((FailureCause::NonFinite, Some(b), None)),
                Ok(status) => bucket.status = status,
                Err(e) => return Some((FailureCause::Backend, Some(b), Some(e))),
            }
        }
        None
    }

    /// Step part 2: select and pack the syncing buckets (unless this rank
    /// already failed, `failed_before`), exchange their lengths and bytes,
    /// and check every rank's buffers. On success each
    /// syncing bucket's validated rank buffers are ready for `apply_all`
    /// (in the group's `gathered` for a single syncing bucket, else in the
    /// bucket's own).
    fn exchange(&mut self, world: usize, failed_before: Option<(usize, Error)>, counted: bool) -> Result<()> {
        let SyncGroup { backend, collective, buckets, lens, send, gathered, syncing, .. } = self;
        let single = syncing.len() == 1;
        let limit = syncing.iter().map(|&b| buckets[b].max_bytes as u64).fold(0u64, u64::saturating_add);

        if single && backend.device_memory().is_some_and(|m| collective.device_memory() == Some(m)) {
            let bucket = &mut buckets[syncing[0]];
            let ctx = DeviceExchange { bucket_index: syncing[0], limit, counted };
            return exchange_on_device(backend, collective, bucket, ctx, lens, gathered, failed_before);
        }

        // Pack. A failure is announced in place of the length, so that every
        // rank learns it from the count exchange and none enters the byte
        // exchange.
        send.clear();
        let mut failed = failed_before;
        let mut single_packed: &[u8] = &[];
        if failed.is_some() {
            // Nothing to pack: announce the failure below.
        } else if single {
            let bucket = &mut buckets[syncing[0]];
            match backend.select_pack(&mut bucket.state) {
                Ok(packed) => single_packed = packed,
                Err(e) => failed = Some((syncing[0], e)),
            }
        } else {
            for &b in syncing.iter() {
                match backend.select_pack(&mut buckets[b].state) {
                    Ok(packed) => send.extend_from_slice(packed),
                    Err(e) => {
                        failed = Some((b, e));
                        break;
                    }
                }
            }
        }
        let payload: &[u8] = if single { single_packed } else { &send[..] };
        let announce = match &failed {
            Some((b, _)) => vote::failed_pack_len(*b),
            None => payload.len() as u64,
        };
        collective.all_gather_u64(announce, lens)?;
        if let Some(err) = length_verdict(lens, limit, failed.map(|(_, e)| e)) {
            return Err(err);
        }
        collective.all_gather_bytes(payload, lens, gathered)?;

        // Split (several buckets) and validate every rank's buffers before
        // anything is applied: all ranks check the same bytes, so all reach
        // the same verdict.
        let own = collective.rank();
        if single {
            let bucket = &mut buckets[syncing[0]];
            let host = HostPeerCheck::new(&mut bucket.validator, bucket.n as u64, bucket.config.wire_dtype);
            backend.validate_peers(&mut bucket.state, gathered, host)?;
            bucket.note_exchange(gathered, own, None)?;
            return Ok(());
        }
        for &b in syncing.iter() {
            buckets[b].gathered.clear();
        }
        for r in 0..world {
            let bytes = gathered.rank_bytes(r);
            let mut at = 0usize;
            for &b in syncing.iter() {
                let bucket = &mut buckets[b];
                let rest = &bytes[at..];
                let len = bucket
                    .validator
                    .leading_len(rest)
                    .map_err(|source| Error::InvalidPeerBuffer { rank: r, source })?;
                let len = usize::try_from(len).ok().filter(|&l| l <= rest.len()).ok_or(Error::InvalidPeerBuffer {
                    rank: r,
                    source: WireError::Truncated { needed: len, have: rest.len() as u64 },
                })?;
                bucket.gathered.push_rank(&rest[..len]);
                at += len;
            }
            if at != bytes.len() {
                let source = WireError::Oversized { expected: at as u64, have: bytes.len() as u64 };
                return Err(Error::InvalidPeerBuffer { rank: r, source });
            }
        }
        // Every split is known good: now each bucket's buffers, bucket by
        // bucket (the same order on every rank, so every rank names the same
        // first failure).
        for &b in syncing.iter() {
            let bucket = &mut buckets[b];
            let host = HostPeerCheck::new(&mut bucket.validator, bucket.n as u64, bucket.config.wire_dtype);
            backend.validate_peers(&mut bucket.state, &bucket.gathered, host)?;
        }
        for &b in syncing.iter() {
            let bucket = &mut buckets[b];
            let gathered = std::mem::take(&mut bucket.gathered);
            let noted = bucket.note_exchange(&gathered, own, None);
            bucket.gathered = gathered;
            noted?;
        }
        Ok(())
    }

    /// Step part 3: apply every syncing bucket's validated buffers.
    fn apply_all(&mut self, steps: &mut [BucketStep<'_, B>], rank: usize, world: usize) -> Result<()> {
        let single = self.syncing.len() == 1;
        for &b in &self.syncing {
            let bucket = &mut self.buckets[b];
            let weight = bucket.config.apply_weight.unwrap_or(1.0 / world as f32);
            let gathered = if single { &self.gathered } else { &bucket.gathered };
            self.backend.apply(&mut bucket.state, steps[b].params, gathered, rank, weight)?;
        }
        Ok(())
    }
}

/// What [`exchange_on_device`] needs to know besides the buffers.
struct DeviceExchange {
    /// The syncing bucket's index (for a failure announcement).
    bucket_index: usize,
    /// The most bytes any rank may announce.
    limit: u64,
    /// Whether the lengths were already exchanged in device memory with the
    /// vote (`lens` holds them and the bucket is packed).
    counted: bool,
}

/// [`SyncGroup`]'s exchange of one syncing bucket in device memory
/// ([`crate::collective::device`]): the backend packs on its device, the
/// lengths are exchanged as on the host path (with the same failure and
/// bound verdicts) unless the vote in device memory already did, the
/// collective gathers every rank's bytes from the packed buffer straight
/// into the backend's receive memory, and the backend validates them there.
/// `gathered` is left holding the offsets.
fn exchange_on_device<B: Backend, C: Collective>(
    backend: &B,
    collective: &mut C,
    bucket: &mut Bucket<B::State>,
    ctx: DeviceExchange,
    lens: &mut Vec<u64>,
    gathered: &mut Gathered,
    failed_before: Option<(usize, Error)>,
) -> Result<()> {
    let mut failed = failed_before;
    if ctx.counted {
        // Every rank's length is known and every rank has packed: a local
        // failure now (a commit) can no longer be announced, so this rank
        // leaves and its peers' exchange times out.
        if let Some((_, e)) = failed {
            return Err(e);
        }
    }
    let mut packed = None;
    if failed.is_none() {
        match backend.pack_on_device(&mut bucket.state) {
            Ok(p) => packed = Some(p),
            Err(e) if ctx.counted => return Err(e),
            Err(e) => failed = Some((ctx.bucket_index, e)),
        }
    }
    if !ctx.counted {
        let announce = match (&failed, &packed) {
            (Some((b, _)), _) => vote::failed_pack_len(*b),
            (None, Some(p)) => p.bytes.len as u64,
            (None, None) => unreachable!("no failure means a packed buffer"),
        };
        collective.all_gather_u64(announce, lens)?;
    }
    if let Some(err) = length_verdict(lens, ctx.limit, failed.map(|(_, e)| e)) {
        return Err(err);
    }
    let packed = packed.expect("no rank failed, this one included");
    if lens.get(collective.rank()) != Some(&(packed.bytes.len as u64)) {
        return Err(crate::BackendError::Driver {
            backend: "device exchange",
            call: "pack_on_device",
            message: format!(
                "packed {} bytes, the count exchange says {:?}",
                packed.bytes.len,
                lens.get(collective.rank())
            ),
        }
        .into());
    }
    gathered.set_on_device(lens)?;
    let recv = backend.receive_on_device(&mut bucket.state, gathered.total_len())?;
    // SAFETY: `packed` is the backend's packed buffer and `recv` its receive
    // memory, disjoint live allocations of the collective's device memory
    // (checked equal above) that nothing else touches during the call.
    unsafe { collective.all_gather_device(packed.bytes, lens, recv) }?;
    let host = HostPeerCheck::new(&mut bucket.validator, bucket.n as u64, bucket.config.wire_dtype);
    backend.validate_peers(&mut bucket.state, gathered, host)?;
    bucket.note_exchange(gathered, collective.rank(), Some(packed.entries))
}

/// What the count exchange says before any byte moves: a rank whose pack
/// failed (every rank returns [`Error::RankFailed`] naming it, this rank
/// with its own error), or a rank announcing more than the syncing buckets'
/// worst case (`limit`), which would otherwise size the receive buffers
/// ([`Error::InvalidPeerBuffer`] naming it). `None`: the exchange can go on.
fn length_verdict(lens: &[u64], limit: u64, local: Option<Error>) -> Option<Error> {
    let failures: Vec<crate::error::RankFailure> = lens
        .iter()
        .enumerate()
        .filter_map(|(r, &len)| {
            vote::failed_pack_bucket(len).map(|b| crate::error::RankFailure {
                rank: r,
                bucket: Some(b),
                cause: FailureCause::Backend,
            })
        })
        .collect();
    if !failures.is_empty() {
        return Some(Error::RankFailed { failures, local: local.map(Box::new) });
    }
    let (rank, &announced) = lens.iter().enumerate().find(|&(_, &len)| len > limit)?;
    Some(Error::InvalidPeerBuffer { rank, source: WireError::AnnouncedTooLarge { announced, limit } })
}

/// This rank's own failure before the vote: the cause, the bucket, and
/// this rank's error when it has more to say than the cause.
type LocalFailure = Option<(FailureCause, Option<usize>, Option<Error>)>;

pub(super) fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected != actual {
        return Err(Error::LengthMismatch { what, expected, actual });
    }
    Ok(())
}
