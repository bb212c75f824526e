//! [`ThresholdBudget`]: the optional budget mode that steers the
//! significance threshold after warm-up toward a target sync rate or a
//! target of packed bytes per step (docs/threshold-budget.md).

use crate::error::{Error, Result};

/// What the budget controller steers toward.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum BudgetTarget {
    /// The fraction of steps that sync, in (0, 1].
    SyncRate(f64),
    /// Packed payload bytes per rank per step (all ranks' packed buffers
    /// of the bucket divided by the world size, averaged over steps,
    /// syncing or not); finite and > 0.
    BytesPerStep(f64),
}

/// Budget mode of the significance threshold: after warm-up, each bucket's
/// `tau` is steered inside `[min_threshold, max_threshold]` by a
/// multiplicative law (docs/threshold-budget.md) so that the bucket's sync
/// rate approaches the target's rate. Every input of the law is voted or
/// exchanged (the sync decision, the gathered buffer lengths), so every
/// rank holds the same bits of `tau`.
///
/// Requires `adaptive` and `min_threshold > 0` (see
/// [`crate::SyncConfig::validate`]).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ThresholdBudget {
    /// What to steer toward.
    pub target: BudgetTarget,
    /// Relative step of the law, in (0, 1]: a sync multiplies `tau` by
    /// `1 + gain * (1 - r)`, a step without one divides it by
    /// `1 + gain * r`. Larger is faster and noisier; the stationary sync
    /// rate is off the target rate by O(gain).
    pub gain: f64,
}

impl ThresholdBudget {
    /// The default gain, 0.05.
    pub const DEFAULT_GAIN: f64 = 0.05;

    /// Steer toward `rate`, the fraction of steps that sync, with the
    /// default gain.
    pub fn sync_rate(rate: f64) -> Self {
        ThresholdBudget { target: BudgetTarget::SyncRate(rate), gain: Self::DEFAULT_GAIN }
    }

    /// Steer toward `bytes` packed payload bytes per rank per step, with
    /// the default gain.
    pub fn bytes_per_step(bytes: f64) -> Self {
        ThresholdBudget { target: BudgetTarget::BytesPerStep(bytes), gain: Self::DEFAULT_GAIN }
    }

    /// The same budget with another gain.
    pub fn with_gain(mut self, gain: f64) -> Self {
        self.gain = gain;
        self
    }

    /// Checks the target and the gain against their documented ranges;
    /// errors name the field (`budget.target`, `budget.gain`).
    pub fn validate(&self) -> Result<()> {
        match self.target {
            BudgetTarget::SyncRate(r) => {
                if !(r.is_finite() && r > 0.0 && r <= 1.0) {
                    return Err(invalid("budget.target", format!("sync rate must be in (0, 1], got {r}")));
                }
            }
            BudgetTarget::BytesPerStep(b) => {
                if !(b.is_finite() && b > 0.0) {
                    return Err(invalid("budget.target", format!("bytes per step must be finite and > 0, got {b}")));
                }
            }
        }
        if !(self.gain.is_finite() && self.gain > 0.0 && self.gain <= 1.0) {
            return Err(invalid("budget.gain", format!("must be in (0, 1], got {}", self.gain)));
        }
        Ok(())
    }

    /// Appends the fingerprint encoding (see
    /// [`crate::SyncConfig::fingerprint`]): the target's tag byte (0
    /// `SyncRate`, 1 `BytesPerStep`), its f64 bits, then the gain's f64
    /// bits.
    pub(super) fn hash_into(&self, h: &mut super::Fnv1a) {
        let (tag, value) = match self.target {
            BudgetTarget::SyncRate(r) => (0u8, r),
            BudgetTarget::BytesPerStep(b) => (1u8, b),
        };
        h.bytes(&[tag]);
        h.u64(value.to_bits());
        h.u64(self.gain.to_bits());
    }
}

fn invalid(field: &'static str, reason: String) -> Error {
    Error::InvalidConfig { field, reason }
}
