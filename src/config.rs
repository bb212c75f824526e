//! Configuration of a [`crate::SparseSync`] instance, with the spec's defaults
//! and a validating builder.

mod budget;

pub use budget::{BudgetTarget, ThresholdBudget};

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

    /// The most entries one packed buffer can hold under this rule for a
    /// vector of `n` entries.
    pub fn max_entries(&self, n: usize) -> usize {
        match *self {
            Selection::TopK { .. } => self.k(n).unwrap_or(n),
            Selection::TopKApprox { slack, .. } => {
                let k = self.k(n).unwrap_or(n);
                ((k as f64 * (1.0 + slack)).floor() as usize).clamp(k, n.max(1))
            }
            Selection::Threshold { .. } | Selection::Dense => n,
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
    /// Upper bound of the threshold: validation requires
    /// `min_threshold <= max_threshold` and, when adaptive, `threshold <=
    /// max_threshold`. With a [`SyncConfig::budget`], the steered threshold
    /// stays inside `[min_threshold, max_threshold]`.
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
    /// Budget mode: after warm-up, steer the threshold inside
    /// `[min_threshold, max_threshold]` toward a target sync rate or bytes
    /// per step. `None` (the default): `tau_t = threshold` after warm-up.
    /// Requires `adaptive` and `min_threshold > 0`.
    pub budget: Option<ThresholdBudget>,
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
            budget: None,
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
        if let Some(budget) = &self.budget {
            if !self.adaptive {
                return Err(invalid("budget", "requires adaptive to be on (the budget steers tau after warm-up)"));
            }
            if self.min_threshold <= 0.0 {
                return Err(invalid(
                    "min_threshold",
                    format!("must be > 0 with a budget (tau is steered multiplicatively), got {}", self.min_threshold),
                ));
            }
            budget.validate()?;
        }
        Ok(())
    }

    /// A stable 64-bit fingerprint of every field (all of them affect the
    /// state or the math), for checking that a checkpoint is restored under
    /// the configuration it was written with.
    ///
    /// FNV-1a 64 (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`)
    /// over this canonical little-endian encoding, in field order: the ASCII
    /// tag `chronos-sync/SyncConfig/1`, then `threshold` (the f64's u64
    /// bits), `adaptive` (one byte, 0 or 1), `min_threshold`,
    /// `max_threshold` (f64 bits), `warmup_steps` (u64), `error_feedback`
    /// (one byte), `max_accumulation_steps` (u64), the selection rule as a
    /// tag byte (0 `TopK`, 1 `TopKApprox`, 2 `Threshold`, 3 `Dense`)
    /// followed by its parameters' f64 bits (`ratio`; `ratio`, `slack`;
    /// `rel`; none), `wire_dtype` (its wire code byte), and `apply_weight`
    /// as a tag byte (0 `None`, 1 `Some`) followed, for `Some`, by the f32's
    /// u32 bits.
    ///
    /// With a `budget`, the tag is `chronos-sync/SyncConfig/2` instead and
    /// the budget follows the fields above: the target's tag byte (0
    /// `SyncRate`, 1 `BytesPerStep`), its f64 bits, and the gain's f64
    /// bits. Without one, the encoding is exactly tag 1's, so a budget-less
    /// configuration keeps the fingerprint it had before budgets existed.
    ///
    /// Floats count by their bits, so `0.0` and `-0.0` differ. The same
    /// configuration gives the same value on every run and platform; a
    /// future change of the encoding comes with a new tag.
    pub fn fingerprint(&self) -> u64 {
        // Destructured so that a new field does not compile until it is hashed.
        let SyncConfig {
            threshold,
            adaptive,
            min_threshold,
            max_threshold,
            warmup_steps,
            error_feedback,
            max_accumulation_steps,
            selection,
            wire_dtype,
            apply_weight,
            budget,
        } = self;
        let mut h = Fnv1a::new();
        h.bytes(if budget.is_some() { b"chronos-sync/SyncConfig/2" } else { b"chronos-sync/SyncConfig/1" });
        h.u64(threshold.to_bits());
        h.bytes(&[u8::from(*adaptive)]);
        h.u64(min_threshold.to_bits());
        h.u64(max_threshold.to_bits());
        h.u64(*warmup_steps);
        h.bytes(&[u8::from(*error_feedback)]);
        h.u64(*max_accumulation_steps);
        match *selection {
            Selection::TopK { ratio } => {
                h.bytes(&[0]);
                h.u64(ratio.to_bits());
            }
            Selection::TopKApprox { ratio, slack } => {
                h.bytes(&[1]);
                h.u64(ratio.to_bits());
                h.u64(slack.to_bits());
            }
            Selection::Threshold { rel } => {
                h.bytes(&[2]);
                h.u64(rel.to_bits());
            }
            Selection::Dense => h.bytes(&[3]),
        }
        h.bytes(&[wire_dtype.code()]);
        match apply_weight {
            None => h.bytes(&[0]),
            Some(w) => {
                h.bytes(&[1]);
                h.bytes(&w.to_bits().to_le_bytes());
            }
        }
        if let Some(budget) = budget {
            budget.hash_into(&mut h);
        }
        h.0
    }

    /// The threshold schedule without a budget: `tau_t` at step `t`
    /// (counted from 1), the warm-up ramp and then `threshold`. With a
    /// [`SyncConfig::budget`], steps from `warmup_steps` on use the
    /// engine's steered threshold instead (its state, not a function of
    /// `t`; see [`crate::StepReport::threshold`]), which starts from this
    /// value.
    pub fn tau(&self, t: u64) -> f64 {
        if self.adaptive && t < self.warmup_steps {
            self.min_threshold + (t as f64 / self.warmup_steps as f64) * (self.threshold - self.min_threshold)
        } else {
            self.threshold
        }
    }
}

