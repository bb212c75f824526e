//! The coordinator's settings as a persisted record (prost bytes in the
//! `meta` table): fixed when a data directory is initialized, read back on
//! every restart so the restored coordinator continues bitwise.

use std::time::Duration;

use prost::Message;

use chronos_sync::coordinator::decay::{Exponential, StalenessDecay};
use chronos_sync::coordinator::{CoordinatorConfig, MemoryConfig, OuterOptimizer, TimescaleGroup};

use crate::error::ServiceError;

/// Largest outer parameter count a record may declare.
pub const MAX_PARAMS: usize = 1 << 22;

/// `message ConfigRecord { ... }`: what the service needs to rebuild its
/// coordinator. The staleness decay is exponential, `decay_base^s`.
///
/// Tags 12..=15 were added later; a record written before them decodes to
/// the settings it always meant (no warm-up, no timescale groups, the
/// default continuum memory, `0.5^s`).
#[derive(Clone, PartialEq, Message)]
pub struct ConfigRecord {
    /// Initial outer parameters (only used to initialize the directory).
    #[prost(float, repeated, tag = "1")]
    pub initial_params: Vec<f32>,
    /// `max_in_flight`.
    #[prost(uint64, tag = "2")]
    pub max_in_flight: u64,
    /// `max_staleness`.
    #[prost(uint64, tag = "3")]
    pub max_staleness: u64,
    /// `lease_ttl` in milliseconds.
    #[prost(uint64, tag = "4")]
    pub lease_ttl_ms: u64,
    /// `min_commits`.
    #[prost(uint64, tag = "5")]
    pub min_commits: u64,
    /// 0 SGD (lr, momentum), 1 Adam (lr, momentum = beta1, beta2, eps).
    #[prost(uint32, tag = "6")]
    pub optimizer: u32,
    /// Learning rate.
    #[prost(float, tag = "7")]
    pub lr: f32,
    /// Momentum / beta1.
    #[prost(float, tag = "8")]
    pub momentum: f32,
    /// Adam beta2.
    #[prost(float, tag = "9")]
    pub beta2: f32,
    /// Adam eps.
    #[prost(float, tag = "10")]
    pub eps: f32,
    /// `dedup_capacity` of the coordinator (the service's own idempotency
    /// table is the long-term record).
    #[prost(uint64, tag = "11")]
    pub dedup_capacity: u64,
    /// `warmup` of the parameters outside every timescale group.
    #[prost(uint64, tag = "12")]
    pub warmup: u64,
    /// `timescales`, in order.
    #[prost(message, repeated, tag = "13")]
    pub timescales: Vec<TimescaleRecord>,
    /// `memory`; absent means [`MemoryConfig::default`].
    #[prost(message, optional, tag = "14")]
    pub memory: Option<MemoryRecord>,
    /// Base of the exponential staleness decay; absent means 0.5.
    #[prost(double, optional, tag = "15")]
    pub decay_base: Option<f64>,
}

/// `message TimescaleRecord { uint64 start = 1; uint64 end = 2; uint64 every = 3;
/// float lr = 4; float momentum = 5; uint64 warmup = 6; }`: one
/// [`TimescaleGroup`].
#[derive(Clone, PartialEq, Message)]
pub struct TimescaleRecord {
    /// First index of the group.
    #[prost(uint64, tag = "1")]
    pub start: u64,
    /// One past the last index.
    #[prost(uint64, tag = "2")]
    pub end: u64,
    /// Update every `every` outer rounds.
    #[prost(uint64, tag = "3")]
    pub every: u64,
    /// Learning rate of the group.
    #[prost(float, tag = "4")]
    pub lr: f32,
    /// Momentum (`beta1` under Adam) of the group.
    #[prost(float, tag = "5")]
    pub momentum: f32,
    /// Warm-up updates of the group.
    #[prost(uint64, tag = "6")]
    pub warmup: u64,
}

