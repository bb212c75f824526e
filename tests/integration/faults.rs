//! Faults injected into the engine's collaborators: a collective that lies
//! about a peer's packed length, and a backend that fails one operation on
//! one rank. Every rank must reach the same verdict at the same step, never
//! abort or hang, and carry on (or, after a failed apply, refuse to).

use crate::common::{Synthetic, assert_bitwise_eq, initial_params};
use chronos_sync::backend::StepStatus;
use chronos_sync::collective::{Collective, Gathered};
use chronos_sync::{
    Backend, CpuBackend, Error, FailureCause, LocalCollective, RankFailure, SparseSync, SyncConfig, WireError,
};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

/// Forwards to `inner`, but on its `lie_at`-th count exchange (from 1)
/// reports that rank `victim` announced `announced` bytes: what every rank
/// would see from a malicious or corrupted peer.
struct Lying<C> {
    inner: C,
    calls: u32,
    lie_at: u32,
    victim: usize,
    announced: u64,
}

impl<C: Collective> Collective for Lying<C> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world_size(&self) -> usize {
        self.inner.world_size()
    }
    fn timeout(&self) -> Duration {
        self.inner.timeout()
    }
    fn all_reduce_max(&mut self, values: &mut [u32]) -> chronos_sync::Result<()> {
        self.inner.all_reduce_max(values)
    }
    fn all_gather_u64(&mut self, value: u64, out: &mut Vec<u64>) -> chronos_sync::Result<()> {
        self.inner.all_gather_u64(value, out)?;
        self.calls += 1;
        if self.calls == self.lie_at {
            out[self.victim] = self.announced;
        }
        Ok(())
    }
    fn all_gather_bytes(&mut self, send: &[u8], lens: &[u64], out: &mut Gathered) -> chronos_sync::Result<()> {
        self.inner.all_gather_bytes(send, lens, out)
    }
}

/// A configuration that syncs every step.
fn every_step() -> SyncConfig {
    SyncConfig::builder().adaptive(false).threshold(0.0).build().unwrap()
}

/// Runs `world` ranks of `body(rank, collective)` on threads.
fn on_threads<R: Send>(world: usize, body: impl Fn(usize, LocalCollective) -> R + Sync) -> Vec<R> {
    let handles = LocalCollective::group(world, Duration::from_secs(30)).unwrap();
    thread::scope(|s| {
        let body = &body;
        let joins: Vec<_> = handles.into_iter().enumerate().map(|(r, c)| s.spawn(move || body(r, c))).collect();
        joins.into_iter().map(|j| j.join().expect("rank thread panicked")).collect()
    })
}

/// A peer "announcing" 2^62 bytes at step 2 is refused by every rank with
/// `InvalidPeerBuffer` naming it, before anything is sized from it; the
/// accumulation is kept, the parameters are unchanged, and step 3 syncs it.
#[test]
fn lying_peer_length_is_a_typed_error_on_every_rank() {
    let (world, n) = (4, 20_000);
    let theta0 = initial_params(1, n, 1.0);
    let updates = Synthetic::new(2);
    let finals = on_threads(world, |rank, c| {
        let lying = Lying { inner: c, calls: 0, lie_at: 2, victim: 2, announced: 1 << 62 };
        let mut sync = SparseSync::new(CpuBackend::new(), lying, n, every_step()).unwrap();
        let mut theta = theta0.clone();
        sync.step(&updates.delta(rank, 1, n), &mut theta).unwrap();
        let before = theta.clone();
        match sync.step(&updates.delta(rank, 2, n), &mut theta) {
            Err(Error::InvalidPeerBuffer { rank: 2, source: WireError::AnnouncedTooLarge { announced, limit } }) => {
                assert_eq!(announced, 1 << 62);
                assert!(limit < 1 << 20, "the bound is the rule's worst case, {limit}");
            }
            other => panic!("rank {rank}: expected InvalidPeerBuffer from rank 2, got {other:?}"),
        }
        assert_bitwise_eq("params untouched", &theta, &before);
        assert_eq!(sync.steps(), 2, "the accumulation was committed");
        assert_eq!(sync.steps_since_sync(), 1);
        let mut acc = vec![0.0; n];
        sync.read_accumulator(&mut acc).unwrap();
        assert!(acc.iter().any(|&a| a != 0.0), "step 2's update is kept, not lost");
        sync.step(&updates.delta(rank, 3, n), &mut theta).unwrap();
        theta
    });
    for (r, t) in finals.iter().enumerate() {
        assert_bitwise_eq(&format!("rank {r} vs 0"), t, &finals[0]);
    }
}

