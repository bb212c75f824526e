//! The distributed system: `W` ranks train the inner model data-parallel,
//! exchanging their model updates through `SparseSync` over a collective;
//! the outer parameters (one `lambda` per training example) live in the
//! coordinator with bounded asynchrony.
//!
//! The pieces a launcher needs, whatever runs the ranks: [`coordinator_config`]
//! and [`initial_outer_params`] build the coordinator, [`run_rank`] is one
//! rank's whole run (see [`super::worker`]), [`summarize`] turns every rank's
//! [`RankOutput`] into the run's [`RunMetrics`]. [`run`] is the in-process
//! mode: `W` threads over `LocalCollective` and an in-process [`Coordinator`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::problem::Problem;
use chronos_sync::collective::LocalCollective;
use chronos_sync::config::SyncConfig;
use chronos_sync::coordinator::{Coordinator, CoordinatorApi, CoordinatorConfig, Lease, OuterOptimizer};
use chronos_sync::error::{Error, Result};

pub use super::metrics::{
    MODEL_LATENCY_S, RankOutput, RunMetrics, StepRecord, TracePoint, modeled_comm_seconds, summarize,
};
pub use super::worker::run_rank;

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

/// The rows of shard `r` of `n` examples over `w` workers (contiguous, sizes differ by at most 1).
pub(crate) fn shard_range(n: usize, w: usize, r: usize) -> std::ops::Range<usize> {
    (r * n / w)..((r + 1) * n / w)
}

/// What the worker loop needs from the coordinator beyond [`CoordinatorApi`].
pub trait OuterStore: CoordinatorApi {
    /// Checkout that does not wait under backpressure: returns
    /// [`chronos_sync::CoordinatorError::Backpressure`] at once when
    /// `max_in_flight` versions are out.
    fn try_checkout(&self, worker: u64) -> Result<Lease>;
}

impl OuterStore for Coordinator {
    fn try_checkout(&self, worker: u64) -> Result<Lease> {
        self.checkout_timeout(worker, super::worker::TRY_CHECKOUT_WAIT)
    }
}

impl<T: OuterStore + ?Sized> OuterStore for Arc<T> {
    fn try_checkout(&self, worker: u64) -> Result<Lease> {
        (**self).try_checkout(worker)
    }
}

/// The coordinator settings for a run: the variant's outer mode (staleness,
/// versions in flight, commits per outer step), Adam at `cfg.outer_lr`, and
/// `cfg.timeout` for checkouts and leases. Errors: an invalid `cfg`.
pub fn coordinator_config(problem: &Problem, cfg: &SystemConfig, variant: &Variant) -> Result<CoordinatorConfig> {
    cfg.validate(problem.train.len())?;
    let w = cfg.workers;
    match variant.outer {
        OuterMode::Synchronous => CoordinatorConfig::builder().max_staleness(0).max_in_flight(1).min_commits(w),
        OuterMode::BoundedAsync { max_staleness, max_in_flight, min_commits } => CoordinatorConfig::builder()
            .max_staleness(max_staleness)
            .max_in_flight(max_in_flight)
            .min_commits(min_commits.clamp(1, w)),
    }
    .optimizer(OuterOptimizer::adam(cfg.outer_lr))
    .checkout_timeout(cfg.timeout)
    .lease_ttl(cfg.timeout)
    .build()
}

/// Initial outer parameters for a run: `lambda = 0` (weight 1/2) for every
/// training example.
pub fn initial_outer_params(problem: &Problem, _cfg: &SystemConfig, _variant: &Variant) -> Vec<f32> {
    vec![0.0f32; problem.train.len()]
}

/// Runs `variant` on `problem` in-process: `cfg.workers` threads over a
/// `LocalCollective`, an in-process coordinator; `on_commit` is called after
/// every commit (e.g. to advance a progress bar).
pub fn run(
    problem: &Arc<Problem>,
    cfg: &SystemConfig,
    variant: &Variant,
    on_commit: Arc<dyn Fn() + Send + Sync>,
) -> Result<RunMetrics> {
    cfg.validate(problem.train.len())?;
    variant.sync.validate()?;
    let coordinator =
        Coordinator::new(initial_outer_params(problem, cfg, variant), coordinator_config(problem, cfg, variant)?)?;
    let collectives = LocalCollective::group(cfg.workers, cfg.timeout)?;
    let start = Instant::now();
    let tick = move || on_commit();
    let outputs: Vec<Result<RankOutput>> = std::thread::scope(|scope| {
        let handles: Vec<_> = collectives
            .into_iter()
            .enumerate()
            .map(|(rank, collective)| {
                let (coordinator, tick) = (&coordinator, &tick);
                scope.spawn(move || run_rank(problem, cfg, variant, rank, collective, coordinator, start, tick))
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
    let outputs: Vec<RankOutput> = outputs.into_iter().collect::<Result<_>>()?;
    Ok(summarize(problem, variant, &outputs, &coordinator, wall_s))
}
