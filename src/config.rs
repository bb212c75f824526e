//! Configuration of a [`crate::SparseSync`] instance, with the spec's defaults
//! and a validating builder.

use crate::error::{Error, Result};

/// Scalar type of the values on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum WireDtype {
    /// IEEE binary32: lossless, 4 bytes per value.
    F32,
    /// IEEE binary16: 2 bytes, range +-65504; larger magnitudes saturate.
    F16,
    /// bfloat16: 2 bytes, f32's range with 8 bits of mantissa (the default).
    #[default]
    Bf16,
}

impl WireDtype {
    /// Bytes one value occupies on the wire.
    pub const fn size(self) -> usize {
        match self {
            WireDtype::F32 => 4,
            WireDtype::F16 | WireDtype::Bf16 => 2,
        }
    }
    /// The code stored in the wire header.
    pub const fn code(self) -> u8 {
        match self {
            WireDtype::F32 => 0,
            WireDtype::F16 => 1,
            WireDtype::Bf16 => 2,
        }
    }
    /// Inverse of [`WireDtype::code`].
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(WireDtype::F32),
            1 => Some(WireDtype::F16),
            2 => Some(WireDtype::Bf16),
            _ => None,
        }
    }
}

/// Which entries of the accumulator a sync sends.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Selection {
    /// Exactly `k = max(1, floor(n * ratio))` entries of largest magnitude;
    /// ties go to the lower index.
    TopK {
        /// Fraction of entries to send, in (0, 1].
        ratio: f64,
    },
    /// A magnitude cut from histograms (no sort) so that
    /// `k <= count <= floor(k * (1 + slack))`.
    TopKApprox {
        /// Fraction of entries to send, in (0, 1].
        ratio: f64,
        /// Allowed relative excess over `k`, >= 0.
        slack: f64,
    },
    /// Every entry with `|acc_i| >= rel * sqrt(sum(acc^2) / n)`.
    Threshold {
        /// Multiple of the RMS of `acc`, >= 0.
        rel: f64,
    },
    /// Every entry (the dense baseline through the same path).
    Dense,
}

impl Default for Selection {
    fn default() -> Self {
        Selection::TopK { ratio: 0.01 }
    }
}

impl Selection {
    /// `k` for the top-k rules on a vector of `n` entries, `None` otherwise.
    pub fn k(&self, n: usize) -> Option<usize> {
        match *self {
            Selection::TopK { ratio } | Selection::TopKApprox { ratio, .. } => {
                Some(((n as f64 * ratio).floor() as usize).clamp(1, n.max(1)))
            }
            _ => None,
        }
    }
}

/// Everything that controls one [`crate::SparseSync`]. Build with
/// [`SyncConfig::builder`] (validated) or start from [`SyncConfig::default`]
/// (the spec's defaults) and call [`SyncConfig::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    /// Significance threshold after warm-up (and always, when not adaptive).
    pub threshold: f64,
    /// Ramp the threshold up from `min_threshold` during warm-up.
    pub adaptive: bool,
    /// Lower bound of the threshold (start of the warm-up ramp).
    pub min_threshold: f64,
    /// Upper bound of the threshold (ceiling for budget steering).
    pub max_threshold: f64,
    /// Steps of the warm-up ramp.
    pub warmup_steps: u64,
    /// Keep what was not sent (quantization error included) in the accumulator.
    pub error_feedback: bool,
    /// Force a sync after this many steps without one.
    pub max_accumulation_steps: u64,
    /// Which entries a sync sends.
    pub selection: Selection,
    /// Scalar type of the values on the wire.
    pub wire_dtype: WireDtype,
    /// Weight applied to the sum of rank contributions; `None` means `1 / W`.
    pub apply_weight: Option<f32>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            threshold: 0.01,
            adaptive: true,
            min_threshold: 0.001,
            max_threshold: 0.1,
            warmup_steps: 100,
            error_feedback: true,
            max_accumulation_steps: 50,
            selection: Selection::default(),
            wire_dtype: WireDtype::Bf16,
            apply_weight: None,
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig { field, reason: reason.into() }
}

fn check_non_negative(field: &'static str, v: f64) -> Result<()> {
    if !v.is_finite() || v < 0.0 {
        return Err(invalid(field, format!("must be finite and >= 0, got {v}")));
    }
    Ok(())
}