/// FNV-1a, 64-bit.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
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
    /// See [`SyncConfig::budget`].
    pub fn budget(mut self, v: ThresholdBudget) -> Self {
        self.config.budget = Some(v);
        self
    }
    /// Validates and returns the configuration.
    pub fn build(self) -> Result<SyncConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned: the value of the documented encoding of the defaults
    /// (computed independently from the doc comment's description), so a
    /// change of the encoding or of the defaults is noticed.
    #[test]
    fn default_fingerprint_is_pinned() {
        assert_eq!(SyncConfig::default().fingerprint(), 0xee9c_75e1_da0d_59f4);
        assert_eq!(SyncConfig::default().fingerprint(), SyncConfig::builder().build().unwrap().fingerprint());
    }

    /// Pinned like the default: the tag-2 encoding with a budget (computed
    /// independently from the doc comment's description).
    #[test]
    fn budget_fingerprints_are_pinned() {
        let rate = SyncConfig { budget: Some(ThresholdBudget::sync_rate(0.2)), ..SyncConfig::default() };
        assert_eq!(rate.fingerprint(), 0x6507_d29e_5e1c_8279);
        let bytes = SyncConfig {
            budget: Some(ThresholdBudget::bytes_per_step(4096.0).with_gain(0.1)),
            ..SyncConfig::default()
        };
        assert_eq!(bytes.fingerprint(), 0x89bd_6125_96e0_4a9f);
    }

    /// Every single field change (and every selection parameter, variant,
    /// dtype and `apply_weight` tag) gives a fingerprint different from the
    /// default's and from every other change's.
    #[test]
    fn every_field_changes_the_fingerprint() {
        let d = SyncConfig::default();
        let variants: Vec<(&str, SyncConfig)> = vec![
            ("default", d.clone()),
            ("threshold", SyncConfig { threshold: 0.02, ..d.clone() }),
            ("threshold -0", SyncConfig { threshold: -0.0, ..d.clone() }),
            ("threshold +0", SyncConfig { threshold: 0.0, ..d.clone() }),
            ("adaptive", SyncConfig { adaptive: false, ..d.clone() }),
            ("min_threshold", SyncConfig { min_threshold: 0.002, ..d.clone() }),
            ("max_threshold", SyncConfig { max_threshold: 0.2, ..d.clone() }),
            ("warmup_steps", SyncConfig { warmup_steps: 101, ..d.clone() }),
            ("error_feedback", SyncConfig { error_feedback: false, ..d.clone() }),
            ("max_accumulation_steps", SyncConfig { max_accumulation_steps: 51, ..d.clone() }),
            ("topk ratio", SyncConfig { selection: Selection::TopK { ratio: 0.02 }, ..d.clone() }),
            ("approx", SyncConfig { selection: Selection::TopKApprox { ratio: 0.01, slack: 0.0 }, ..d.clone() }),
            ("approx ratio", SyncConfig { selection: Selection::TopKApprox { ratio: 0.02, slack: 0.0 }, ..d.clone() }),
            ("approx slack", SyncConfig { selection: Selection::TopKApprox { ratio: 0.01, slack: 0.5 }, ..d.clone() }),
            ("threshold rule", SyncConfig { selection: Selection::Threshold { rel: 0.01 }, ..d.clone() }),
            ("threshold rel", SyncConfig { selection: Selection::Threshold { rel: 2.0 }, ..d.clone() }),
            ("dense", SyncConfig { selection: Selection::Dense, ..d.clone() }),
            ("f32", SyncConfig { wire_dtype: WireDtype::F32, ..d.clone() }),
            ("f16", SyncConfig { wire_dtype: WireDtype::F16, ..d.clone() }),
            ("weight 0.5", SyncConfig { apply_weight: Some(0.5), ..d.clone() }),
            ("weight 0.25", SyncConfig { apply_weight: Some(0.25), ..d.clone() }),
            ("budget rate", SyncConfig { budget: Some(ThresholdBudget::sync_rate(0.2)), ..d.clone() }),
            ("budget rate 0.1", SyncConfig { budget: Some(ThresholdBudget::sync_rate(0.1)), ..d.clone() }),
            ("budget gain", SyncConfig { budget: Some(ThresholdBudget::sync_rate(0.2).with_gain(0.1)), ..d.clone() }),
            // The same f64 bits as `SyncRate(0.2)`: only the target tag differs.
            ("budget bytes 0.2", SyncConfig { budget: Some(ThresholdBudget::bytes_per_step(0.2)), ..d.clone() }),
            ("budget bytes", SyncConfig { budget: Some(ThresholdBudget::bytes_per_step(1000.0)), ..d.clone() }),
        ];
        for (i, (a, ca)) in variants.iter().enumerate() {
            for (b, cb) in &variants[i + 1..] {
                assert_ne!(ca.fingerprint(), cb.fingerprint(), "{a} and {b} collide");
            }
        }
    }

    /// `Option` and selection tags keep adjacent fields apart: the same
    /// bytes cannot be read two ways.
    #[test]
    fn fingerprint_is_a_function_of_the_value() {
        let a = SyncConfig { selection: Selection::TopKApprox { ratio: 0.5, slack: 0.25 }, ..SyncConfig::default() };
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        let b = SyncConfig { apply_weight: Some(1.0), ..a.clone() };
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    /// Budget validation: each bad value is refused naming its field.
    #[test]
    fn budget_validation_names_the_field() {
        let field = |c: SyncConfig| match c.validate() {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("{c:?} validated as {other:?}"),
        };
        let with = |b: ThresholdBudget| SyncConfig { budget: Some(b), ..SyncConfig::default() };
        assert!(with(ThresholdBudget::sync_rate(1.0)).validate().is_ok());
        assert!(with(ThresholdBudget::bytes_per_step(1e-3).with_gain(1.0)).validate().is_ok());
        assert_eq!(field(SyncConfig { adaptive: false, ..with(ThresholdBudget::sync_rate(0.2)) }), "budget");
        assert_eq!(field(SyncConfig { min_threshold: 0.0, ..with(ThresholdBudget::sync_rate(0.2)) }), "min_threshold");
        for r in [0.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert_eq!(field(with(ThresholdBudget::sync_rate(r))), "budget.target", "rate {r}");
        }
        for b in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(field(with(ThresholdBudget::bytes_per_step(b))), "budget.target", "bytes {b}");
        }
        for g in [0.0, -0.05, 1.01, f64::NAN, f64::INFINITY] {
            assert_eq!(field(with(ThresholdBudget::sync_rate(0.2).with_gain(g))), "budget.gain", "gain {g}");
        }
        let built = SyncConfig::builder().budget(ThresholdBudget::sync_rate(0.3)).build().unwrap();
        assert_eq!(built.budget, Some(ThresholdBudget::sync_rate(0.3)));
        assert!(matches!(
            SyncConfig::builder().budget(ThresholdBudget::sync_rate(2.0)).build(),
            Err(Error::InvalidConfig { field: "budget.target", .. })
        ));
    }
}