/// Which operation a [`Faulty`] backend fails, once.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FailOp {
    None,
    Accumulate,
    SelectPack,
    Apply,
}

/// The CPU backend, failing the armed operation once with a device-lost
/// error.
struct Faulty {
    inner: CpuBackend,
    armed: AtomicU32,
}

impl Faulty {
    fn new() -> Faulty {
        Faulty { inner: CpuBackend::with_threads(1).unwrap(), armed: AtomicU32::new(FailOp::None as u32) }
    }
    fn arm(&self, op: FailOp) {
        self.armed.store(op as u32, Ordering::SeqCst);
    }
    fn trips(&self, op: FailOp) -> chronos_sync::Result<()> {
        if self.armed.compare_exchange(op as u32, FailOp::None as u32, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            return Err(chronos_sync::BackendError::DeviceLost { backend: "faulty", reason: format!("{op:?}") }.into());
        }
        Ok(())
    }
}

impl Backend for Faulty {
    type Vector = [f32];
    type Buffer = Vec<f32>;
    type State = <CpuBackend as Backend>::State;
    fn name(&self) -> String {
        "faulty cpu".into()
    }
    fn alloc(&self, n: usize) -> chronos_sync::Result<Vec<f32>> {
        self.inner.alloc(n)
    }
    fn upload(&self, src: &[f32], dst: &mut [f32]) -> chronos_sync::Result<()> {
        self.inner.upload(src, dst)
    }
    fn download(&self, src: &[f32], dst: &mut [f32]) -> chronos_sync::Result<()> {
        self.inner.download(src, dst)
    }
    fn buffer_len(&self, buf: &[f32]) -> usize {
        buf.len()
    }
    fn create_state(&self, n: usize, config: &SyncConfig) -> chronos_sync::Result<Self::State> {
        self.inner.create_state(n, config)
    }
    fn read_accumulator(&self, state: &Self::State, dst: &mut [f32]) -> chronos_sync::Result<()> {
        self.inner.read_accumulator(state, dst)
    }
    fn write_accumulator(&self, state: &mut Self::State, src: &[f32]) -> chronos_sync::Result<()> {
        self.inner.write_accumulator(state, src)
    }
    fn accumulate(&self, state: &mut Self::State, d: &[f32], t: &[f32], tau: f32) -> chronos_sync::Result<StepStatus> {
        self.trips(FailOp::Accumulate)?;
        self.inner.accumulate(state, d, t, tau)
    }
    fn commit_accumulate(&self, state: &mut Self::State) -> chronos_sync::Result<()> {
        self.inner.commit_accumulate(state)
    }
    fn select_pack<'s>(&self, state: &'s mut Self::State) -> chronos_sync::Result<&'s [u8]> {
        self.trips(FailOp::SelectPack)?;
        self.inner.select_pack(state)
    }
    fn apply(
        &self,
        state: &mut Self::State,
        theta: &mut [f32],
        gathered: &Gathered,
        own_rank: usize,
        weight: f32,
    ) -> chronos_sync::Result<()> {
        self.trips(FailOp::Apply)?;
        self.inner.apply(state, theta, gathered, own_rank, weight)
    }
}

