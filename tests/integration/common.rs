//! Helpers shared by every integration suite: a seeded PRNG, synthetic
//! updates, and a harness that runs W ranks of [`SparseSync`] on threads over
//! a [`LocalCollective`] and streams what each rank saw after every step.

#![allow(dead_code)] // each suite uses a different subset

use chronos_sync::backend::Backend;
use chronos_sync::collective::{Collective, DeviceBytes, DeviceMemory, Gathered, LocalCollective};
use chronos_sync::{Result, SparseSync, StepReport, SyncConfig};
use std::borrow::{Borrow, BorrowMut};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// SplitMix64 with the extras the tests need: independent `(seed, a, b)`
/// streams, ranges, and cheap f32 draws for large vectors. Reproducible
/// across platforms (the CLI's workload has its own copy; the library has
/// no random-number generator to share).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// A generator for one `(seed, a, b)` stream, e.g. one rank's step.
    pub fn stream(seed: u64, a: u64, b: u64) -> Self {
        let mut g = SplitMix64::new(seed ^ a.wrapping_mul(0xA076_1D64_78BD_642F));
        let s = g.next_u64() ^ b.wrapping_mul(0xE703_7ED1_A0B4_28DB);
        SplitMix64::new(s)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `0..n` (`n > 0`; the tiny modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // in (0, 1]: the log is finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform in `[-1, 1)` as f32, from the top 24 bits (cheap: one draw,
    /// exact in f32). Large test vectors use this rather than `normal`.
    pub fn signed_unit(&mut self) -> f32 {
        signed_unit(self.next_u64())
    }
}

/// A deterministic proptest configuration: fixed seed and algorithm (so
/// neither `PROPTEST_RNG_SEED` nor the run matters) and no failure
/// persistence (nothing depends on `proptest-regressions/` files).
pub fn fixed_proptest(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_c4c4),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// Maps 64 random bits to a uniform f32 in `[-1, 1)` using the top 24 bits.
pub fn signed_unit(bits: u64) -> f32 {
    ((bits >> 40) as f32) * (1.0 / (1u32 << 23) as f32) - 1.0
}

/// Deterministic synthetic updates: a direction shared by all ranks plus
/// per-rank noise, decaying with the step like an optimizer's steps do, with
/// occasional large outliers so that selection has something to find.
#[derive(Debug, Clone, Copy)]
pub struct Synthetic {
    /// Seed of every stream.
    pub seed: u64,
    /// Magnitude of the first step's update.
    pub scale: f32,
    /// Per-step decay exponent: step t is scaled by `t^-decay`.
    pub decay: f32,
    /// Fraction of the update shared by every rank (the rest is rank noise).
    pub shared: f32,
}

impl Synthetic {
    /// Typical settings: scale 1e-2, decay 0.5, half shared.
    pub fn new(seed: u64) -> Self {
        Synthetic { seed, scale: 1e-2, decay: 0.5, shared: 0.5 }
    }

    /// Writes rank `rank`'s update for step `t` (from 1) into `out`.
    /// The same arguments always give the same bits.
    pub fn fill(&self, rank: usize, t: u64, out: &mut [f32]) {
        let mag = self.scale * (t as f32).powf(-self.decay);
        let mut common = SplitMix64::stream(self.seed, u64::MAX, t);
        let mut own = SplitMix64::stream(self.seed, rank as u64, t);
        for x in out.iter_mut() {
            let c = common.signed_unit();
            let bits = own.next_u64();
            let mut e = signed_unit(bits);
            if bits & 63 == 0 {
                e *= 20.0; // heavy tail: one entry in 64
            }
            *x = mag * (self.shared * c + (1.0 - self.shared) * e);
        }
    }

    /// The update as a fresh vector.
    pub fn delta(&self, rank: usize, t: u64, n: usize) -> Vec<f32> {
        let mut v = vec![0.0; n];
        self.fill(rank, t, &mut v);
        v
    }
}

/// Initial parameters: seeded, uniform in `[-scale, scale)`.
pub fn initial_params(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut g = SplitMix64::stream(seed, 0xC0FFEE, 0);
    (0..n).map(|_| scale * g.signed_unit()).collect()
}

/// Sum of squares in f64 (for reference norms).
pub fn sum_sq_f64(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x) * f64::from(x)).sum()
}

/// Bit patterns, for bitwise comparisons with readable failures.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Asserts two f32 slices are bitwise equal, naming the first difference.
#[track_caller]
pub fn assert_bitwise_eq(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        let diffs = (0..a.len()).filter(|&i| a[i].to_bits() != b[i].to_bits()).count();
        panic!(
            "{what}: {diffs} element(s) differ; first at {i}: {:e} ({:#010x}) vs {:e} ({:#010x})",
            a[i],
            a[i].to_bits(),
            b[i],
            b[i].to_bits()
        );
    }
}

