//! [`LocalCollective`]: W ranks as threads of one process over shared memory.
//!
//! Every operation is one *round* of a two-phase barrier guarded by one mutex
//! and one condition variable:
//!
//! 1. **Filling.** Each rank deposits its contribution and marks itself
//!    arrived. The last rank to arrive completes the round and switches the
//!    group to draining.
//! 2. **Draining.** Each rank reads the result and marks itself drained. The
//!    last rank to drain resets the group for the next round.
//!
//! A rank that finished draining and enters the next operation waits until
//! every peer has drained, so a result is never overwritten while someone
//! still reads it. Byte payloads live in per-rank slots behind their own
//! `RwLock`s: ranks copy in and out concurrently, outside the round mutex,
//! which the protocol makes safe (slots are written only while filling and
//! read only while draining).
//!
//! Every wait is a `Condvar::wait_timeout` against a deadline. When a deadline
//! passes, the waiting rank breaks the group and returns
//! [`Error::Timeout`] naming the ranks that had not arrived; peers waiting in
//! the same round return the same error, and every later call on any handle
//! returns [`CollectiveError::Broken`] at once. Dropping a handle also breaks
//! the group, so peers of a rank that panicked or returned early fail fast
//! instead of waiting out the timeout.

use super::{Collective, DeviceBytes, DeviceMemory, Gathered};
use crate::error::{CollectiveError, Error, Result};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

/// Longest single `wait_timeout`, used when the deadline cannot be
/// represented (a timeout so large that `now + timeout` overflows).
const MAX_WAIT_SLICE: Duration = Duration::from_secs(3600);

/// The operations a round can carry; ranks in one round must agree on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    AllReduceMax,
    AllGatherU64,
    AllGatherBytes,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::AllReduceMax => "all_reduce_max",
            Op::AllGatherU64 => "all_gather_u64",
            Op::AllGatherBytes => "all_gather_bytes",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Filling,
    Draining,
}

