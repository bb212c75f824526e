//! The distributed system: `W` worker threads train the inner model
//! data-parallel, exchanging their model updates through [`SparseSync`]
//! over a [`LocalCollective`]; the outer parameters (one `lambda` per
//! training example) live in the [`Coordinator`] with bounded asynchrony.
//!
//! One worker, per round: `inner_steps` steps of momentum gradient descent on
//! its shard (the update goes through `SparseSync::step`, so the model moves
//! only by what the group syncs), then the implicit hypergradient of its
//! shard's `lambda` at the synced model (CG on the shard's Hessian, warm
//! started from its last solve), committed against the lease it checked out
//! at the start of the round, then a new checkout. Workers are slowed by a
//! seeded jitter after their hypergradient, so commits arrive in varying
//! order and really are stale. After the rounds, every worker reads the final
//! `lambda` and runs `final_steps` more synced steps; the model is then evaluated.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::hypergrad::{CgOptions, InnerProblem, implicit_hypergradient};
use super::model::{Design, accuracy, loss_grad, sigmoid};
use super::problem::{Detection, Problem};
use super::rng::SplitMix64;
use chronos_sync::backend::{Backend, CpuBackend};
use chronos_sync::collective::LocalCollective;
use chronos_sync::config::SyncConfig;
use chronos_sync::coordinator::{CommitOutcome, CommitRequest, Coordinator, CoordinatorConfig, Lease, OuterOptimizer};
use chronos_sync::error::{Error, Result};
use chronos_sync::sync::{SparseSync, StepReport};

/// How the outer parameters are updated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OuterMode {
    /// Every worker commits against the same version; the outer step waits
    /// for all `W` commits and every worker waits for it (no staleness).
    Synchronous,
    /// Workers commit and check out without waiting; an outer step is taken
    /// every `min_commits` accepted commits; stale commits are weighted
    /// `0.5^staleness` or rejected beyond `max_staleness`.
    BoundedAsync {
        /// Commits older than this many versions are rejected.
        max_staleness: u64,
        /// Distinct versions checked out at once.
        max_in_flight: usize,
        /// Accepted commits per outer step.
        min_commits: usize,
    },
}

/// One way of running the problem: a sync configuration and an outer mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Name shown in the table.
    pub name: String,
    /// The inner model's sync configuration.
    pub sync: SyncConfig,
    /// The outer parameters' update mode.
    pub outer: OuterMode,
}

/// Everything that shapes a run except the variant.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemConfig {
    /// Worker threads (ranks), >= 1; the training set is split evenly.
    pub workers: usize,
    /// Rounds (one commit per worker per round).
    pub rounds: usize,
    /// Inner steps per round.
    pub inner_steps: usize,
    /// Synced inner steps after the last round, with the final `lambda`.
    pub final_steps: usize,
    /// L2 strength of the inner problem.
    pub mu: f64,
    /// Inner learning rate.
    pub inner_lr: f64,
    /// Inner heavy-ball momentum, in `[0, 1)`.
    pub momentum: f64,
    /// Outer (Adam) learning rate.
    pub outer_lr: f32,
    /// Conjugate-gradient iterations per hypergradient.
    pub cg_iters: usize,
    /// Worker slowdown after each hypergradient, as a multiple of its
    /// compute time: worker `r` sleeps `jitter * (r / (W-1) + u) / 2` times
    /// it, `u` uniform in `[0, 1)` from the seed.
    pub jitter: f64,
    /// Seed of the jitter schedule.
    pub seed: u64,
    /// Timeout of every collective call and coordinator wait.
    pub timeout: Duration,
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            workers: 4,
            rounds: 40,
            inner_steps: 8,
            final_steps: 40,
            mu: 1e-4,
            inner_lr: 1.0,
            momentum: 0.9,
            outer_lr: 0.3,
            cg_iters: 8,
            jitter: 1.0,
            seed: 0x5EED,
            timeout: Duration::from_secs(60),
        }
    }
}

