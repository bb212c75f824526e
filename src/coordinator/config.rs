//! Configuration of a [`super::Coordinator`], with the spec's defaults and a
//! validating builder.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::decay::{Exponential, StalenessDecay};
use crate::error::{Error, Result};

/// The outer (meta) optimizer applied to the combined hypergradient.
///
/// Hypergradients are gradients of the validation loss with respect to the
/// outer parameters, so every step *descends*: `params -= lr * direction`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum OuterOptimizer {
    /// SGD with heavy-ball momentum (no dampening):
    /// `m = momentum * m + g; params -= lr * m`.
    Sgd {
        /// Learning rate, finite and `> 0`.
        lr: f32,
        /// Momentum in `[0, 1)`; 0 is plain SGD.
        momentum: f32,
    },
    /// Adam with bias correction:
    /// `m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;`
    /// `params -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)`.
    Adam {
        /// Learning rate, finite and `> 0`.
        lr: f32,
        /// First-moment decay in `[0, 1)`.
        beta1: f32,
        /// Second-moment decay in `[0, 1)`.
        beta2: f32,
        /// Denominator guard, finite and `> 0`.
        eps: f32,
    },
}

impl Default for OuterOptimizer {
    fn default() -> Self {
        OuterOptimizer::Sgd { lr: 0.01, momentum: 0.9 }
    }
}

impl OuterOptimizer {
    /// Adam with the usual defaults (`beta1 0.9, beta2 0.999, eps 1e-8`).
    pub fn adam(lr: f32) -> Self {
        OuterOptimizer::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
    /// The base learning rate.
    pub fn lr(&self) -> f32 {
        match *self {
            OuterOptimizer::Sgd { lr, .. } | OuterOptimizer::Adam { lr, .. } => lr,
        }
    }
    /// The base momentum (`beta1` for Adam).
    pub fn momentum(&self) -> f32 {
        match *self {
            OuterOptimizer::Sgd { momentum, .. } => momentum,
            OuterOptimizer::Adam { beta1, .. } => beta1,
        }
    }
    /// Stable code used in snapshots (0 SGD, 1 Adam).
    pub(crate) fn code(&self) -> u8 {
        match self {
            OuterOptimizer::Sgd { .. } => 0,
            OuterOptimizer::Adam { .. } => 1,
        }
    }
}

/// One group of outer parameters updated on its own timescale.
///
/// Between two of its updates a group accumulates the combined hypergradient
/// of every outer round; on its update it applies their mean with its own
/// learning rate and momentum (`beta1` under Adam). During the first `warmup`
/// updates its learning rate ramps linearly: update `u` (from 0) uses
/// `lr * min(1, (u + 1) / warmup)`.
#[derive(Debug, Clone, PartialEq)]
pub struct TimescaleGroup {
    /// Indices of the outer parameters in this group (non-empty, within the
    /// parameter vector, disjoint from every other group).
    pub range: Range<usize>,
    /// Update every `every` outer rounds (`>= 1`).
    pub every: u64,
    /// Learning rate of this group, finite and `> 0`.
    pub lr: f32,
    /// Momentum of this group (`beta1` under Adam), in `[0, 1)`.
    pub momentum: f32,
    /// Updates over which the learning rate ramps up (0: no ramp).
    pub warmup: u64,
}

/// Continuum-memory settings (see [`super::ContinuumMemory`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryConfig {
    /// Maximum entries kept; the oldest is evicted first. 0 disables memory.
    pub capacity: usize,
    /// Entries more than this many steps older than the newest one are
    /// stored as f16.
    pub compress_after: u64,
    /// Recency decay rate per step: an entry `age` steps old is weighted by
    /// `exp(-recency_decay * age)`. Finite and `>= 0`.
    pub recency_decay: f64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig { capacity: 256, compress_after: 32, recency_decay: 0.05 }
    }
}