/// Why the group is broken, kept so that ranks waiting in the round that
/// failed report the failure itself rather than a generic "broken".
#[derive(Debug, Clone)]
struct Failure {
    /// Round in which it happened.
    round: u64,
    /// Human-readable description, returned by later calls as `Broken`.
    reason: String,
    /// Set when the failure was a timeout: `(op, missing ranks, timeout)`.
    timeout: Option<(&'static str, Vec<usize>, Duration)>,
}

impl Failure {
    /// The error a rank sees: the timeout itself for a rank that was waiting
    /// in the failed round, `Broken` for everyone else.
    fn error_for(&self, round: u64) -> Error {
        match &self.timeout {
            Some((op, missing, after)) if round == self.round => {
                Error::Timeout { op, missing: missing.clone(), after: *after }
            }
            _ => CollectiveError::Broken { reason: self.reason.clone() }.into(),
        }
    }
}

/// Mutable group state, behind the round mutex.
#[derive(Debug)]
struct Round {
    phase: Phase,
    /// Counts completed rounds; identifies the round a rank is waiting in.
    number: u64,
    /// While filling: ranks that arrived. While draining: ranks that have not
    /// yet read the result.
    present: Vec<bool>,
    /// Number of `true` entries in `present`.
    present_count: usize,
    /// Operation of the round in progress (set by the first rank to arrive).
    op: Option<Op>,
    /// All-reduce accumulator (reused; capacity survives rounds).
    reduce: Vec<u32>,
    /// One value per rank for `all_gather_u64`.
    gathered_u64: Vec<u64>,
    /// Send lengths agreed for `all_gather_bytes`, as passed by the first rank.
    lens: Vec<u64>,
    failure: Option<Failure>,
}

#[derive(Debug)]
struct Shared {
    world: usize,
    timeout: Duration,
    round: Mutex<Round>,
    changed: Condvar,
    /// Per-rank byte payloads of `all_gather_bytes`.
    slots: Vec<RwLock<Vec<u8>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Round> {
        // No code panics while holding the lock, so a poisoned state is still
        // consistent; recover it instead of propagating a panic.
        self.round.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the group broken (first failure wins) and wakes every waiter.
    fn break_group(&self, g: &mut Round, reason: String, timeout: Option<(&'static str, Vec<usize>, Duration)>) {
        if g.failure.is_none() {
            g.failure = Some(Failure { round: g.number, reason, timeout });
        }
        self.changed.notify_all();
    }

    /// Waits on the condition variable until `deadline`; returns the guard and
    /// whether the deadline has passed.
    fn wait<'a>(&self, g: MutexGuard<'a, Round>, deadline: Option<Instant>) -> (MutexGuard<'a, Round>, bool) {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => MAX_WAIT_SLICE,
        };
        if deadline.is_some() && slice.is_zero() {
            return (g, true);
        }
        let (g, _) = self.changed.wait_timeout(g, slice).unwrap_or_else(|e| e.into_inner());
        let expired = deadline.is_some_and(|d| Instant::now() >= d);
        (g, expired)
    }
}

/// One rank's handle on a group of W ranks that run as threads of one process
/// and exchange data through shared memory; the embedded default collective.
///
/// Create all handles at once with [`LocalCollective::group`] and move each
/// into its rank's thread. Every blocking call returns within the group's
/// timeout; a rank that does not arrive makes the waiting ranks return
/// [`Error::Timeout`] naming it. After any failure (timeout, mismatched
/// arguments, a dropped handle) the group is broken: every later call on any
/// handle returns [`CollectiveError::Broken`] immediately. Re-create the group
/// to continue.
///
/// After the first call of each operation (which sizes the reusable slots),
/// calls do not allocate as long as payload sizes do not grow.
#[derive(Debug)]
pub struct LocalCollective {
    shared: Arc<Shared>,
    rank: usize,
    /// `[8; world]`: the lengths of a count exchange in device memory.
    eights: Vec<u64>,
}

impl LocalCollective {
    /// Creates a group of `world` ranks whose blocking calls give up after
    /// `timeout`, returning one handle per rank (index = rank).
    ///
    /// Errors: `world == 0` is [`CollectiveError::InvalidRank`]; a zero
    /// `timeout` is [`Error::InvalidConfig`] (no call could ever wait).
    pub fn group(world: usize, timeout: Duration) -> Result<Vec<LocalCollective>> {
        if world == 0 {
            return Err(CollectiveError::InvalidRank { rank: 0, world }.into());
        }
        if timeout.is_zero() {
            return Err(Error::InvalidConfig { field: "timeout", reason: "must be > 0".into() });
        }
        let shared = Arc::new(Shared {
            world,
            timeout,
            round: Mutex::new(Round {
                phase: Phase::Filling,
                number: 0,
                present: vec![false; world],
                present_count: 0,
                op: None,
                reduce: Vec::new(),
                gathered_u64: vec![0; world],
                lens: Vec::with_capacity(world),
                failure: None,
            }),
            changed: Condvar::new(),
            slots: (0..world).map(|_| RwLock::new(Vec::new())).collect(),
        });
        Ok((0..world)
            .map(|rank| LocalCollective { shared: Arc::clone(&shared), rank, eights: vec![8; world] })
            .collect())
    }

    /// Whether an earlier failure broke the group (every call would fail).
    pub fn is_broken(&self) -> bool {
        self.shared.lock().failure.is_some()
    }

    fn deadline(&self) -> Option<Instant> {
        Instant::now().checked_add(self.shared.timeout)
    }