/// `message MemoryRecord { uint64 capacity = 1; uint64 compress_after = 2;
/// double recency_decay = 3; }`: the [`MemoryConfig`].
#[derive(Clone, PartialEq, Message)]
pub struct MemoryRecord {
    /// Entries kept (0 disables the memory).
    #[prost(uint64, tag = "1")]
    pub capacity: u64,
    /// Steps after which an entry is stored as f16.
    #[prost(uint64, tag = "2")]
    pub compress_after: u64,
    /// Recency decay per step.
    #[prost(double, tag = "3")]
    pub recency_decay: f64,
}

impl ConfigRecord {
    /// The library's defaults (4 zero parameters, SGD lr 0.01 momentum 0.9,
    /// `max_in_flight` 3, `max_staleness` 2, 60 s leases, one commit per
    /// step) with a 1024-answer in-memory dedup cache.
    pub fn standard() -> Self {
        ConfigRecord {
            initial_params: vec![0.0; 4],
            max_in_flight: 3,
            max_staleness: 2,
            lease_ttl_ms: 60_000,
            min_commits: 1,
            optimizer: 0,
            lr: 0.01,
            momentum: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            dedup_capacity: 1024,
            warmup: 0,
            timescales: Vec::new(),
            memory: None,
            decay_base: None,
        }
    }

