//! The budget controller of one bucket (docs/threshold-budget.md): the
//! steered threshold and the running mean of the bucket's packed bytes per
//! sync, updated after every successful step from voted and exchanged
//! quantities only.
//!
//! The update uses IEEE basic arithmetic only (`+ - * /`, `min`, `max`),
//! which is correctly rounded everywhere: transcendental functions (`exp`,
//! `ln`, `powf`) come from the platform's libm and may differ in the last
//! bit between hosts, and every rank must hold the same bits of `tau`.

use crate::config::{BudgetTarget, SyncConfig, ThresholdBudget};

/// Syncs over which the bytes-per-sync mean is exact; after that it is an
/// exponential moving average with weight `1 / BYTES_MEAN_WINDOW`.
pub(crate) const BYTES_MEAN_WINDOW: u64 = 64;

/// One bucket's controller state; all of it is in the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BudgetController {
    /// The threshold in force from `warmup_steps` on.
    pub(crate) tau: f64,
    /// Running mean of the bucket's packed bytes per rank per sync (all
    /// ranks' buffers divided by the world size); 0 before the first sync.
    pub(crate) mean_bytes: f64,
    /// Syncs counted into `mean_bytes` (saturating).
    pub(crate) syncs: u64,
}

impl BudgetController {
    /// The state at the start: `tau = threshold`, no sync seen.
    pub(crate) fn new(config: &SyncConfig) -> Self {
        BudgetController { tau: config.threshold, mean_bytes: 0.0, syncs: 0 }
    }

    /// Records one successful step `t` (counted from 1). `synced` is the
    /// vote's verdict for the bucket; `bytes_per_rank` (read only when
    /// `synced`) is the sum of every rank's packed buffer lengths for the
    /// bucket divided by the world size. During warm-up (`t <
    /// warmup_steps`) only the bytes mean moves; from then on `tau` takes
    /// one step of the law and is clamped to `[min_threshold,
    /// max_threshold]`. With a bytes target, `tau` does not move before the
    /// first sync has given a mean.
    pub(crate) fn observe(
        &mut self,
        config: &SyncConfig,
        budget: &ThresholdBudget,
        t: u64,
        synced: bool,
        bytes_per_rank: f64,
    ) {
        if synced {
            self.syncs = self.syncs.saturating_add(1);
            let weight = self.syncs.min(BYTES_MEAN_WINDOW) as f64;
            self.mean_bytes += (bytes_per_rank - self.mean_bytes) / weight;
        }
        if t < config.warmup_steps {
            return;
        }
        let Some(rate) = target_rate(budget.target, self.mean_bytes) else { return };
        let g = budget.gain;
        let tau = if synced { self.tau * (1.0 + g * (1.0 - rate)) } else { self.tau / (1.0 + g * rate) };
        self.tau = tau.max(config.min_threshold).min(config.max_threshold);
    }
}

/// The sync rate `r*` the law steers toward: the target itself, or the
/// bytes target over the mean bytes per sync, at most 1. `None` for a bytes
/// target before any sync.
pub(crate) fn target_rate(target: BudgetTarget, mean_bytes: f64) -> Option<f64> {
    match target {
        BudgetTarget::SyncRate(r) => Some(r),
        BudgetTarget::BytesPerStep(b) => (mean_bytes > 0.0).then(|| (b / mean_bytes).min(1.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(budget: ThresholdBudget) -> SyncConfig {
        SyncConfig { budget: Some(budget), warmup_steps: 10, ..SyncConfig::default() }
    }

    #[test]
    fn warm_up_moves_only_the_bytes_mean() {
        let budget = ThresholdBudget::sync_rate(0.2);
        let c = config(budget);
        let mut s = BudgetController::new(&c);
        for t in 1..10 {
            s.observe(&c, &budget, t, t % 2 == 0, 100.0 * t as f64);
        }
        assert_eq!(s.tau.to_bits(), c.threshold.to_bits());
        assert_eq!((s.syncs, s.mean_bytes), (4, 500.0)); // mean of 200, 400, 600, 800
    }

    #[test]
    fn one_step_of_the_law_is_the_documented_arithmetic() {
        let budget = ThresholdBudget::sync_rate(0.2);
        let c = config(budget);
        let mut s = BudgetController::new(&c);
        s.observe(&c, &budget, 10, true, 8.0);
        assert_eq!(s.tau.to_bits(), (0.01f64 * (1.0 + 0.05 * (1.0 - 0.2))).to_bits());
        let before = s.tau;
        s.observe(&c, &budget, 11, false, 0.0);
        assert_eq!(s.tau.to_bits(), (before / (1.0 + 0.05 * 0.2)).to_bits());
    }

    #[test]
    fn tau_is_clamped_to_the_bounds() {
        let budget = ThresholdBudget::sync_rate(0.01).with_gain(1.0);
        let c = config(budget);
        let mut s = BudgetController::new(&c);
        for t in 10..200 {
            s.observe(&c, &budget, t, true, 8.0);
        }
        assert_eq!(s.tau, c.max_threshold);
        for t in 200..2000 {
            s.observe(&c, &budget, t, false, 0.0);
        }
        assert_eq!(s.tau, c.min_threshold);
    }

    #[test]
    fn a_bytes_target_waits_for_the_first_sync_and_caps_the_rate_at_one() {
        let budget = ThresholdBudget::bytes_per_step(50.0);
        let c = config(budget);
        let mut s = BudgetController::new(&c);
        s.observe(&c, &budget, 10, false, 0.0);
        assert_eq!(s.tau, c.threshold, "no mean yet: no update");
        assert_eq!(target_rate(budget.target, 0.0), None);
        s.observe(&c, &budget, 11, true, 200.0);
        assert_eq!(s.mean_bytes, 200.0);
        assert_eq!(target_rate(budget.target, s.mean_bytes), Some(0.25));
        assert_eq!(target_rate(budget.target, 10.0), Some(1.0));
    }

    #[test]
    fn the_bytes_mean_becomes_a_moving_average_after_the_window() {
        let budget = ThresholdBudget::bytes_per_step(50.0);
        let c = config(budget);
        let mut s = BudgetController::new(&c);
        for t in 0..BYTES_MEAN_WINDOW {
            s.observe(&c, &budget, t + 1, true, 100.0);
        }
        assert_eq!(s.mean_bytes, 100.0);
        s.observe(&c, &budget, 100, true, 100.0 + BYTES_MEAN_WINDOW as f64);
        assert_eq!(s.mean_bytes, 101.0);
    }
}