    /// Waits until the group is filling (every peer has read the previous
    /// result), then checks that this rank's operation matches the round's.
    /// Returns the guard and whether this rank is the first of the round.
    fn enter(&self, op: Op, deadline: Option<Instant>) -> Result<(MutexGuard<'_, Round>, bool)> {
        let shared = &*self.shared;
        let mut g = shared.lock();
        loop {
            if let Some(f) = &g.failure {
                return Err(f.error_for(u64::MAX));
            }
            if g.phase == Phase::Filling {
                break;
            }
            let expired;
            (g, expired) = shared.wait(g, deadline);
            if expired && g.phase == Phase::Draining && g.failure.is_none() {
                let missing = ranks_where(&g.present, true);
                return Err(self.time_out(&mut g, op, missing));
            }
        }
        match g.op {
            None => {
                g.op = Some(op);
                Ok((g, true))
            }
            Some(current) if current == op => Ok((g, false)),
            Some(current) => {
                let err = CollectiveError::Mismatched { rank: self.rank, expected: current.name(), found: op.name() };
                Err(self.fail(&mut g, err.into()))
            }
        }
    }

    /// Marks this rank arrived and waits until every rank has (the round is
    /// then draining). Returns the guard and the round number.
    fn arrive<'a>(
        &'a self,
        mut g: MutexGuard<'a, Round>,
        op: Op,
        deadline: Option<Instant>,
    ) -> Result<MutexGuard<'a, Round>> {
        let shared = &*self.shared;
        if let Some(f) = &g.failure {
            return Err(f.error_for(g.number));
        }
        let round = g.number;
        g.present[self.rank] = true;
        g.present_count += 1;
        if g.present_count == shared.world {
            g.phase = Phase::Draining;
            shared.changed.notify_all();
            return Ok(g);
        }
        loop {
            let expired;
            (g, expired) = shared.wait(g, deadline);
            // Completion wins over a failure recorded after it: the result of
            // a completed round is valid and is read.
            if g.number == round && g.phase == Phase::Draining {
                return Ok(g);
            }
            if let Some(f) = &g.failure {
                return Err(f.error_for(round));
            }
            if expired {
                let missing = ranks_where(&g.present, false);
                return Err(self.time_out(&mut g, op, missing));
            }
        }
    }

    /// Marks this rank as having read the result; the last reader opens the
    /// next round.
    fn depart(&self, mut g: MutexGuard<'_, Round>) {
        g.present[self.rank] = false;
        g.present_count -= 1;
        if g.present_count == 0 {
            g.phase = Phase::Filling;
            g.number += 1;
            g.op = None;
            self.shared.changed.notify_all();
        }
    }

    /// Breaks the group with a timeout naming `missing` and returns the error.
    fn time_out(&self, g: &mut Round, op: Op, missing: Vec<usize>) -> Error {
        let after = self.shared.timeout;
        let reason =
            format!("rank {} timed out after {after:?} in {} waiting for rank(s) {missing:?}", self.rank, op.name());
        let err = Error::Timeout { op: op.name(), missing: missing.clone(), after };
        self.shared.break_group(g, reason, Some((op.name(), missing, after)));
        err
    }

    /// Breaks the group because of `err` on this rank and returns `err`.
    fn fail(&self, g: &mut Round, err: Error) -> Error {
        let reason = format!("rank {}: {err}", self.rank);
        self.shared.break_group(g, reason, None);
        err
    }

    /// Breaks the group because this rank passed arguments that are wrong on
    /// their own (before entering a round), so peers fail at once.
    fn reject(&self, err: Error) -> Error {
        let mut g = self.shared.lock();
        self.fail(&mut g, err)
    }
}

/// Ranks whose flag equals `value`, ascending.
fn ranks_where(flags: &[bool], value: bool) -> Vec<usize> {
    flags.iter().enumerate().filter(|&(_, &f)| f == value).map(|(r, _)| r).collect()
}

