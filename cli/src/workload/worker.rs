//! One rank's whole hyper-cleaning run, generic over the collective (thread
//! ranks over `LocalCollective`, MPI processes) and over where the
//! coordinator lives (in-process, or a remote service behind
//! [`OuterStore`]).
//!
//! Per round: `inner_steps` synced steps of momentum gradient descent on the
//! rank's shard, then the implicit hypergradient of the shard's `lambda` at
//! the synced model, committed against the lease checked out at the start of
//! the round (with `dF/d(log mu)` in the last entry when the L2 strength is
//! an outer parameter), then a new checkout that never waits (backpressure: keep the
//! old `lambda` for a round, because the other ranks wait for this one in the
//! next collective). After the rounds a collective barrier (so every commit
//! is in), every rank reads the same final outer parameters and runs the
//! final synced steps: by default from a zero model, on its training shard
//! weighted by the learned `lambda` (see `FinalWeights`) plus its share of
//! the validation set at weight 1, at the learned `mu` (the command's long
//! help says why each of these).

use std::time::{Duration, Instant};

use super::hypergrad::{CgOptions, InnerProblem, implicit_hypergradient, validation_loss_grad};
use super::metrics::{RankOutput, StepRecord, TracePoint};
use super::model::{Design, accuracy, loss_grad, sigmoid};
use super::problem::Problem;
use super::rng::SplitMix64;
use super::system::{OuterMode, OuterStore, SystemConfig, Variant, shard_range};
use super::warm::WarmStarter;
use chronos_sync::backend::{Backend, CpuBackend};
use chronos_sync::collective::{Collective, SharedCollective};
use chronos_sync::config::Selection;
use chronos_sync::coordinator::{CommitOutcome, CommitRequest, Lease};
use chronos_sync::error::{CoordinatorError, Error, Result};
use chronos_sync::sync::SparseSync;

/// One rank's model-side state: the synced model, the update buffer and momentum.
struct InnerState<C: Collective> {
    sync: SparseSync<CpuBackend, SharedCollective<C>>,
    theta: Vec<f32>,
    delta: Vec<f32>,
    theta64: Vec<f64>,
    grad: Vec<f64>,
    momentum: Vec<f64>,
    mask: Option<MomentumMask>,
    steps: Vec<StepRecord>,
    sync_s: f64,
}

/// Momentum factor masking (as in Deep Gradient Compression): once an
/// entry's accumulated update has been sent, its momentum is cleared.
///
/// Why: the momentum is applied before the error-feedback accumulator, so an
/// entry that waited `s` steps is sent with `s` steps of momentum already in
/// it; a momentum that kept its value would push the same history again on
/// every later step, and the sparse run would overshoot where the dense one
/// does not. Dense sync sends every entry on every step, where masking would
/// turn the momentum off, so it is used with sparse selections only.
///
/// Which entries were sent is read from the engine's accumulator: a sent
/// entry keeps at most its quantization residual (under 1% of what it held
/// for bf16 and f32, 0 for f32), an unsent one all of it.
struct MomentumMask {
    before: Vec<f32>,
    after: Vec<f32>,
    cleared: u64,
}

impl MomentumMask {
    fn new(n: usize) -> Self {
        MomentumMask { before: vec![0.0; n], after: vec![0.0; n], cleared: 0 }
    }

    /// Clears the momentum of every entry sent this step (`delta` was added
    /// to the accumulator `before`, which now reads `after`).
    fn clear_sent(&mut self, momentum: &mut [f64], delta: &[f32]) {
        for ((m, d), (&b, &a)) in momentum.iter_mut().zip(delta).zip(self.before.iter().zip(&self.after)) {
            let held = b + d;
            if held != 0.0 && a.abs() <= 0.01 * held.abs() {
                *m = 0.0;
                self.cleared += 1;
            }
        }
    }
}

impl<C: Collective> InnerState<C> {
    /// One synced inner step on `shard` with example weights `weights`,
    /// normalized by `denom`, at L2 strength `mu`.
    fn step(&mut self, shard: &Design, weights: &[f64], denom: f64, mu: f64, cfg: &SystemConfig) -> Result<()> {
        for (d, &s) in self.theta64.iter_mut().zip(&self.theta) {
            *d = f64::from(s);
        }
        loss_grad(&self.theta64, shard, weights, denom, mu, &mut self.grad);
        for ((m, g), d) in self.momentum.iter_mut().zip(&self.grad).zip(self.delta.iter_mut()) {
            *m = cfg.momentum * *m + g;
            *d = (-cfg.inner_lr * *m) as f32;
        }
        if let Some(mask) = &mut self.mask {
            self.sync.read_accumulator(&mut mask.before)?;
        }
        let t0 = Instant::now();
        let report = self.sync.step(&self.delta, &mut self.theta)?;
        self.sync_s += t0.elapsed().as_secs_f64();
        if let Some(mask) = self.mask.as_mut().filter(|_| report.entries_sent > 0) {
            self.sync.read_accumulator(&mut mask.after)?;
            mask.clear_sent(&mut self.momentum, &self.delta);
        }
        self.steps.push(StepRecord::from(&report));
        Ok(())
    }

