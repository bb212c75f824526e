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
use chronos_sync::coordinator::{
    Coordinator, CoordinatorApi, CoordinatorConfig, Lease, OuterOptimizer, TimescaleGroup,
};
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

/// How the final fit weights the training examples with the learned `lambda`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalWeights {
    /// `sigmoid(lambda_i)`: the weights the outer problem optimized.
    Sigmoid,
    /// 1 when `lambda_i >= 0`, else 0: drop the examples judged corrupted.
    Threshold,
}

impl FinalWeights {
    /// The weight of an example with outer parameter `lambda`.
    pub fn weight(self, lambda: f64) -> f64 {
        match self {
            FinalWeights::Sigmoid => super::model::sigmoid(lambda),
            FinalWeights::Threshold => {
                if lambda >= 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

/// The update rule of the example weights `lambda` (the coordinator's outer
/// optimizer; `log mu` has its own timescale group).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OuterRule {
    /// Adam: every `lambda_i` moves at about the learning rate whatever the
    /// size of its hypergradient. Why it is not the default: the
    /// hypergradient of a flipped example the inner model has memorized
    /// shrinks towards zero (about 100x over the rounds here), and Adam's
    /// per-coordinate normalization turns that vanishing, noisy signal back
    /// into full-size steps, so such examples drift up among the clean ones.
    Adam,
    /// SGD with heavy-ball momentum: steps proportional to the hypergradient,
    /// so an example whose signal vanished stays near `lambda = 0` (weight
    /// 1/2) while those the validation loss clearly wants climb; the learning
    /// rate must match the hypergradient's scale (about `1/n` per example).
    Sgd {
        /// Heavy-ball momentum in `[0, 1)`.
        momentum: f32,
    },
}

/// Where each hypergradient's conjugate-gradient solve `H v = grad F` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmStart {
    /// From zero.
    None,
    /// From the worker's previous solution.
    Last,
    /// From the score-weighted mean of the `k` solutions of past rounds whose
    /// `lambda` shard is nearest the current one (Euclidean similarity, a
    /// recency decay), held in the worker's `ContinuumMemory`.
    Memory {
        /// Solutions combined.
        k: usize,
    },
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
    /// How the final fit weights the training examples.
    pub final_weights: FinalWeights,
    /// Whether the final fit starts from a zero model (and a fresh sync
    /// engine) rather than from the rounds' model.
    pub final_restart: bool,
    /// Whether the final fit also trains on the validation set (weight 1,
    /// split across the ranks like the training set).
    pub final_with_val: bool,
    /// L2 strength of the inner problem (its initial value when learned).
    pub mu: f64,
    /// L2 strength of the final fit, when it differs from the rounds' (the
    /// learned or fixed `mu`). Why: a stronger L2 during the rounds keeps
    /// the inner model from memorizing the flipped labels, whose
    /// hypergradient would otherwise vanish, while the final fit and the
    /// baselines keep the weaker one that suits the clean data.
    pub final_mu: Option<f64>,
    /// Learn `log mu` as one more outer parameter (appended after the
    /// `lambda`s) on a slower timescale: updated every `mu_every` outer
    /// rounds with its own learning rate, while the `lambda`s update every round.
    pub timescales: bool,
    /// Outer rounds between two updates of `log mu` (>= 1).
    pub mu_every: u64,
    /// Learning rate of `log mu`, under `outer_rule` (momentum 0.97).
    pub mu_lr: f32,
    /// Inner learning rate.
    pub inner_lr: f64,
    /// Inner heavy-ball momentum, in `[0, 1)`.
    pub momentum: f64,
    /// Momentum factor masking under sparse selections: an entry's momentum
    /// is cleared once its accumulated update has been sent (see the worker).
    pub momentum_masking: bool,
    /// Update rule of the example weights.
    pub outer_rule: OuterRule,
    /// Learning rate of the example weights under `outer_rule`, per
    /// synchronous outer step. Under bounded asynchrony an SGD step combines
    /// fewer commits (`min_commits` of `workers`), and its rate is scaled by
    /// `min_commits / workers` so that a round moves each weight as far.
    pub outer_lr: f32,
    /// Most conjugate-gradient iterations per hypergradient.
    pub cg_iters: usize,
    /// CG stops once `||H v - grad F|| <= cg_tol ||grad F||`, in `(0, 1)`.
    pub cg_tol: f64,
    /// Where each CG solve starts.
    pub warm_start: WarmStart,
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
            final_steps: 300,
            final_weights: FinalWeights::Sigmoid,
            final_restart: true,
            final_with_val: true,
            mu: 1e-3,
            final_mu: Some(1e-4),
            timescales: true,
            mu_every: 5,
            mu_lr: 0.1,
            inner_lr: 1.0,
            momentum: 0.97,
            momentum_masking: true,
            outer_rule: OuterRule::Sgd { momentum: 0.9 },
            outer_lr: 100.0,
            cg_iters: 30,
            cg_tol: 1e-2,
            warm_start: WarmStart::Memory { k: 3 },
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
        if let Some(mu) = self.final_mu {
            if !(mu.is_finite() && mu > 0.0) {
                return bad("final_mu", format!("must be finite and > 0, got {mu}"));
            }
        }
        if self.mu_every == 0 {
            return bad("mu_every", "must be >= 1".into());
        }
        if !(self.mu_lr.is_finite() && self.mu_lr > 0.0) {
            return bad("mu_lr", format!("must be finite and > 0, got {}", self.mu_lr));
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
        if let OuterRule::Sgd { momentum } = self.outer_rule {
            if !(momentum.is_finite() && (0.0..1.0).contains(&momentum)) {
                return bad("outer_rule", format!("SGD momentum must be in [0, 1), got {momentum}"));
            }
        }
        if self.cg_iters == 0 {
            return bad("cg_iters", "must be >= 1".into());
        }
        if !(self.cg_tol.is_finite() && self.cg_tol > 0.0 && self.cg_tol < 1.0) {
            return bad("cg_tol", format!("must be in (0, 1), got {}", self.cg_tol));
        }
        if let WarmStart::Memory { k: 0 } = self.warm_start {
            return bad("warm_start", "memory warm starts need k >= 1".into());
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
/// versions in flight, commits per outer step), `cfg.outer_rule` at `cfg.outer_lr`,
/// `cfg.timeout` for checkouts and leases, and with `cfg.timescales` the
/// timescale group of `log mu` (index `n`, every `cfg.mu_every` rounds, the
/// same rule at `cfg.mu_lr`, momentum 0.97). Errors: an invalid `cfg`.
pub fn coordinator_config(problem: &Problem, cfg: &SystemConfig, variant: &Variant) -> Result<CoordinatorConfig> {
    let n = problem.train.len();
    cfg.validate(n)?;
    let w = cfg.workers;
    let builder = match variant.outer {
        OuterMode::Synchronous => CoordinatorConfig::builder().max_staleness(0).max_in_flight(1).min_commits(w),
        OuterMode::BoundedAsync { max_staleness, max_in_flight, min_commits } => CoordinatorConfig::builder()
            .max_staleness(max_staleness)
            .max_in_flight(max_in_flight)
            .min_commits(min_commits.clamp(1, w)),
    }
    .optimizer(match cfg.outer_rule {
        OuterRule::Adam => OuterOptimizer::adam(cfg.outer_lr),
        OuterRule::Sgd { momentum } => {
            // An outer step applies the weighted mean of its commits, and each
            // commit carries only its worker's shard of lambda: with m of W
            // commits per step a shard moves lr * g / m per round instead of
            // lr * g / W. Scaling by m / W keeps a round's movement the same
            // under every outer mode (Adam is scale-free and needs nothing).
            let per_step = match variant.outer {
                OuterMode::Synchronous => w,
                OuterMode::BoundedAsync { min_commits, .. } => min_commits.clamp(1, w),
            };
            OuterOptimizer::Sgd { lr: cfg.outer_lr * per_step as f32 / w as f32, momentum }
        }
    })
    .checkout_timeout(cfg.timeout)
    .lease_ttl(cfg.timeout);
    let builder = if cfg.timescales {
        builder.timescale(TimescaleGroup {
            range: n..n + 1,
            every: cfg.mu_every,
            lr: cfg.mu_lr,
            momentum: 0.97,
            warmup: 0,
        })
    } else {
        builder
    };
    builder.build()
}

/// Initial outer parameters for a run: `lambda = 0` (weight 1/2) for every
/// training example, then `log cfg.mu` when `cfg.timescales`.
pub fn initial_outer_params(problem: &Problem, cfg: &SystemConfig, _variant: &Variant) -> Vec<f32> {
    let mut outer = vec![0.0f32; problem.train.len()];
    if cfg.timescales {
        outer.push(cfg.mu.ln() as f32);
    }
    outer
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