impl SystemConfig {
    /// Checks every field against its documented range for a problem with `n_train` examples.
    pub fn validate(&self, n_train: usize) -> Result<()> {
        let bad = |field, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.workers == 0 || self.workers > n_train {
            return bad("workers", format!("must be in 1..={n_train}, got {}", self.workers));
        }
        if self.rounds == 0 || self.inner_steps == 0 {
            return bad("rounds", "rounds and inner_steps must be >= 1".into());
        }
        if !(self.mu.is_finite() && self.mu > 0.0) {
            return bad("mu", format!("must be finite and > 0, got {}", self.mu));
        }
        if !(self.inner_lr.is_finite() && self.inner_lr > 0.0) {
            return bad("inner_lr", format!("must be finite and > 0, got {}", self.inner_lr));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return bad("momentum", format!("must be in [0, 1), got {}", self.momentum));
        }
        if !(self.outer_lr.is_finite() && self.outer_lr > 0.0) {
            return bad("outer_lr", format!("must be finite and > 0, got {}", self.outer_lr));
        }
        if self.cg_iters == 0 {
            return bad("cg_iters", "must be >= 1".into());
        }
        if !(self.jitter.is_finite() && self.jitter >= 0.0) {
            return bad("jitter", format!("must be finite and >= 0, got {}", self.jitter));
        }
        if self.timeout.is_zero() {
            return bad("timeout", "must be > 0".into());
        }
        Ok(())
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct RunMetrics {
    /// Variant name.
    pub name: String,
    /// Workers.
    pub workers: usize,
    /// Inner steps per worker.
    pub steps: u64,
    /// Packed payload bytes produced, summed over workers and syncs (each
    /// rank's buffer counted once), plus the vote and count exchanges.
    pub bytes_total: u64,
    /// Of which control (votes and counts).
    pub control_bytes: u64,
    /// `bytes_total` per worker, in rank order.
    pub bytes_per_worker: Vec<u64>,
    /// Payload bytes one rank received, summed over syncs, maximum over ranks.
    pub bytes_received_max: u64,
    /// Collective calls per rank (vote every step; counts and payload per sync).
    pub collective_calls: u64,
    /// Steps on which the group synced.
    pub syncs: u64,
    /// Syncs where at least one rank's significance passed the threshold.
    pub syncs_triggered: u64,
    /// Syncs that only `max_accumulation_steps` forced.
    pub syncs_forced: u64,
    /// Outer steps the coordinator took.
    pub outer_steps: u64,
    /// Commits accepted.
    pub accepted: u64,
    /// Commits rejected (every reason).
    pub rejected: u64,
    /// Checkouts refused by backpressure (the worker kept its old `lambda` for a round).
    pub backpressure: u64,
    /// Staleness -> commits.
    pub staleness: BTreeMap<u64, u64>,
    /// Measured wall-clock of the run, seconds.
    pub wall_s: f64,
    /// Wall-clock spent inside `SparseSync::step` on the rank that spent least there.
    pub sync_s: f64,
    /// `wall_s - sync_s` plus the modeled communication time at 10 Gb/s.
    pub modeled_10g_s: f64,
    /// Same at 100 Gb/s.
    pub modeled_100g_s: f64,
    /// Validation accuracy of the final model.
    pub val_accuracy: f64,
    /// Test accuracy of the final model.
    pub test_accuracy: f64,
    /// Validation loss of the final model.
    pub val_loss: f64,
    /// Detection of the corrupted labels by `lambda_i < 0`.
    pub detection: Detection,
}

/// Per-collective latency of the communication model, seconds.
pub const MODEL_LATENCY_S: f64 = 5e-6;

/// Modeled communication seconds over a link of `gbps` Gb/s: every
/// collective call costs `MODEL_LATENCY_S` plus the bytes one rank receives
/// in it divided by the bandwidth (payload all-gathers: the slowest rank's).
pub fn modeled_comm_seconds(steps: &[Vec<StepReport>], workers: usize, gbps: f64) -> f64 {
    let bw = gbps * 1e9 / 8.0;
    let Some(first) = steps.first() else { return 0.0 };
    let mut total = 0.0;
    for t in 0..first.len() {
        let vote = (1 + workers) as f64 * 4.0 * (workers as f64 - 1.0).max(0.0);
        total += MODEL_LATENCY_S + vote / bw;
        if first[t].synced {
            let recv = steps.iter().map(|r| r[t].bytes_received).max().unwrap_or(0) as f64;
            total += 2.0 * MODEL_LATENCY_S + (8.0 * (workers as f64 - 1.0) + recv) / bw;
        }
    }
    total
}

/// What one worker thread hands back.
struct WorkerOutput {
    reports: Vec<StepReport>,
    sync_s: f64,
    backpressure: u64,
    theta: Option<Vec<f32>>,
}

/// The rows of shard `r` of `n` examples over `w` workers (contiguous, sizes differ by at most 1).
fn shard_range(n: usize, w: usize, r: usize) -> std::ops::Range<usize> {
    (r * n / w)..((r + 1) * n / w)
}

/// Runs `variant` on `problem`; `on_commit` is called after every commit
/// (e.g. to advance a progress bar).
pub fn run(
    problem: &Arc<Problem>,
    cfg: &SystemConfig,
    variant: &Variant,
    on_commit: Arc<dyn Fn() + Send + Sync>,
) -> Result<RunMetrics> {
    let n = problem.train.len();
    cfg.validate(n)?;
    variant.sync.validate()?;
    let w = cfg.workers;
    let coord_cfg = match variant.outer {
        OuterMode::Synchronous => CoordinatorConfig::builder().max_staleness(0).max_in_flight(1).min_commits(w),
        OuterMode::BoundedAsync { max_staleness, max_in_flight, min_commits } => CoordinatorConfig::builder()
            .max_staleness(max_staleness)
            .max_in_flight(max_in_flight)
            .min_commits(min_commits.clamp(1, w)),
    }
    .optimizer(OuterOptimizer::adam(cfg.outer_lr))
    .checkout_timeout(cfg.timeout)
    .lease_ttl(cfg.timeout)
    .build()?;
    let coordinator = Arc::new(Coordinator::new(vec![0.0f32; n], coord_cfg)?);
    let collectives = LocalCollective::group(w, cfg.timeout)?;
    let barrier = Arc::new(TimedBarrier::new(w));
    let start = Instant::now();
    let outputs: Vec<Result<WorkerOutput>> = std::thread::scope(|scope| {
        let handles: Vec<_> = collectives
            .into_iter()
            .enumerate()
            .map(|(rank, collective)| {
                let ctx = WorkerContext {
                    problem: Arc::clone(problem),
                    cfg: cfg.clone(),
                    variant: variant.clone(),
                    coordinator: Arc::clone(&coordinator),
                    barrier: Arc::clone(&barrier),
                    on_commit: Arc::clone(&on_commit),
                    rank,
                };
                scope.spawn(move || ctx.run(collective))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::InvalidConfig { field: "worker", reason: "a worker thread panicked".into() })
                })
            })
            .collect()
    });
    let wall_s = start.elapsed().as_secs_f64();
    let outputs: Vec<WorkerOutput> = outputs.into_iter().collect::<Result<_>>()?;

    let reports: Vec<Vec<StepReport>> = outputs.iter().map(|o| o.reports.clone()).collect();
    let steps = reports[0].len();
    let mut m =
        RunMetrics { name: variant.name.clone(), workers: w, steps: steps as u64, wall_s, ..RunMetrics::default() };
    m.bytes_per_worker = reports.iter().map(|r| r.iter().map(|s| s.bytes_sent + s.control_bytes).sum()).collect();
    m.bytes_total = m.bytes_per_worker.iter().sum();
    m.control_bytes = reports.iter().flatten().map(|s| s.control_bytes).sum();
    m.bytes_received_max = reports.iter().map(|r| r.iter().map(|s| s.bytes_received).sum()).max().unwrap_or(0);
    for t in 0..steps {
        m.collective_calls += 1;
        if reports[0][t].synced {
            m.collective_calls += 2;
            m.syncs += 1;
            if reports.iter().any(|r| r[t].triggered) {
                m.syncs_triggered += 1;
            } else {
                m.syncs_forced += 1;
            }
        }
    }
    m.sync_s = outputs.iter().map(|o| o.sync_s).fold(f64::INFINITY, f64::min);
    let compute = (wall_s - m.sync_s).max(0.0);
    m.modeled_10g_s = compute + modeled_comm_seconds(&reports, w, 10.0);
    m.modeled_100g_s = compute + modeled_comm_seconds(&reports, w, 100.0);
    m.backpressure = outputs.iter().map(|o| o.backpressure).sum();

    let stats = coordinator.stats();
    m.outer_steps = stats.outer_steps;
    m.accepted = stats.accepted;
    m.rejected = stats.rejected();
    m.staleness = stats.staleness_histogram.clone();

    let theta32 = outputs[0].theta.as_ref().expect("rank 0 returns the model");
    let theta: Vec<f64> = theta32.iter().map(|&v| f64::from(v)).collect();
    m.val_accuracy = accuracy(&theta, &problem.val);
    m.test_accuracy = accuracy(&theta, &problem.test);
    m.val_loss = super::hypergrad::validation_loss_grad(&theta, &problem.val).0;
    let lambda = coordinator.outer_params();
    let flag: Vec<bool> = lambda.iter().map(|&l| l < 0.0).collect();
    m.detection = Detection::score(&flag, &problem.flipped);
    Ok(m)
}