    fn theta64(&self) -> Vec<f64> {
        self.theta.iter().map(|&v| f64::from(v)).collect()
    }
}

/// The inner L2 strength at outer parameters `outer`: `exp(outer[n])` when
/// `log mu` is an outer parameter (`cfg.timescales`), else `cfg.mu`.
pub(crate) fn inner_mu(outer: &[f32], n: usize, cfg: &SystemConfig) -> f64 {
    match outer.get(n) {
        Some(&log_mu) if cfg.timescales => f64::from(log_mu).exp(),
        _ => cfg.mu,
    }
}

/// Rank 0's trace point for the current model, trained against outer version `version`.
fn trace_point<C: Collective>(p: &Problem, st: &InnerState<C>, start: Instant, version: u64) -> TracePoint {
    let theta = st.theta64();
    TracePoint {
        outer_version: version,
        elapsed_s: start.elapsed().as_secs_f64(),
        inner_step: st.steps.len() as u64,
        test_accuracy: accuracy(&theta, &p.test),
        val_loss: validation_loss_grad(&theta, &p.val).0,
    }
}

/// One rank's whole run: rounds, commits, the final barrier (a collective
/// `all_reduce_max`, so it works for thread ranks and MPI processes alike),
/// the final steps. `rank` must be `collective.rank()`; `start` is the job's
/// common start instant (trace times are measured from it); `on_commit` is
/// called after every commit. Rank 0 returns the final model and the trace.
///
/// Errors: an invalid `cfg` or sync configuration
/// ([`Error::InvalidConfig`]), a `rank` that is not the collective's, and
/// every collective or coordinator error (timeouts included: no call waits
/// longer than `cfg.timeout`).
#[allow(clippy::too_many_arguments)]
pub fn run_rank<C: Collective, K: OuterStore + ?Sized>(
    problem: &Problem,
    cfg: &SystemConfig,
    variant: &Variant,
    rank: usize,
    collective: C,
    coordinator: &K,
    start: Instant,
    on_commit: &(dyn Fn() + Sync),
) -> Result<RankOutput> {
    let p = problem;
    let n = p.train.len();
    cfg.validate(n)?;
    variant.sync.validate()?;
    if collective.rank() != rank || collective.world_size() != cfg.workers {
        return Err(Error::InvalidConfig {
            field: "rank",
            reason: format!(
                "rank {rank} of {} workers, but the collective is rank {} of {}",
                cfg.workers,
                collective.rank(),
                collective.world_size()
            ),
        });
    }
    let range = shard_range(n, cfg.workers, rank);
    let shard = p.train.select(&range.clone().collect::<Vec<_>>());
    let np = p.param_len();
    let backend = CpuBackend::with_threads(1)?;
    let mut theta = backend.alloc(np)?;
    backend.upload(&vec![0.0; np], &mut theta)?;
    let shared = SharedCollective::new(collective);
    let mut barrier = shared.clone();
    let sync = SparseSync::new(backend, shared, np, variant.sync.clone())?;
    let mut st = InnerState {
        sync,
        theta,
        delta: vec![0.0; np],
        theta64: vec![0.0; np],
        grad: vec![0.0; np],
        momentum: vec![0.0; np],
        mask: (cfg.momentum_masking && variant.sync.selection != Selection::Dense).then(|| MomentumMask::new(np)),
        steps: Vec::new(),
        sync_s: 0.0,
    };
    let mut rng = SplitMix64::new(cfg.seed ^ (0x9E37 * (rank as u64 + 1)));
    let slowness = if cfg.workers > 1 { rank as f64 / (cfg.workers - 1) as f64 } else { 0.0 };
    let worker = rank as u64;
    let synchronous = matches!(variant.outer, OuterMode::Synchronous);
    let mut lease: Option<Lease> = Some(coordinator.checkout(worker)?);
    let mut lambda: Vec<f64> = lease
        .as_ref()
        .map_or_else(|| vec![0.0; range.len()], |l| l.params[range.clone()].iter().map(|&v| f64::from(v)).collect());
    let mut mu = lease.as_ref().map_or(cfg.mu, |l| inner_mu(&l.params, n, cfg));
    let mut out = RankOutput { rank, ..RankOutput::default() };
    let mut warm = WarmStarter::new(cfg.warm_start, shard.len(), np);
    let denom = shard.len() as f64;
    for _round in 0..cfg.rounds {
        let weights: Vec<f64> = lambda.iter().map(|&l| sigmoid(l)).collect();
        for _ in 0..cfg.inner_steps {
            st.step(&shard, &weights, denom, mu, cfg)?;
        }
        if rank == 0 {
            let version =
                lease.as_ref().map_or_else(|| coordinator.current_state().map(|s| s.version), |l| Ok(l.version))?;
            out.trace.push(trace_point(p, &st, start, version));
        }
        if let Some(l) = lease.take() {
            let t0 = Instant::now();
            let theta64 = st.theta64();
            let inner = InnerProblem { train: &shard, lambda: &lambda, denom, mu };
            let mut v_out = Vec::new();
            let guess = warm.guess(&lambda)?;
            let hg = implicit_hypergradient(
                &theta64,
                &inner,
                &p.val,
                CgOptions { tol: cfg.cg_tol, max_iter: cfg.cg_iters },
                guess.as_deref(),
                Some(&mut v_out),
            );
            warm.record(&lambda, v_out, hg.val_loss)?;
            out.cg_iterations.push(hg.cg_iterations as u32);
            // The shard's Hessian stands in for the full one; the mixed
            // term's 1/|shard| becomes the global 1/n.
            let scale = shard.len() as f64 / n as f64;
            let mut full = vec![0.0f32; l.params.len()];
            for (dst, g) in full[range.clone()].iter_mut().zip(&hg.grad) {
                *dst = (g * scale) as f32;
            }
            if cfg.timescales {
                // Every rank's shard Hessian estimates the whole problem's
                // derivative in log mu: no shard scaling.
                full[n] = hg.log_mu as f32;
            }
            let delay = t0.elapsed().mul_f64(cfg.jitter * 0.5 * (slowness + rng.next_f64()));
            std::thread::sleep(delay);
            out.commits += 1;
            let request =
                CommitRequest { commit_id: out.commits, hypergradient: full, validation_loss: hg.val_loss as f32 };
            let outcome = coordinator.commit(&l, request)?;
            on_commit();
            if synchronous {
                if let CommitOutcome::Accepted { published: None, .. } = outcome {
                    coordinator.wait_for_version(l.version, cfg.timeout)?;
                }
            }
        }
        match coordinator.try_checkout(worker) {
            Ok(l) => {
                lambda = l.params[range.clone()].iter().map(|&v| f64::from(v)).collect();
                mu = inner_mu(&l.params, n, cfg);
                lease = Some(l);
            }
            Err(Error::Coordinator(CoordinatorError::Backpressure { .. })) => out.backpressure += 1,
            Err(e) => return Err(e),
        }
    }
    if let Some(l) = lease.take() {
        coordinator.release(&l)?;
    }
    // Every commit is in once every rank has passed this point: all ranks
    // then read the same final outer parameters.
    barrier.all_reduce_max(&mut [0u32])?;
    let final_state = coordinator.current_state()?;
    let final_outer = final_state.params;
    let mu_rounds = inner_mu(&final_outer, n, cfg);
    let mu = cfg.final_mu.unwrap_or(mu_rounds);
    let mut weights: Vec<f64> = final_outer[range].iter().map(|&l| cfg.final_weights.weight(f64::from(l))).collect();
    let fit_set = if cfg.final_with_val {
        // The validation labels are clean: once the outer problem no longer
        // needs them as a held-out signal, they are the best training data.
        let val_range = shard_range(p.val.len(), cfg.workers, rank);
        weights.resize(shard.len() + val_range.len(), 1.0);
        shard.concat(&p.val.select(&val_range.collect::<Vec<_>>()))
    } else {
        shard.clone()
    };
    let fit_denom = fit_set.len() as f64;
    if cfg.final_restart {
        // With a weak L2 term the model forgets slowly: what it fitted to the
        // corrupted labels during the rounds (at weights that were only
        // beginning to fall) would survive the final fit. So the fit starts
        // from zero, with a fresh sync engine (no error-feedback residue of
        // the rounds' model), identically on every rank.
        // A budgeted threshold ramps and is steered again from its start:
        // the rounds' tau is far above what a model restarted from zero
        // needs (its significance is relative to |theta|).
        st.sync = SparseSync::new(CpuBackend::with_threads(1)?, barrier.clone(), np, variant.sync.clone())?;
        st.theta.fill(0.0);
        st.momentum.fill(0.0);
    }
    for _ in 0..cfg.final_steps {
        st.step(&fit_set, &weights, fit_denom, mu, cfg)?;
    }
    if rank == 0 {
        out.trace.push(trace_point(p, &st, start, final_state.version));
        out.theta = Some(st.theta.clone());
    }
    out.mu_final = mu;
    out.mu_rounds = mu_rounds;
    out.steps = std::mem::take(&mut st.steps);
    out.sync_s = st.sync_s;
    out.momentum_cleared = st.mask.as_ref().map_or(0, |m| m.cleared);
    Ok(out)
}

/// How long [`OuterStore::try_checkout`] waits on the in-process coordinator:
/// long enough to take the lock, short enough never to stall the group.
pub(crate) const TRY_CHECKOUT_WAIT: Duration = Duration::from_millis(1);