/// Runs 4 ranks; rank 1's backend fails `op` at step 3. Checks step 3's
/// outcome on every rank, then runs `after` on each.
fn fail_on_rank_1(op: FailOp, after: impl Fn(usize, &mut SparseSync<Faulty, LocalCollective>, &mut Vec<f32>) + Sync) {
    let n = 9000;
    let theta0 = initial_params(3, n, 1.0);
    let updates = Synthetic::new(4);
    on_threads(4, |rank, c| {
        let mut sync = SparseSync::new(Faulty::new(), c, n, every_step()).unwrap();
        let mut theta = theta0.clone();
        for t in 1..=2 {
            sync.step(&updates.delta(rank, t, n), &mut theta).unwrap();
        }
        if rank == 1 {
            sync.backend().arm(op);
        }
        let (theta_before, mut acc_before) = (theta.clone(), vec![0.0; n]);
        sync.read_accumulator(&mut acc_before).unwrap();
        let result = sync.step(&updates.delta(rank, 3, n), &mut theta);
        if op == FailOp::Apply {
            // The exchange completed everywhere; only rank 1's apply failed.
            match (&result, rank) {
                (Err(Error::Backend(_)), 1) | (Ok(_), 0 | 2 | 3) => {}
                (other, _) => panic!("rank {rank}: unexpected {other:?}"),
            }
        } else {
            match &result {
                Err(Error::RankFailed { failures, local }) => {
                    assert_eq!(
                        failures,
                        &vec![RankFailure { rank: 1, bucket: Some(0), cause: FailureCause::Backend }],
                        "rank {rank}"
                    );
                    assert_eq!(local.is_some(), rank == 1, "rank {rank}");
                }
                other => panic!("rank {rank}: {op:?}: unexpected {other:?}"),
            }
            assert_bitwise_eq(&format!("rank {rank} params"), &theta, &theta_before);
            if op == FailOp::Accumulate {
                assert_eq!(sync.steps(), 2, "rank {rank}: nothing committed");
                let mut acc = vec![0.0; n];
                sync.read_accumulator(&mut acc).unwrap();
                assert_bitwise_eq(&format!("rank {rank} acc"), &acc, &acc_before);
            } else {
                assert_eq!(sync.steps(), 3, "rank {rank}: the accumulation is committed, nothing is lost");
            }
        }
        after(rank, &mut sync, &mut theta);
    });
}

/// A backend failure in the fused pass on one rank fails step 3 on every
/// rank (naming rank 1) with nothing changed; step 4 works everywhere.
#[test]
fn backend_failure_before_the_vote_fails_every_rank_and_changes_nothing() {
    fail_on_rank_1(FailOp::Accumulate, |rank, sync, theta| {
        let d = Synthetic::new(4).delta(rank, 4, theta.len());
        sync.step(&d, theta).unwrap_or_else(|e| panic!("rank {rank}: {e}"));
    });
}

/// A select-and-pack failure on rank 1 is announced in the count exchange:
/// every rank fails step 3 naming rank 1, nobody enters the byte exchange,
/// and step 4 syncs everything accumulated.
#[test]
fn pack_failure_on_one_rank_is_announced_to_every_rank() {
    fail_on_rank_1(FailOp::SelectPack, |rank, sync, theta| {
        let d = Synthetic::new(4).delta(rank, 4, theta.len());
        let report = sync.step(&d, theta).unwrap_or_else(|e| panic!("rank {rank}: {e}"));
        assert!(report.synced);
    });
}

/// An apply failure on rank 1 returns the backend's error there; its
/// replica may differ now, so its next step is voted `Diverged` and fails on
/// every rank, as does every later one.
#[test]
fn apply_failure_marks_the_rank_diverged_for_every_later_step() {
    fail_on_rank_1(FailOp::Apply, |rank, sync, theta| {
        assert_eq!(sync.as_group().is_diverged(), rank == 1);
        for t in 4..=5 {
            let d = Synthetic::new(4).delta(rank, t, theta.len());
            match sync.step(&d, theta) {
                Err(Error::RankFailed { failures, .. }) => assert_eq!(
                    failures,
                    vec![RankFailure { rank: 1, bucket: None, cause: FailureCause::Diverged }],
                    "rank {rank} step {t}"
                ),
                other => panic!("rank {rank} step {t}: expected Diverged, got {other:?}"),
            }
        }
    });
}
