//! The multi-rank conformance cases over [`MpiCollective`], one rank per
//! process of an `mpirun -np 4` job, each compared bitwise with the same
//! case on [`LocalCollective`] (4 thread ranks inside the same process).
//!
//! `cargo test --features mpi --test mpi` runs this binary without a
//! launcher; it then launches itself as `timeout 300 mpirun --oversubscribe
//! -np 4 <itself>` (Open MPI forced onto TCP, as root where needed) and
//! passes when the job exits 0. Without `mpirun` it prints a skip, except
//! under `CI=true`, where that is a failure. Any mismatch, error or timeout
//! in a rank is a non-zero exit of the job.

#[path = "integration/common.rs"]
mod common;

use chronos_sync::collective::mpi as cmpi;
use chronos_sync::{
    Backend, BucketStep, Collective, CpuBackend, Error, LocalCollective, MpiCollective, Selection, SyncConfig,
    SyncGroup, WireDtype,
};
use common::{Synthetic, initial_params};
use std::borrow::{Borrow, BorrowMut};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WORLD: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(60);

/// One case: buckets, steps, and a step at which one rank's update is NaN.
struct Case {
    name: &'static str,
    buckets: Vec<(usize, SyncConfig)>,
    steps: u64,
    nan_at: Option<(usize, u64)>,
}

/// What one rank saw after one step: the report (or the error's text) and a
/// hash of every bucket's parameters and accumulator bits.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Record {
    outcome: String,
    state: u64,
}