impl Collective for LocalCollective {
    fn reserve_payload(&mut self, max_bytes_per_rank: usize) {
        // Only this rank writes its slot; the lock waits out any reader of a
        // round still draining.
        let mut slot = self.shared.slots[self.rank].write().unwrap_or_else(|e| e.into_inner());
        let len = slot.len();
        slot.reserve(max_bytes_per_rank.saturating_sub(len));
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    fn all_reduce_max(&mut self, values: &mut [u32]) -> Result<()> {
        let op = Op::AllReduceMax;
        let deadline = self.deadline();
        let (mut g, first) = self.enter(op, deadline)?;
        if first {
            g.reduce.clear();
            g.reduce.extend_from_slice(values);
        } else if g.reduce.len() != values.len() {
            let err = Error::LengthMismatch {
                what: "all_reduce_max values (differs between ranks)",
                expected: g.reduce.len(),
                actual: values.len(),
            };
            return Err(self.fail(&mut g, err));
        } else {
            g.reduce.iter_mut().zip(values.iter()).for_each(|(acc, &v)| *acc = (*acc).max(v));
        }
        let g = self.arrive(g, op, deadline)?;
        values.copy_from_slice(&g.reduce);
        self.depart(g);
        Ok(())
    }

    fn all_gather_u64(&mut self, value: u64, out: &mut Vec<u64>) -> Result<()> {
        let op = Op::AllGatherU64;
        let deadline = self.deadline();
        let (mut g, _) = self.enter(op, deadline)?;
        g.gathered_u64[self.rank] = value;
        let g = self.arrive(g, op, deadline)?;
        out.clear();
        out.extend_from_slice(&g.gathered_u64);
        self.depart(g);
        Ok(())
    }

    fn all_gather_bytes(&mut self, send: &[u8], lens: &[u64], out: &mut Gathered) -> Result<()> {
        self.gather(send, lens, out)
    }

    /// The CUDA emulation's device memory is this process's memory, which
    /// the threads of a local group share.
    fn device_memory(&self) -> Option<DeviceMemory> {
        Some(DeviceMemory::Emulated)
    }

    unsafe fn all_gather_device(&mut self, send: DeviceBytes, lens: &[u64], recv: DeviceBytes) -> Result<()> {
        // SAFETY: by the caller's contract `send` is `send.len` readable
        // bytes of this process that nothing writes during the call.
        let src = unsafe { std::slice::from_raw_parts(send.ptr as usize as *const u8, send.len) };
        self.gather(src, lens, &mut DeviceSink { recv, at: 0 })
    }

    unsafe fn all_reduce_max_device(&mut self, words: DeviceBytes) -> Result<()> {
        if words.len % 4 != 0 || words.ptr % 4 != 0 {
            return Err(Error::LengthMismatch {
                what: "all_reduce_max_device words (4-byte aligned, a multiple of 4 bytes)",
                expected: words.len.next_multiple_of(4),
                actual: words.len,
            });
        }
        // SAFETY: by the caller's contract `words` is `words.len` bytes of
        // this process, 4-byte aligned (checked), that nothing else touches
        // during the call.
        let values = unsafe { std::slice::from_raw_parts_mut(words.ptr as usize as *mut u32, words.len / 4) };
        self.all_reduce_max(values)
    }

    unsafe fn all_gather_u64_device(&mut self, send: DeviceBytes, recv: DeviceBytes) -> Result<()> {
        if send.len != 8 {
            return Err(Error::LengthMismatch { what: "all_gather_u64_device send", expected: 8, actual: send.len });
        }
        let world = self.eights.len();
        if recv.len != 8 * world {
            return Err(Error::LengthMismatch {
                what: "all_gather_u64_device recv",
                expected: 8 * world,
                actual: recv.len,
            });
        }
        let eights = std::mem::take(&mut self.eights);
        // SAFETY: the caller's contract is `all_gather_device`'s, with the
        // lengths checked above.
        let gathered = unsafe { self.all_gather_device(send, &eights, recv) };
        self.eights = eights;
        gathered
    }
}

/// Where [`LocalCollective::gather`] puts every rank's bytes.
trait GatherSink {
    /// Refuses the agreed lengths (before any rank's bytes move), or makes
    /// room for them.
    fn prepare(&mut self, lens: &[u64]) -> Result<()>;
    /// The next rank's bytes.
    fn push(&mut self, bytes: &[u8]);
}

impl GatherSink for Gathered {
    fn prepare(&mut self, lens: &[u64]) -> Result<()> {
        self.reset(lens)
    }
    fn push(&mut self, bytes: &[u8]) {
        self.push_rank(bytes);
    }
}

/// The emulation's device memory at `recv`, filled from `at` on.
struct DeviceSink {
    recv: DeviceBytes,
    at: usize,
}

impl GatherSink for DeviceSink {
    fn prepare(&mut self, lens: &[u64]) -> Result<()> {
        let total = lens.iter().try_fold(0u64, |a, &l| a.checked_add(l));
        match total {
            Some(t) if t <= self.recv.len as u64 => Ok(()),
            _ => Err(Error::LengthMismatch {
                what: "all_gather_device recv (must hold every rank's bytes)",
                expected: total.map_or(usize::MAX, |t| usize::try_from(t).unwrap_or(usize::MAX)),
                actual: self.recv.len,
            }),
        }
    }
    fn push(&mut self, bytes: &[u8]) {
        // SAFETY: `prepare` proved the lengths' sum fits in `recv`, which by
        // `all_gather_device`'s contract is writable, ours alone, and
        // disjoint from the slots copied from.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), (self.recv.ptr as usize as *mut u8).add(self.at), bytes.len())
        };
        self.at += bytes.len();
    }
}

