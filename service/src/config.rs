//! The coordinator's settings as a persisted record (prost bytes in the
//! `meta` table): fixed when a data directory is initialized, read back on
//! every restart so the restored coordinator continues bitwise.

use std::time::Duration;

use prost::Message;

use chronos_sync::coordinator::{CoordinatorConfig, OuterOptimizer};

use crate::error::ServiceError;

/// Largest outer parameter count a record may declare.
pub const MAX_PARAMS: usize = 1 << 22;

/// `message ConfigRecord { ... }`: what the service needs to rebuild its
/// coordinator. Staleness decay is the default `0.5^s`.
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
        }
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
        let config = CoordinatorConfig {
            max_in_flight: usize_of(self.max_in_flight, "max_in_flight")?,
            max_staleness: self.max_staleness,
            lease_ttl: Duration::from_millis(self.lease_ttl_ms),
            min_commits: usize_of(self.min_commits, "min_commits")?,
            optimizer,
            dedup_capacity: usize_of(self.dedup_capacity, "dedup_capacity")?,
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