/// Where a [`Tap`] leaves the last buffer its rank sent; the engine owns the
/// tap, the test keeps this.
pub type SentSlot = Arc<Mutex<Option<Vec<u8>>>>;

/// A collective that forwards to `inner` and keeps a copy of the bytes this
/// rank sent in its last `all_gather_bytes` (its packed buffer).
pub struct Tap<C> {
    inner: C,
    sent: SentSlot,
}

impl<C: Collective> Tap<C> {
    /// Wraps `inner`; returns the tap and the slot it fills.
    pub fn new(inner: C) -> (Self, SentSlot) {
        let sent = SentSlot::default();
        (Tap { inner, sent: Arc::clone(&sent) }, sent)
    }
}

impl<C: Collective> Collective for Tap<C> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world_size(&self) -> usize {
        self.inner.world_size()
    }
    fn timeout(&self) -> Duration {
        self.inner.timeout()
    }
    fn all_reduce_max(&mut self, values: &mut [u32]) -> Result<()> {
        self.inner.all_reduce_max(values)
    }
    fn all_gather_u64(&mut self, value: u64, out: &mut Vec<u64>) -> Result<()> {
        self.inner.all_gather_u64(value, out)
    }
    fn all_gather_bytes(&mut self, send: &[u8], lens: &[u64], out: &mut Gathered) -> Result<()> {
        *self.sent.lock().unwrap_or_else(|e| e.into_inner()) = Some(send.to_vec());
        self.inner.all_gather_bytes(send, lens, out)
    }
    fn device_memory(&self) -> Option<DeviceMemory> {
        self.inner.device_memory()
    }
    unsafe fn all_gather_device(&mut self, send: DeviceBytes, lens: &[u64], recv: DeviceBytes) -> Result<()> {
        // The emulation's device memory is this process's: keep a copy as on
        // the host path (a GPU's is not read here; no GPU test reads it).
        if self.inner.device_memory() == Some(DeviceMemory::Emulated) {
            // SAFETY: by the caller's contract `send` is live and unchanging.
            let bytes = unsafe { std::slice::from_raw_parts(send.ptr as usize as *const u8, send.len) };
            *self.sent.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes.to_vec());
        }
        // SAFETY: the caller's contract is the inner call's.
        unsafe { self.inner.all_gather_device(send, lens, recv) }
    }
    unsafe fn all_reduce_max_device(&mut self, words: DeviceBytes) -> chronos_sync::Result<()> {
        // SAFETY: the caller's contract is the inner call's.
        unsafe { self.inner.all_reduce_max_device(words) }
    }
    unsafe fn all_gather_u64_device(&mut self, send: DeviceBytes, recv: DeviceBytes) -> chronos_sync::Result<()> {
        // SAFETY: the caller's contract is the inner call's.
        unsafe { self.inner.all_gather_u64_device(send, recv) }
    }
}

/// The engine type every harness rank runs.
pub type Engine<B> = SparseSync<Arc<B>, Tap<LocalCollective>>;

/// One rank of a harness group: its engine and its device buffers.
pub struct Rank<B: Backend> {
    /// This rank's number.
    pub rank: usize,
    /// The engine.
    pub sync: Engine<B>,
    /// Device buffer for the update.
    pub delta: B::Buffer,
    /// Device buffer for the parameters.
    pub theta: B::Buffer,
    /// The last packed buffer this rank sent.
    pub sent: SentSlot,
}