impl LocalCollective {
    /// The variable-size all-gather behind both byte exchanges: checks the
    /// lengths, lets `sink` refuse them (before any rank's bytes move), and
    /// hands it every rank's bytes in rank order.
    fn gather(&mut self, send: &[u8], lens: &[u64], sink: &mut impl GatherSink) -> Result<()> {
        let op = Op::AllGatherBytes;
        let world = self.shared.world;
        if lens.len() != world {
            let err = Error::LengthMismatch { what: "all_gather_bytes lens", expected: world, actual: lens.len() };
            return Err(self.reject(err));
        }
        let own = lens[self.rank];
        if own != send.len() as u64 {
            let err = Error::LengthMismatch {
                what: "all_gather_bytes send (must equal lens[rank])",
                expected: usize::try_from(own).unwrap_or(usize::MAX),
                actual: send.len(),
            };
            return Err(self.reject(err));
        }
        // Bounds the announced lengths before anything is allocated; a rank
        // that cannot breaks the group, so its peers fail fast too.
        if let Err(err) = sink.prepare(lens) {
            return Err(self.reject(err));
        }
        let deadline = self.deadline();
        let (mut g, first) = self.enter(op, deadline)?;
        if first {
            g.lens.clear();
            g.lens.extend_from_slice(lens);
        } else if g.lens != lens {
            let err = CollectiveError::Mismatched {
                rank: self.rank,
                expected: "all_gather_bytes",
                found: "all_gather_bytes with different lens",
            };
            return Err(self.fail(&mut g, err.into()));
        }
        // While the group is filling nobody reads the slots, and the round
        // cannot complete before this rank arrives: copy outside the lock so
        // ranks fill their slots in parallel.
        drop(g);
        {
            let mut slot = self.shared.slots[self.rank].write().unwrap_or_else(|e| e.into_inner());
            slot.clear();
            slot.extend_from_slice(send);
        }
        let g = self.shared.lock();
        let g = self.arrive(g, op, deadline)?;
        // Draining: nobody writes the slots until every rank has departed.
        drop(g);
        for slot in &self.shared.slots {
            sink.push(&slot.read().unwrap_or_else(|e| e.into_inner()));
        }
        self.depart(self.shared.lock());
        Ok(())
    }
}