/// Everything that controls a [`super::Coordinator`]. Build with
/// [`CoordinatorConfig::builder`] (validated) or start from
/// [`CoordinatorConfig::default`] and call [`CoordinatorConfig::validate`].
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Most distinct versions checked out at once (default 3, `>= 1`).
    pub max_in_flight: usize,
    /// How long a checkout waits for a free slot before
    /// [`crate::CoordinatorError::Backpressure`] (default 30 s, `> 0`).
    pub checkout_timeout: Duration,
    /// Commits more than this many versions behind are rejected (default 2).
    pub max_staleness: u64,
    /// Weight of an accepted commit by staleness (default `0.5^s`).
    pub decay: Arc<dyn StalenessDecay>,
    /// A lease without a heartbeat for this long expires (default 60 s, `> 0`).
    pub lease_ttl: Duration,
    /// Accepted commits needed for an outer step (default 1, `>= 1`).
    pub min_commits: usize,
    /// Outer optimizer and its base hyper-parameters (default SGD, lr 0.01,
    /// momentum 0.9).
    pub optimizer: OuterOptimizer,
    /// Warm-up (in updates) of the parameters outside every timescale group
    /// (default 0).
    pub warmup: u64,
    /// Groups of outer parameters with their own timescale; parameters in no
    /// group are updated every round with the base optimizer settings.
    pub timescales: Vec<TimescaleGroup>,
    /// Continuum memory.
    pub memory: MemoryConfig,
    /// Remembered commit answers (for retries) and ended leases; the oldest is
    /// forgotten first (default 65 536, `>= 1`).
    pub dedup_capacity: usize,
    /// Record every applied commit (see [`super::Coordinator::applied_log`]);
    /// unbounded, meant for audits and tests (default off).
    pub audit_log: bool,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            max_in_flight: 3,
            checkout_timeout: Duration::from_secs(30),
            max_staleness: 2,
            decay: Arc::new(Exponential::default()),
            lease_ttl: Duration::from_secs(60),
            min_commits: 1,
            optimizer: OuterOptimizer::default(),
            warmup: 0,
            timescales: Vec::new(),
            memory: MemoryConfig::default(),
            dedup_capacity: 65_536,
            audit_log: false,
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig { field, reason: reason.into() }
}

fn check_lr(field: &'static str, lr: f32) -> Result<()> {
    if !(lr.is_finite() && lr > 0.0) {
        return Err(invalid(field, format!("must be finite and > 0, got {lr}")));
    }
    Ok(())
}

fn check_unit(field: &'static str, v: f32) -> Result<()> {
    if !(v.is_finite() && (0.0..1.0).contains(&v)) {
        return Err(invalid(field, format!("must be in [0, 1), got {v}")));
    }
    Ok(())
}

impl CoordinatorConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> CoordinatorConfigBuilder {
        CoordinatorConfigBuilder { config: CoordinatorConfig::default() }
    }

    /// Checks every field against its documented range (timescale ranges are
    /// checked against the parameter count by [`super::Coordinator::new`]).
    pub fn validate(&self) -> Result<()> {
        if self.max_in_flight == 0 {
            return Err(invalid("max_in_flight", "must be >= 1"));
        }
        if self.checkout_timeout.is_zero() {
            return Err(invalid("checkout_timeout", "must be > 0"));
        }
        if self.lease_ttl.is_zero() {
            return Err(invalid("lease_ttl", "must be > 0"));
        }
        if self.min_commits == 0 {
            return Err(invalid("min_commits", "must be >= 1"));
        }
        if self.dedup_capacity == 0 {
            return Err(invalid("dedup_capacity", "must be >= 1"));
        }
        // The decay is user code: check its contract wherever it can be used.
        for s in 0..=self.max_staleness.min(1 << 20) {
            let w = self.decay.weight(s);
            if !(w.is_finite() && w > 0.0) {
                return Err(invalid("decay", format!("weight({s}) = {w}; must be finite and > 0")));
            }
        }
        match self.optimizer {
            OuterOptimizer::Sgd { lr, momentum } => {
                check_lr("optimizer.lr", lr)?;
                check_unit("optimizer.momentum", momentum)?;
            }
            OuterOptimizer::Adam { lr, beta1, beta2, eps } => {
                check_lr("optimizer.lr", lr)?;
                check_unit("optimizer.beta1", beta1)?;
                check_unit("optimizer.beta2", beta2)?;
                if !(eps.is_finite() && eps > 0.0) {
                    return Err(invalid("optimizer.eps", format!("must be finite and > 0, got {eps}")));
                }
            }
        }
        let mut ranges: Vec<&Range<usize>> = Vec::with_capacity(self.timescales.len());
        for g in &self.timescales {
            if g.range.start >= g.range.end {
                return Err(invalid("timescales.range", format!("{:?} is empty", g.range)));
            }
            if g.every == 0 {
                return Err(invalid("timescales.every", "must be >= 1"));
            }
            check_lr("timescales.lr", g.lr)?;
            check_unit("timescales.momentum", g.momentum)?;
            ranges.push(&g.range);
        }
        ranges.sort_by_key(|r| r.start);
        for w in ranges.windows(2) {
            if w[0].end > w[1].start {
                return Err(invalid("timescales.range", format!("{:?} overlaps {:?}", w[0], w[1])));
            }
        }
        let m = &self.memory;
        if !(m.recency_decay.is_finite() && m.recency_decay >= 0.0) {
            return Err(invalid("memory.recency_decay", format!("must be finite and >= 0, got {}", m.recency_decay)));
        }
        Ok(())
    }

    /// Checks the timescale groups against a parameter count `n`.
    pub(crate) fn validate_for(&self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(invalid("initial_outer_params", "must not be empty"));
        }
        for g in &self.timescales {
            if g.range.end > n {
                return Err(invalid(
                    "timescales.range",
                    format!("{:?} reaches past the {n} outer parameters", g.range),
                ));
            }
        }
        Ok(())
    }
}