    /// The record of `config` with `initial` outer parameters, so that
    /// [`ConfigRecord::coordinator_config`] gives back the same settings
    /// (every persisted field; `checkout_timeout` and `audit_log` are the
    /// server's own). Fails with [`ServiceError::Config`] when `config` is
    /// invalid for `initial`, or when its staleness decay is not exponential
    /// (`base^s` for every staleness up to `max_staleness`), which is the only
    /// decay a record can carry.
    pub fn from_coordinator_config(config: &CoordinatorConfig, initial: Vec<f32>) -> Result<Self, ServiceError> {
        let cfg_err = |reason: String| ServiceError::Config { reason };
        config.validate().map_err(|e| cfg_err(e.to_string()))?;
        let base = config.decay.weight(1);
        let exp = Exponential { base };
        let exponential = (0..=config.max_staleness.min(1 << 20)).all(|s| config.decay.weight(s) == exp.weight(s));
        if !(exponential && base > 0.0 && base <= 1.0) {
            return Err(cfg_err(format!(
                "the staleness decay {:?} is not exponential with a base in (0, 1]",
                config.decay
            )));
        }
        let (optimizer, lr, momentum, beta2, eps) = match config.optimizer {
            OuterOptimizer::Sgd { lr, momentum } => (0, lr, momentum, 0.999, 1e-8),
            OuterOptimizer::Adam { lr, beta1, beta2, eps } => (1, lr, beta1, beta2, eps),
            other => return Err(cfg_err(format!("outer optimizer {other:?} has no record kind"))),
        };
        let u64_of = |v: usize| v as u64;
        let record = ConfigRecord {
            initial_params: initial,
            max_in_flight: u64_of(config.max_in_flight),
            max_staleness: config.max_staleness,
            lease_ttl_ms: u64::try_from(config.lease_ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            min_commits: u64_of(config.min_commits),
            optimizer,
            lr,
            momentum,
            beta2,
            eps,
            dedup_capacity: u64_of(config.dedup_capacity),
            warmup: config.warmup,
            timescales: config
                .timescales
                .iter()
                .map(|g| TimescaleRecord {
                    start: u64_of(g.range.start),
                    end: u64_of(g.range.end),
                    every: g.every,
                    lr: g.lr,
                    momentum: g.momentum,
                    warmup: g.warmup,
                })
                .collect(),
            memory: Some(MemoryRecord {
                capacity: u64_of(config.memory.capacity),
                compress_after: config.memory.compress_after,
                recency_decay: config.memory.recency_decay,
            }),
            decay_base: Some(base),
        };
        // The record must stand for a coordinator that can be built.
        let back = record.coordinator_config().map_err(|e| cfg_err(e.to_string()))?;
        chronos_sync::Coordinator::new(record.initial_params.clone(), back).map_err(|e| cfg_err(e.to_string()))?;
        Ok(record)
    }
}

fn bad(reason: impl Into<String>) -> ServiceError {
    ServiceError::CorruptRecord { what: "config record", reason: reason.into() }
}

impl ConfigRecord {
    /// The coordinator configuration (validated).
    pub fn coordinator_config(&self) -> Result<CoordinatorConfig, ServiceError> {
        let usize_of = |v: u64, what: &str| usize::try_from(v).map_err(|_| bad(format!("{what} = {v} too large")));
        if self.initial_params.is_empty() || self.initial_params.len() > MAX_PARAMS {
            return Err(bad(format!("{} outer parameters (1..={MAX_PARAMS})", self.initial_params.len())));
        }
        if self.lease_ttl_ms == 0 || self.lease_ttl_ms > 86_400_000 * 365 {
            return Err(bad(format!("lease_ttl_ms = {}", self.lease_ttl_ms)));
        }
        if self.dedup_capacity > 1 << 24 || self.max_in_flight > 1 << 20 || self.min_commits > 1 << 20 {
            return Err(bad("a capacity is out of range"));
        }
        let optimizer = match self.optimizer {
            0 => OuterOptimizer::Sgd { lr: self.lr, momentum: self.momentum },
            1 => OuterOptimizer::Adam { lr: self.lr, beta1: self.momentum, beta2: self.beta2, eps: self.eps },
            k => return Err(bad(format!("optimizer kind {k}"))),
        };
        let timescales = self
            .timescales
            .iter()
            .map(|g| {
                Ok(TimescaleGroup {
                    range: usize_of(g.start, "timescale start")?..usize_of(g.end, "timescale end")?,
                    every: g.every,
                    lr: g.lr,
                    momentum: g.momentum,
                    warmup: g.warmup,
                })
            })
            .collect::<Result<Vec<_>, ServiceError>>()?;
        if timescales.iter().any(|g| g.range.end > self.initial_params.len()) {
            return Err(bad(format!(
                "a timescale group reaches past the {} outer parameters",
                self.initial_params.len()
            )));
        }
        let memory = match &self.memory {
            None => MemoryConfig::default(),
            Some(m) => MemoryConfig {
                capacity: usize_of(m.capacity, "memory capacity")?,
                compress_after: m.compress_after,
                recency_decay: m.recency_decay,
            },
        };
        if memory.capacity > 1 << 20 {
            return Err(bad(format!("memory capacity {} out of range", memory.capacity)));
        }
        let base = self.decay_base.unwrap_or(0.5);
        if !(base.is_finite() && base > 0.0 && base <= 1.0) {
            return Err(bad(format!("decay_base = {base} (must be in (0, 1])")));
        }
        let config = CoordinatorConfig {
            max_in_flight: usize_of(self.max_in_flight, "max_in_flight")?,
            max_staleness: self.max_staleness,
            lease_ttl: Duration::from_millis(self.lease_ttl_ms),
            min_commits: usize_of(self.min_commits, "min_commits")?,
            optimizer,
            dedup_capacity: usize_of(self.dedup_capacity, "dedup_capacity")?,
            warmup: self.warmup,
            timescales,
            memory,
            decay: std::sync::Arc::new(Exponential { base }),
            ..CoordinatorConfig::default()
        };
        config.validate()?;
        if let Some(i) = self.initial_params.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!("initial parameter {i} is not finite")));
        }
        Ok(config)
    }

    /// Decodes and validates persisted bytes.
    pub fn decode_record(bytes: &[u8]) -> Result<(Self, CoordinatorConfig), ServiceError> {
        let rec = ConfigRecord::decode(bytes).map_err(|e| bad(e.to_string()))?;
        let config = rec.coordinator_config()?;
        Ok((rec, config))
    }
}