fn fnv(h: &mut u64, v: &[f32]) {
    for x in v {
        for b in x.to_bits().to_le_bytes() {
            *h ^= u64::from(b);
            *h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
}

fn cases() -> Vec<Case> {
    let cfg = SyncConfig::builder;
    vec![
        Case { name: "defaults", buckets: vec![(1_000, SyncConfig::default())], steps: 60, nan_at: None },
        Case {
            name: "two buckets, topk f32 and threshold f16, across chunk boundaries",
            buckets: vec![
                (
                    70_001,
                    cfg()
                        .adaptive(false)
                        .threshold(0.001)
                        .selection(Selection::TopK { ratio: 0.02 })
                        .wire_dtype(WireDtype::F32)
                        .build()
                        .unwrap(),
                ),
                (
                    20_000,
                    cfg()
                        .threshold(0.005)
                        .warmup_steps(10)
                        .selection(Selection::Threshold { rel: 1.5 })
                        .wire_dtype(WireDtype::F16)
                        .build()
                        .unwrap(),
                ),
            ],
            steps: 40,
            nan_at: None,
        },
        Case {
            name: "dense f32 every step",
            buckets: vec![(
                5_000,
                cfg()
                    .adaptive(false)
                    .threshold(0.0)
                    .max_accumulation_steps(1)
                    .selection(Selection::Dense)
                    .wire_dtype(WireDtype::F32)
                    .build()
                    .unwrap(),
            )],
            steps: 10,
            nan_at: None,
        },
        Case {
            name: "topk-approx bf16, no error feedback, a NaN on rank 2 at step 7",
            buckets: vec![(
                65_536 + 17,
                cfg()
                    .adaptive(false)
                    .threshold(0.002)
                    .error_feedback(false)
                    .selection(Selection::TopKApprox { ratio: 0.01, slack: 0.25 })
                    .build()
                    .unwrap(),
            )],
            steps: 20,
            nan_at: Some((2, 7)),
        },
    ]
}

/// Rank `rank`'s state: parameters and engine, per bucket.
struct RankRun<C: Collective> {
    group: SyncGroup<Arc<CpuBackend>, C>,
    params: Vec<<CpuBackend as Backend>::Buffer>,
    deltas: Vec<<CpuBackend as Backend>::Buffer>,
    sizes: Vec<usize>,
}

impl<C: Collective> RankRun<C> {
    fn new(backend: &Arc<CpuBackend>, c: C, case: &Case) -> Self {
        let mut group = SyncGroup::new(Arc::clone(backend), c).unwrap();
        let (mut params, mut deltas, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
        for (b, (n, config)) in case.buckets.iter().enumerate() {
            group.add_bucket(*n, config.clone()).unwrap();
            let mut p = backend.alloc(*n).unwrap();
            backend.upload(&initial_params(500 + b as u64, *n, 1.0), p.borrow_mut()).unwrap();
            params.push(p);
            deltas.push(backend.alloc(*n).unwrap());
            sizes.push(*n);
        }
        RankRun { group, params, deltas, sizes }
    }

    fn step(&mut self, rank: usize, t: u64, nan_at: Option<(usize, u64)>) -> Record {
        let backend = Arc::clone(self.group.backend());
        for (b, &n) in self.sizes.iter().enumerate() {
            let mut host = Synthetic::new(700 + b as u64).delta(rank, t, n);
            if nan_at == Some((rank, t)) {
                host[n / 2] = f32::NAN;
            }
            backend.upload(&host, self.deltas[b].borrow_mut()).unwrap();
        }
        let mut inputs: Vec<BucketStep<'_, Arc<CpuBackend>>> = self
            .deltas
            .iter()
            .zip(self.params.iter_mut())
            .map(|(d, p)| BucketStep { delta: d.borrow(), params: p.borrow_mut() })
            .collect();
        let outcome = match self.group.step(&mut inputs) {
            Ok(r) => format!("{r:?} {:?}", self.group.reports()),
            Err(e) => format!("error: {e}"),
        };
        Record { outcome, state: self.state_hash() }
    }

    fn state_hash(&self) -> u64 {
        let backend = self.group.backend();
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for (b, &n) in self.sizes.iter().enumerate() {
            let mut v = vec![0.0; n];
            backend.download(self.params[b].borrow(), &mut v).unwrap();
            fnv(&mut h, &v);
            self.group.read_accumulator(b, &mut v).unwrap();
            fnv(&mut h, &v);
        }
        h
    }
}

/// The case on 4 thread ranks over [`LocalCollective`]; every rank's records.
fn local_records(backend: &Arc<CpuBackend>, case: &Case) -> Vec<Vec<Record>> {
    let handles = LocalCollective::group(WORLD, TIMEOUT).unwrap();
    std::thread::scope(|s| {
        let joins: Vec<_> = handles
            .into_iter()
            .enumerate()
            .map(|(rank, c)| {
                s.spawn(move || {
                    let mut run = RankRun::new(backend, c, case);
                    (1..=case.steps).map(|t| run.step(rank, t, case.nan_at)).collect::<Vec<_>>()
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    })
}

fn fail(rank: usize, msg: String) -> ! {
    eprintln!("rank {rank}: FAIL: {msg}");
    cmpi::abort(1)
}

/// Every case over MPI against the same case on local threads.
fn conformance(world: &mpi::topology::SimpleCommunicator) {
    let backend = Arc::new(CpuBackend::with_threads(1).unwrap());
    let mut mpi_rank = None;
    for case in cases() {
        let c = MpiCollective::new(world, TIMEOUT).unwrap_or_else(|e| fail(usize::MAX, format!("new: {e}")));
        let rank = c.rank();
        mpi_rank = Some(rank);
        let local = local_records(&backend, &case);
        let mut run = RankRun::new(&backend, c, &case);
        for t in 1..=case.steps {
            let got = run.step(rank, t, case.nan_at);
            let want = &local[rank][(t - 1) as usize];
            if &got != want {
                fail(rank, format!("case `{}` step {t}: MPI {got:?} != local {want:?}", case.name));
            }
        }
        if rank == 0 {
            println!("ok: {} ({} steps, bitwise equal to LocalCollective)", case.name, case.steps);
        }
    }
    let rank = mpi_rank.unwrap_or(0);
    restart(world, &backend, rank);
    timeout_breaks_the_collective(world, rank);
}

/// Steps 1..=11, checkpoint, a fresh collective and engine restored from the
/// bytes, steps 12..=24: bitwise equal to 24 straight local steps.
fn restart(world: &mpi::topology::SimpleCommunicator, backend: &Arc<CpuBackend>, rank: usize) {
    let case = &cases()[1];
    let case = Case { name: "restart", buckets: case.buckets.clone(), steps: 24, nan_at: None };
    let local = local_records(backend, &case);
    let mut first = RankRun::new(backend, MpiCollective::new(world, TIMEOUT).unwrap(), &case);
    for t in 1..=11 {
        first.step(rank, t, None);
    }
    let checkpoint = first.group.checkpoint().unwrap();
    let host: Vec<Vec<f32>> = first
        .params
        .iter()
        .zip(&first.sizes)
        .map(|(p, &n)| {
            let mut v = vec![0.0; n];
            backend.download(p.borrow(), &mut v).unwrap();
            v
        })
        .collect();
    drop(first);
    let mut resumed = RankRun::new(backend, MpiCollective::new(world, TIMEOUT).unwrap(), &case);
    for (p, h) in resumed.params.iter_mut().zip(&host) {
        backend.upload(h, p.borrow_mut()).unwrap();
    }
    resumed.group.restore(&checkpoint).unwrap_or_else(|e| fail(rank, format!("restore: {e}")));
    for t in 12..=24 {
        let got = resumed.step(rank, t, None);
        let want = &local[rank][(t - 1) as usize];
        if &got != want {
            fail(rank, format!("restart step {t}: MPI {got:?} != local {want:?}"));
        }
    }
    if rank == 0 {
        println!("ok: checkpoint at step 11, restore into a fresh collective, bitwise equal at step 24");
    }
}

/// Rank 3 enters the vote 3 s late; ranks 0..2 (1 s timeout) return
/// `Error::Timeout` within the timeout plus a margin, and every later call
/// is `Broken`. Rank 3 then completes the pending vote (its peers had posted
/// theirs), and a world barrier leaves nothing pending before finalize.
fn timeout_breaks_the_collective(world: &mpi::topology::SimpleCommunicator, rank: usize) {
    use mpi::collective::CommunicatorCollectives;
    let short = Duration::from_secs(1);
    let mut c = MpiCollective::new(world, if rank == 3 { TIMEOUT } else { short }).unwrap();
    let mut v = [rank as u32, 0];
    if rank == 3 {
        std::thread::sleep(Duration::from_secs(3));
        c.all_reduce_max(&mut v).unwrap_or_else(|e| fail(rank, format!("late vote: {e}")));
    } else {
        let start = Instant::now();
        match c.all_reduce_max(&mut v) {
            Err(Error::Timeout { .. }) => {}
            other => fail(rank, format!("expected a timeout, got {other:?}")),
        }
        let took = start.elapsed();
        if took > short + Duration::from_millis(500) {
            fail(rank, format!("timeout took {took:?}"));
        }
        if !c.is_broken() {
            fail(rank, "not broken after a timeout".into());
        }
        match c.all_gather_u64(1, &mut Vec::new()) {
            Err(Error::Collective(chronos_sync::CollectiveError::Broken { .. })) => {}
            other => fail(rank, format!("expected Broken, got {other:?}")),
        }
    }
    world.barrier();
    if rank == 0 {
        println!("ok: a late rank times out its peers (typed error within timeout + 0.5 s), broken afterwards");
    }
}

fn launch_self() -> ExitCode {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if Command::new("mpirun").arg("--version").output().is_err() {
        if ci {
            eprintln!("FAIL: mpirun not found under CI=true (install openmpi-bin libopenmpi-dev)");
            return ExitCode::FAILURE;
        }
        println!("skipped: mpirun not found (install openmpi-bin libopenmpi-dev)");
        return ExitCode::SUCCESS;
    }
    let exe = std::env::current_exe().expect("current exe");
    let status = Command::new("timeout")
        .args(["-k", "10", "300", "mpirun", "--oversubscribe", "-np", "4"])
        .args(["--mca", "pml", "ob1", "--mca", "btl", "tcp,self"])
        .arg(exe)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .status()
        .expect("run mpirun");
    if status.success() {
        println!("mpi conformance: passed (4 processes)");
        ExitCode::SUCCESS
    } else {
        eprintln!("mpi conformance: FAILED ({status})");
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    if cmpi::launcher_world_size().is_none() {
        return launch_self();
    }
    let universe = match cmpi::init(Some(WORLD)) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("FAIL: {e}");
            return ExitCode::FAILURE;
        }
    };
    conformance(&universe.world());
    ExitCode::SUCCESS
}