/// Validating builder for [`CoordinatorConfig`]; [`CoordinatorConfigBuilder::build`]
/// returns [`Error::InvalidConfig`] naming the first bad field.
#[derive(Debug, Clone)]
pub struct CoordinatorConfigBuilder {
    config: CoordinatorConfig,
}

impl CoordinatorConfigBuilder {
    /// See [`CoordinatorConfig::max_in_flight`].
    pub fn max_in_flight(mut self, v: usize) -> Self {
        self.config.max_in_flight = v;
        self
    }
    /// See [`CoordinatorConfig::checkout_timeout`].
    pub fn checkout_timeout(mut self, v: Duration) -> Self {
        self.config.checkout_timeout = v;
        self
    }
    /// See [`CoordinatorConfig::max_staleness`].
    pub fn max_staleness(mut self, v: u64) -> Self {
        self.config.max_staleness = v;
        self
    }
    /// See [`CoordinatorConfig::decay`].
    pub fn decay(mut self, v: impl StalenessDecay + 'static) -> Self {
        self.config.decay = Arc::new(v);
        self
    }
    /// See [`CoordinatorConfig::lease_ttl`].
    pub fn lease_ttl(mut self, v: Duration) -> Self {
        self.config.lease_ttl = v;
        self
    }
    /// See [`CoordinatorConfig::min_commits`].
    pub fn min_commits(mut self, v: usize) -> Self {
        self.config.min_commits = v;
        self
    }
    /// See [`CoordinatorConfig::optimizer`].
    pub fn optimizer(mut self, v: OuterOptimizer) -> Self {
        self.config.optimizer = v;
        self
    }
    /// See [`CoordinatorConfig::warmup`].
    pub fn warmup(mut self, v: u64) -> Self {
        self.config.warmup = v;
        self
    }
    /// Adds one group to [`CoordinatorConfig::timescales`].
    pub fn timescale(mut self, v: TimescaleGroup) -> Self {
        self.config.timescales.push(v);
        self
    }
    /// See [`CoordinatorConfig::memory`].
    pub fn memory(mut self, v: MemoryConfig) -> Self {
        self.config.memory = v;
        self
    }
    /// See [`CoordinatorConfig::dedup_capacity`].
    pub fn dedup_capacity(mut self, v: usize) -> Self {
        self.config.dedup_capacity = v;
        self
    }
    /// See [`CoordinatorConfig::audit_log`].
    pub fn audit_log(mut self, v: bool) -> Self {
        self.config.audit_log = v;
        self
    }
    /// Validates and returns the configuration.
    pub fn build(self) -> Result<CoordinatorConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::decay::Linear;

    fn field_of(r: Result<CoordinatorConfig>) -> &'static str {
        match r {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = CoordinatorConfig::builder().build().unwrap();
        assert_eq!(c.max_in_flight, 3);
        assert_eq!(c.checkout_timeout, Duration::from_secs(30));
        assert_eq!(c.max_staleness, 2);
        assert_eq!(c.decay.weight(2), 0.25);
    }

    #[test]
    fn bad_fields_are_named() {
        let b = CoordinatorConfig::builder;
        assert_eq!(field_of(b().max_in_flight(0).build()), "max_in_flight");
        assert_eq!(field_of(b().checkout_timeout(Duration::ZERO).build()), "checkout_timeout");
        assert_eq!(field_of(b().lease_ttl(Duration::ZERO).build()), "lease_ttl");
        assert_eq!(field_of(b().min_commits(0).build()), "min_commits");
        assert_eq!(field_of(b().dedup_capacity(0).build()), "dedup_capacity");
        assert_eq!(field_of(b().decay(Linear { horizon: 2.0 }).build()), "decay");
        let sgd = |lr, momentum| OuterOptimizer::Sgd { lr, momentum };
        assert_eq!(field_of(b().optimizer(sgd(f32::NAN, 0.0)).build()), "optimizer.lr");
        assert_eq!(field_of(b().optimizer(sgd(0.1, 1.0)).build()), "optimizer.momentum");
        let adam = OuterOptimizer::Adam { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 0.0 };
        assert_eq!(field_of(b().optimizer(adam).build()), "optimizer.eps");
        let g = |range: Range<usize>, every| TimescaleGroup { range, every, lr: 0.1, momentum: 0.0, warmup: 0 };
        assert_eq!(field_of(b().timescale(g(3..3, 1)).build()), "timescales.range");
        assert_eq!(field_of(b().timescale(g(0..3, 0)).build()), "timescales.every");
        assert_eq!(field_of(b().timescale(g(0..3, 1)).timescale(g(2..5, 1)).build()), "timescales.range");
        let mem = MemoryConfig { recency_decay: -1.0, ..MemoryConfig::default() };
        assert_eq!(field_of(b().memory(mem).build()), "memory.recency_decay");
        let ok = b().timescale(g(0..3, 1)).timescale(g(3..5, 2)).build().unwrap();
        assert!(ok.validate_for(5).is_ok());
        assert!(ok.validate_for(4).is_err());
    }
}