impl Drop for LocalCollective {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        if g.failure.is_none() && self.shared.world > 1 {
            let reason = format!("rank {} left the group (its handle was dropped)", self.rank);
            self.shared.break_group(&mut g, reason, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    const LONG: Duration = Duration::from_secs(30);

    /// Runs `f(handle)` for every rank on its own thread; results in rank order.
    fn on_ranks<R: Send>(world: usize, timeout: Duration, f: impl Fn(LocalCollective) -> R + Sync) -> Vec<R> {
        let handles = LocalCollective::group(world, timeout).unwrap();
        thread::scope(|s| {
            let joins: Vec<_> = handles.into_iter().map(|h| s.spawn(|| f(h))).collect();
            joins.into_iter().map(|j| j.join().unwrap()).collect()
        })
    }

    fn is_broken(e: &Error) -> bool {
        matches!(e, Error::Collective(CollectiveError::Broken { .. }))
    }

    #[test]
    fn handles_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<LocalCollective>();
    }

    #[test]
    fn rejects_empty_group_and_zero_timeout() {
        assert!(matches!(
            LocalCollective::group(0, LONG),
            Err(Error::Collective(CollectiveError::InvalidRank { world: 0, .. }))
        ));
        assert!(matches!(
            LocalCollective::group(2, Duration::ZERO),
            Err(Error::InvalidConfig { field: "timeout", .. })
        ));
    }

    #[test]
    fn single_rank_group_is_identity() {
        let mut h = LocalCollective::group(1, LONG).unwrap().pop().unwrap();
        let mut v = [3, 1, 4];
        h.all_reduce_max(&mut v).unwrap();
        assert_eq!(v, [3, 1, 4]);
        let mut out = Vec::new();
        h.all_gather_u64(7, &mut out).unwrap();
        assert_eq!(out, [7]);
        let mut g = Gathered::new();
        h.all_gather_bytes(b"abcd", &[4], &mut g).unwrap();
        assert_eq!(g.rank_bytes(0), b"abcd");
    }

    #[test]
    fn reduce_and_gathers_combine_every_rank() {
        let results = on_ranks(4, LONG, |mut h| {
            let r = h.rank() as u32;
            let mut v = [r, 10 - r, u32::from(r == 2)];
            h.all_reduce_max(&mut v).unwrap();
            let mut counts = Vec::new();
            h.all_gather_u64(u64::from(r) * 3, &mut counts).unwrap();
            let send = vec![r as u8; r as usize * 5];
            let mut lens = Vec::new();
            h.all_gather_u64(send.len() as u64, &mut lens).unwrap();
            let mut g = Gathered::new();
            h.all_gather_bytes(&send, &lens, &mut g).unwrap();
            (v, counts, g)
        });
        for (v, counts, g) in results {
            assert_eq!(v, [3, 10, 1]);
            assert_eq!(counts, [0, 3, 6, 9]);
            assert_eq!(g.ranks(), 4);
            for r in 0..4 {
                assert_eq!(g.rank_bytes(r), vec![r as u8; r * 5].as_slice());
            }
            assert_eq!(g.total_len(), 30);
        }
    }

    #[test]
    fn timeout_names_the_missing_rank_and_breaks_the_group() {
        let timeout = Duration::from_millis(200);
        let mut handles = LocalCollective::group(3, timeout).unwrap();
        let mut late = handles.pop().unwrap(); // rank 2 never calls until after
        let outcomes: Vec<(Error, Duration)> = thread::scope(|s| {
            let joins: Vec<_> = handles
                .iter_mut()
                .map(|h| {
                    s.spawn(move || {
                        let start = Instant::now();
                        let err = h.all_reduce_max(&mut [1, 2]).unwrap_err();
                        (err, start.elapsed())
                    })
                })
                .collect();
            joins.into_iter().map(|j| j.join().unwrap()).collect()
        });
        // The first deadline to pass fails the round for every rank in it,
        // so only the longest wait is bounded below by the timeout.
        assert!(outcomes.iter().map(|o| o.1).max().unwrap() >= timeout);
        for (err, elapsed) in outcomes {
            match err {
                Error::Timeout { op, missing, after } => {
                    assert_eq!(op, "all_reduce_max");
                    assert_eq!(missing, [2]);
                    assert_eq!(after, timeout);
                }
                other => panic!("expected a timeout, got {other}"),
            }
            assert!(elapsed < timeout + Duration::from_secs(5), "took {elapsed:?}");
        }
        // The late rank and every later call fail at once.
        let start = Instant::now();
        assert!(is_broken(&late.all_reduce_max(&mut [1, 2]).unwrap_err()));
        assert!(is_broken(&handles[0].all_gather_u64(1, &mut Vec::new()).unwrap_err()));
        assert!(start.elapsed() < timeout);
        assert!(late.is_broken());
    }