/// A barrier whose wait gives up after a timeout (a failed worker must not
/// hang the others).
struct TimedBarrier {
    arrived: Mutex<usize>,
    all_in: Condvar,
    parties: usize,
}

impl TimedBarrier {
    fn new(parties: usize) -> Self {
        TimedBarrier { arrived: Mutex::new(0), all_in: Condvar::new(), parties }
    }

    fn wait(&self, timeout: Duration) -> Result<()> {
        let mut arrived = self.arrived.lock().unwrap_or_else(|e| e.into_inner());
        *arrived += 1;
        self.all_in.notify_all();
        let (guard, res) =
            self.all_in.wait_timeout_while(arrived, timeout, |a| *a < self.parties).unwrap_or_else(|e| e.into_inner());
        if res.timed_out() && *guard < self.parties {
            return Err(Error::Timeout { op: "hyperclean final barrier", missing: Vec::new(), after: timeout });
        }
        Ok(())
    }
}

struct WorkerContext {
    problem: Arc<Problem>,
    cfg: SystemConfig,
    variant: Variant,
    coordinator: Arc<Coordinator>,
    barrier: Arc<TimedBarrier>,
    on_commit: Arc<dyn Fn() + Send + Sync>,
    rank: usize,
}

/// One worker's model-side state: the synced model, the update buffer and momentum.
struct InnerState {
    sync: SparseSync<CpuBackend, LocalCollective>,
    theta: Vec<f32>,
    delta: Vec<f32>,
    theta64: Vec<f64>,
    grad: Vec<f64>,
    momentum: Vec<f64>,
    reports: Vec<StepReport>,
    sync_s: f64,
}