fn check_ratio(field: &'static str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0 && v <= 1.0) {
        return Err(invalid(field, format!("must be in (0, 1], got {v}")));
    }
    Ok(())
}

impl SyncConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> SyncConfigBuilder {
        SyncConfigBuilder { config: SyncConfig::default() }
    }

    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<()> {
        check_non_negative("threshold", self.threshold)?;
        check_non_negative("min_threshold", self.min_threshold)?;
        check_non_negative("max_threshold", self.max_threshold)?;
        if self.min_threshold > self.max_threshold {
            return Err(invalid(
                "min_threshold",
                format!("must not exceed max_threshold ({} > {})", self.min_threshold, self.max_threshold),
            ));
        }
        if self.adaptive {
            if self.warmup_steps == 0 {
                return Err(invalid("warmup_steps", "must be >= 1 when adaptive is on"));
            }
            if self.threshold < self.min_threshold || self.threshold > self.max_threshold {
                return Err(invalid(
                    "threshold",
                    format!(
                        "must lie in [min_threshold, max_threshold] = [{}, {}] when adaptive is on, got {}",
                        self.min_threshold, self.max_threshold, self.threshold
                    ),
                ));
            }
        }
        if self.max_accumulation_steps == 0 {
            return Err(invalid("max_accumulation_steps", "must be >= 1"));
        }
        match self.selection {
            Selection::TopK { ratio } => check_ratio("selection.ratio", ratio)?,
            Selection::TopKApprox { ratio, slack } => {
                check_ratio("selection.ratio", ratio)?;
                check_non_negative("selection.slack", slack)?;
            }
            Selection::Threshold { rel } => check_non_negative("selection.rel", rel)?,
            Selection::Dense => {}
        }
        if let Some(w) = self.apply_weight {
            if !w.is_finite() || w <= 0.0 {
                return Err(invalid("apply_weight", format!("must be finite and > 0, got {w}")));
            }
        }
        Ok(())
    }

    /// The threshold `tau_t` in force at step `t` (counted from 1).
    pub fn tau(&self, t: u64) -> f64 {
        if self.adaptive && t < self.warmup_steps {
            self.min_threshold + (t as f64 / self.warmup_steps as f64) * (self.threshold - self.min_threshold)
        } else {
            self.threshold
        }
    }
}

/// Validating builder for [`SyncConfig`]; [`SyncConfigBuilder::build`] returns
/// [`Error::InvalidConfig`] naming the first bad field.
#[derive(Debug, Clone)]
pub struct SyncConfigBuilder {
    config: SyncConfig,
}

impl SyncConfigBuilder {
    /// See [`SyncConfig::threshold`].
    pub fn threshold(mut self, v: f64) -> Self {
        self.config.threshold = v;
        self
    }
    /// See [`SyncConfig::adaptive`].
    pub fn adaptive(mut self, v: bool) -> Self {
        self.config.adaptive = v;
        self
    }
    /// See [`SyncConfig::min_threshold`].
    pub fn min_threshold(mut self, v: f64) -> Self {
        self.config.min_threshold = v;
        self
    }
    /// See [`SyncConfig::max_threshold`].
    pub fn max_threshold(mut self, v: f64) -> Self {
        self.config.max_threshold = v;
        self
    }
    /// See [`SyncConfig::warmup_steps`].
    pub fn warmup_steps(mut self, v: u64) -> Self {
        self.config.warmup_steps = v;
        self
    }
    /// See [`SyncConfig::error_feedback`].
    pub fn error_feedback(mut self, v: bool) -> Self {
        self.config.error_feedback = v;
        self
    }
    /// See [`SyncConfig::max_accumulation_steps`].
    pub fn max_accumulation_steps(mut self, v: u64) -> Self {
        self.config.max_accumulation_steps = v;
        self
    }
    /// See [`SyncConfig::selection`].
    pub fn selection(mut self, v: Selection) -> Self {
        self.config.selection = v;
        self
    }
    /// See [`SyncConfig::wire_dtype`].
    pub fn wire_dtype(mut self, v: WireDtype) -> Self {
        self.config.wire_dtype = v;
        self
    }
    /// See [`SyncConfig::apply_weight`].
    pub fn apply_weight(mut self, v: f32) -> Self {
        self.config.apply_weight = Some(v);
        self
    }
    /// Validates and returns the configuration.
    pub fn build(self) -> Result<SyncConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}