    #[test]
    fn timeout_while_peers_wait_in_a_later_operation() {
        // Rank 1 completes one round, then stops; rank 0 waits in the second.
        let timeout = Duration::from_millis(150);
        let results = on_ranks(2, timeout, |mut h| {
            let mut out = Vec::new();
            h.all_gather_u64(1, &mut out).unwrap();
            if h.rank() == 1 {
                // Keep the handle alive past the peer's deadline.
                thread::sleep(timeout * 3);
                return None;
            }
            Some(h.all_gather_u64(2, &mut out).unwrap_err())
        });
        match &results[0] {
            Some(Error::Timeout { op: "all_gather_u64", missing, .. }) => assert_eq!(missing, &[1]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn dropped_handle_makes_peers_fail_fast() {
        let mut handles = LocalCollective::group(3, LONG).unwrap();
        let dropper = handles.pop().unwrap();
        let start = Instant::now();
        let errs: Vec<Error> = thread::scope(|s| {
            let joins: Vec<_> =
                handles.iter_mut().map(|h| s.spawn(move || h.all_reduce_max(&mut [0]).unwrap_err())).collect();
            thread::sleep(Duration::from_millis(50));
            drop(dropper);
            joins.into_iter().map(|j| j.join().unwrap()).collect()
        });
        assert!(start.elapsed() < Duration::from_secs(5));
        for e in errs {
            assert!(is_broken(&e), "{e}");
            assert!(e.to_string().contains("rank 2"), "{e}");
        }
    }

    #[test]
    fn a_completed_round_survives_a_peer_dropping_right_after() {
        for _ in 0..50 {
            let results = on_ranks(4, LONG, |mut h| {
                let mut g = Gathered::new();
                let lens = [8u64; 4];
                h.all_gather_bytes(&[h.rank() as u8; 8], &lens, &mut g).map(|()| g.total_len())
                // `h` drops here, possibly while peers still read the result.
            });
            for r in results {
                assert_eq!(r.unwrap(), 32);
            }
        }
    }

    #[test]
    fn mismatched_vote_lengths_fail_every_rank() {
        let errs = on_ranks(3, LONG, |mut h| {
            let mut v = vec![1u32; 2 + usize::from(h.rank() == 1)];
            h.all_reduce_max(&mut v).unwrap_err()
        });
        let mismatches = errs.iter().filter(|e| matches!(e, Error::LengthMismatch { .. })).count();
        assert!(mismatches >= 1, "{errs:?}");
        assert!(errs.iter().all(|e| matches!(e, Error::LengthMismatch { .. }) || is_broken(e)), "{errs:?}");
    }

    #[test]
    fn mismatched_operations_fail_every_rank() {
        let errs = on_ranks(2, LONG, |mut h| {
            if h.rank() == 0 {
                h.all_reduce_max(&mut [1]).unwrap_err()
            } else {
                h.all_gather_u64(1, &mut Vec::new()).unwrap_err()
            }
        });
        assert!(errs.iter().any(|e| matches!(e, Error::Collective(CollectiveError::Mismatched { .. }))), "{errs:?}");
        assert!(
            errs.iter().all(|e| matches!(e, Error::Collective(CollectiveError::Mismatched { .. })) || is_broken(e)),
            "{errs:?}"
        );
    }

    #[test]
    fn bad_byte_lengths_fail_every_rank() {
        // Rank 1 sends fewer bytes than lens says.
        let errs = on_ranks(3, LONG, |mut h| {
            let lens = [4u64, 4, 4];
            let send = vec![0u8; if h.rank() == 1 { 3 } else { 4 }];
            h.all_gather_bytes(&send, &lens, &mut Gathered::new()).unwrap_err()
        });
        assert!(matches!(errs[1], Error::LengthMismatch { expected: 4, actual: 3, .. }), "{:?}", errs[1]);
        assert!(is_broken(&errs[0]) && is_broken(&errs[2]), "{errs:?}");

        // Rank 2 disagrees on the lens vector.
        let errs = on_ranks(3, LONG, |mut h| {
            let lens = if h.rank() == 2 { [4u64, 4, 8] } else { [4u64, 4, 4] };
            let send = vec![0u8; lens[h.rank()] as usize];
            h.all_gather_bytes(&send, &lens, &mut Gathered::new()).unwrap_err()
        });
        assert!(errs.iter().any(|e| matches!(e, Error::Collective(CollectiveError::Mismatched { .. }))), "{errs:?}");

        // A lens vector of the wrong size.
        let errs = on_ranks(2, LONG, |mut h| h.all_gather_bytes(&[], &[0], &mut Gathered::new()).unwrap_err());
        assert!(errs.iter().all(|e| matches!(e, Error::LengthMismatch { expected: 2, actual: 1, .. })), "{errs:?}");
    }

    #[test]
    fn stress_many_rounds_on_eight_ranks() {
        const ROUNDS: u64 = 1500;
        let sums = on_ranks(8, LONG, |mut h| {
            let r = h.rank() as u64;
            let world = h.world_size() as u64;
            let mut vote = [0u32; 9];
            let mut lens = Vec::new();
            let mut g = Gathered::new();
            let mut send = Vec::new();
            let mut checked = 0u64;
            for round in 0..ROUNDS {
                vote.fill(0);
                vote[0] = ((round * 7 + r) % 11) as u32;
                vote[1 + r as usize] = round as u32;
                h.all_reduce_max(&mut vote).unwrap();
                let want0 = (0..world).map(|q| (round * 7 + q) % 11).max().unwrap() as u32;
                assert_eq!(vote[0], want0);
                assert!(vote[1..].iter().all(|&v| v == round as u32));

                let len = (round * 13 + r * 5) % 97;
                h.all_gather_u64(len, &mut lens).unwrap();
                send.clear();
                send.extend((0..len).map(|i| (i + r + round) as u8));
                h.all_gather_bytes(&send, &lens, &mut g).unwrap();
                for q in 0..world {
                    let want: Vec<u8> = (0..(round * 13 + q * 5) % 97).map(|i| (i + q + round) as u8).collect();
                    assert_eq!(g.rank_bytes(q as usize), want.as_slice());
                }
                checked += 1;
            }
            checked
        });
        assert!(sums.iter().all(|&c| c == ROUNDS));
    }

    #[test]
    fn output_buffers_are_reused_after_warm_up() {
        let ptrs = on_ranks(2, LONG, |mut h| {
            let mut g = Gathered::new();
            let mut lens = Vec::new();
            let mut seen = Vec::new();
            for _ in 0..20 {
                h.all_gather_u64(1024, &mut lens).unwrap();
                h.all_gather_bytes(&[7u8; 1024], &lens, &mut g).unwrap();
                seen.push((g.as_bytes().as_ptr() as usize, lens.as_ptr() as usize));
            }
            seen
        });
        for seen in ptrs {
            assert!(seen.windows(2).all(|w| w[0] == w[1]), "outputs were reallocated: {seen:?}");
        }
    }
}