impl InnerState {
    /// One synced inner step on `shard` with example weights `sigmoid(lambda)`.
    fn step(&mut self, shard: &Design, weights: &[f64], cfg: &SystemConfig) -> Result<()> {
        for (d, &s) in self.theta64.iter_mut().zip(&self.theta) {
            *d = f64::from(s);
        }
        loss_grad(&self.theta64, shard, weights, shard.len() as f64, cfg.mu, &mut self.grad);
        for ((m, g), d) in self.momentum.iter_mut().zip(&self.grad).zip(self.delta.iter_mut()) {
            *m = cfg.momentum * *m + g;
            *d = (-cfg.inner_lr * *m) as f32;
        }
        let t0 = Instant::now();
        let report = self.sync.step(&self.delta, &mut self.theta)?;
        self.sync_s += t0.elapsed().as_secs_f64();
        self.reports.push(report);
        Ok(())
    }
}

impl WorkerContext {
    fn run(self, collective: LocalCollective) -> Result<WorkerOutput> {
        let p = &*self.problem;
        let cfg = &self.cfg;
        let n = p.train.len();
        let range = shard_range(n, cfg.workers, self.rank);
        let shard = p.train.select(&range.clone().collect::<Vec<_>>());
        let np = p.param_len();
        let backend = CpuBackend::with_threads(1)?;
        let mut theta = backend.alloc(np)?;
        backend.upload(&vec![0.0; np], &mut theta)?;
        let sync = SparseSync::new(backend, collective, np, self.variant.sync.clone())?;
        let mut st = InnerState {
            sync,
            theta,
            delta: vec![0.0; np],
            theta64: vec![0.0; np],
            grad: vec![0.0; np],
            momentum: vec![0.0; np],
            reports: Vec::new(),
            sync_s: 0.0,
        };
        let mut rng = SplitMix64::new(cfg.seed ^ (0x9E37 * (self.rank as u64 + 1)));
        let slowness = if cfg.workers > 1 { self.rank as f64 / (cfg.workers - 1) as f64 } else { 0.0 };
        let worker = self.rank as u64;
        let synchronous = matches!(self.variant.outer, OuterMode::Synchronous);
        let mut lease: Option<Lease> = Some(self.coordinator.checkout(worker)?);
        let mut lambda: Vec<f64> = lease.as_ref().map_or_else(
            || vec![0.0; range.len()],
            |l| l.params[range.clone()].iter().map(|&v| f64::from(v)).collect(),
        );
        let mut backpressure = 0u64;
        let mut warm: Option<Vec<f64>> = None;
        let mut commit_id = 0u64;
        for _round in 0..cfg.rounds {
            let weights: Vec<f64> = lambda.iter().map(|&l| sigmoid(l)).collect();
            for _ in 0..cfg.inner_steps {
                st.step(&shard, &weights, cfg)?;
            }
            if let Some(l) = lease.take() {
                let t0 = Instant::now();
                let theta64: Vec<f64> = st.theta.iter().map(|&v| f64::from(v)).collect();
                let inner = InnerProblem { train: &shard, lambda: &lambda, denom: shard.len() as f64, mu: cfg.mu };
                let mut v_out = Vec::new();
                let hg = implicit_hypergradient(
                    &theta64,
                    &inner,
                    &p.val,
                    CgOptions { tol: 1e-8, max_iter: cfg.cg_iters },
                    warm.as_deref(),
                    Some(&mut v_out),
                );
                warm = Some(v_out);
                // The shard's Hessian stands in for the full one; the mixed
                // term's 1/|shard| becomes the global 1/n.
                let scale = shard.len() as f64 / n as f64;
                let mut full = vec![0.0f32; n];
                for (dst, g) in full[range.clone()].iter_mut().zip(&hg.grad) {
                    *dst = (g * scale) as f32;
                }
                let delay = t0.elapsed().mul_f64(cfg.jitter * 0.5 * (slowness + rng.next_f64()));
                std::thread::sleep(delay);
                commit_id += 1;
                let request = CommitRequest { commit_id, hypergradient: full, validation_loss: hg.val_loss as f32 };
                let outcome = self.coordinator.commit(&l, request)?;
                (self.on_commit)();
                if synchronous {
                    if let CommitOutcome::Accepted { published: None, .. } = outcome {
                        self.coordinator.wait_for_version(l.version, cfg.timeout)?;
                    }
                }
            }
            // Backpressure: do not block (the other ranks wait for this one
            // in the next collective); keep the old lambda for a round.
            match self.coordinator.checkout_timeout(worker, Duration::from_millis(1)) {
                Ok(l) => {
                    lambda = l.params[range.clone()].iter().map(|&v| f64::from(v)).collect();
                    lease = Some(l);
                }
                Err(Error::Coordinator(chronos_sync::error::CoordinatorError::Backpressure { .. })) => {
                    backpressure += 1
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(l) = lease.take() {
            self.coordinator.release(&l)?;
        }
        // Every commit is in: all workers read the same final lambda.
        self.barrier.wait(cfg.timeout)?;
        let final_lambda = self.coordinator.outer_params();
        let weights: Vec<f64> = final_lambda[range].iter().map(|&l| sigmoid(f64::from(l))).collect();
        for _ in 0..cfg.final_steps {
            st.step(&shard, &weights, cfg)?;
        }
        let theta = (self.rank == 0).then(|| st.theta.clone());
        Ok(WorkerOutput { reports: st.reports, sync_s: st.sync_s, backpressure, theta })
    }
}