impl<B: Backend> Rank<B> {
    /// Uploads `delta` and runs one step.
    pub fn step_host(&mut self, delta: &[f32]) -> Result<StepReport> {
        self.sync.backend().upload(delta, self.delta.borrow_mut())?;
        self.sync.step(self.delta.borrow(), self.theta.borrow_mut())
    }
    /// The parameters, downloaded.
    pub fn theta(&self) -> Vec<f32> {
        let mut v = vec![0.0; self.sync.len()];
        self.sync.backend().download(self.theta.borrow(), &mut v).expect("download theta");
        v
    }
    /// The committed accumulator, downloaded.
    pub fn acc(&self) -> Vec<f32> {
        let mut v = vec![0.0; self.sync.len()];
        self.sync.read_accumulator(&mut v).expect("read accumulator");
        v
    }
    /// The packed buffer this rank sent in its last sync (once).
    pub fn take_sent(&mut self) -> Option<Vec<u8>> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Builds one [`Rank`] per rank of a fresh group (the backend is shared) with
/// `theta0` uploaded as every rank's parameters.
pub fn make_ranks<B: Backend>(
    backend: &Arc<B>,
    world: usize,
    config: &SyncConfig,
    theta0: &[f32],
    timeout: Duration,
) -> Result<Vec<Rank<B>>> {
    let n = theta0.len();
    LocalCollective::group(world, timeout)?
        .into_iter()
        .enumerate()
        .map(|(rank, c)| {
            let b = Arc::clone(backend);
            let mut theta = b.alloc(n)?;
            b.upload(theta0, theta.borrow_mut())?;
            let delta = b.alloc(n)?;
            let (tap, sent) = Tap::new(c);
            let sync = SparseSync::new(b, tap, n, config.clone())?;
            Ok(Rank { rank, sync, delta, theta, sent })
        })
        .collect()
}

/// What one rank saw in one step of [`run_group`].
#[derive(Debug)]
pub struct StepRecord {
    /// The rank.
    pub rank: usize,
    /// The step, counted from 1.
    pub t: u64,
    /// The step's result.
    pub report: Result<StepReport>,
    /// Parameters after the step (when recorded).
    pub theta: Option<Vec<f32>>,
    /// Accumulator after the step (when recorded).
    pub acc: Option<Vec<f32>>,
    /// The packed buffer this rank sent in the step, if it synced.
    pub sent: Option<Vec<u8>>,
}

/// A run of [`run_group`].
#[derive(Debug, Clone)]
pub struct Job {
    /// Ranks.
    pub world: usize,
    /// Configuration of every rank.
    pub config: SyncConfig,
    /// Steps to run.
    pub steps: u64,
    /// Collective timeout.
    pub timeout: Duration,
    /// Download parameters and accumulator after every step.
    pub record_state: bool,
}

impl Job {
    /// `world` ranks, `steps` steps, 30 s timeout, state recorded.
    pub fn new(world: usize, config: SyncConfig, steps: u64) -> Self {
        Job { world, config, steps, timeout: Duration::from_secs(30), record_state: true }
    }
}

/// Runs `job.world` ranks on threads, each stepping `job.steps` times with the
/// update `updates(rank, t, out)`, starting from `theta0`. After every step,
/// once every rank's record for it has arrived, calls `observe(t, records)`
/// (records in rank order) on the calling thread. A rank stops at its first
/// error. Returns every rank's final parameters and accumulator.
///
/// Ranks run at most about two steps ahead of `observe`, so memory stays
/// bounded however many steps run. A panic in `observe` drops the receiver;
/// the ranks then stop, drop their handles and the group unwinds without
/// waiting out a timeout.
pub fn run_group<B: Backend>(
    backend: &Arc<B>,
    job: &Job,
    theta0: &[f32],
    updates: &(dyn Fn(usize, u64, &mut [f32]) + Sync),
    mut observe: impl FnMut(u64, Vec<StepRecord>),
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let n = theta0.len();
    let ranks = make_ranks(backend, job.world, &job.config, theta0, job.timeout).expect("create ranks");
    let (tx, rx) = mpsc::sync_channel::<StepRecord>(2 * job.world);
    thread::scope(|s| {
        let joins: Vec<_> = ranks
            .into_iter()
            .map(|mut r| {
                let tx = tx.clone();
                s.spawn(move || {
                    let mut host = vec![0.0f32; n];
                    for t in 1..=job.steps {
                        updates(r.rank, t, &mut host);
                        let report = r.step_host(&host);
                        let failed = report.is_err();
                        let record = StepRecord {
                            rank: r.rank,
                            t,
                            report,
                            theta: job.record_state.then(|| r.theta()),
                            acc: job.record_state.then(|| r.acc()),
                            sent: r.take_sent(),
                        };
                        if tx.send(record).is_err() || failed {
                            break;
                        }
                    }
                    (r.theta(), r.acc())
                })
            })
            .collect();
        drop(tx);
        let mut pending: Vec<Vec<Option<StepRecord>>> = Vec::new();
        let mut next = 1u64;
        for rec in rx.iter() {
            let slot = (rec.t - next) as usize;
            while pending.len() <= slot {
                pending.push((0..job.world).map(|_| None).collect());
            }
            let r = rec.rank;
            pending[slot][r] = Some(rec);
            while pending.first().is_some_and(|p| p.iter().all(Option::is_some)) {
                let done: Vec<StepRecord> = pending.remove(0).into_iter().map(Option::unwrap).collect();
                observe(next, done);
                next += 1;
            }
        }
        // Steps some rank never finished (it failed): hand over what arrived.
        for (i, p) in pending.into_iter().enumerate() {
            let got: Vec<StepRecord> = p.into_iter().flatten().collect();
            if !got.is_empty() {
                observe(next + i as u64, got);
            }
        }
        joins.into_iter().map(|j| j.join().expect("rank thread panicked")).collect()
    })
}
