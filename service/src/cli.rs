//! The flags of `chronos-sync coordinator serve` (the CLI member embeds
//! them; this crate's tests run the same code in a child process).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chronos_sync::coordinator::decay::Exponential;
use chronos_sync::coordinator::{CoordinatorConfig, MemoryConfig, OuterOptimizer, TimescaleGroup};
use prost::Message;

use crate::config::ConfigRecord;
use crate::error::ServiceError;
use crate::server::{ServerConfig, TlsFiles};

/// Serve the coordinator over gRPC, durable in `--data DIR`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Loopback unless told otherwise; a non-loopback
    /// address needs `--tls-cert/--tls-key` (or `--allow-plaintext-remote`).
    #[arg(long, default_value = "127.0.0.1:50551")]
    pub listen: SocketAddr,
    /// Data directory (created if missing); holds the SQLite database.
    #[arg(long)]
    pub data: PathBuf,
    /// File holding the shared secret every call must carry.
    #[arg(long, conflicts_with = "secret_env")]
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the shared secret.
    #[arg(long)]
    pub secret_env: Option<String>,
    /// TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve a non-loopback address in plaintext.
    #[arg(long)]
    pub allow_plaintext_remote: bool,
    /// Requests handled at once; beyond it, `Overloaded` with a retry hint.
    #[arg(long, default_value_t = 64)]
    pub max_concurrent: usize,
    /// Largest request in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_request_bytes: usize,
    /// Seconds request records are kept for retries (longer than any
    /// client's retry window).
    #[arg(long, default_value_t = 86_400.0)]
    pub idempotency_ttl_s: f64,
    /// Initial outer parameters, comma separated (empty data directory only).
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.0f32; 4], conflicts_with = "init_zeros")]
    pub init: Vec<f32>,
    /// Start from N zero outer parameters instead of `--init` (empty data
    /// directory only).
    #[arg(long, value_name = "N")]
    pub init_zeros: Option<usize>,
    /// Initialize from a whole `ConfigRecord` (prost bytes, as
    /// `ConfigRecord::from_coordinator_config(..).encode_to_vec()` writes it):
    /// a launcher passes its coordinator configuration exactly. Replaces every
    /// other initialization flag (empty data directory only).
    #[arg(long, value_name = "FILE")]
    pub init_record: Option<PathBuf>,
    /// Distinct versions checked out at once (empty data directory only).
    #[arg(long, default_value_t = 3)]
    pub max_in_flight: u64,
    /// Largest accepted staleness (empty data directory only).
    #[arg(long, default_value_t = 2)]
    pub max_staleness: u64,
    /// Lease time to live in seconds (empty data directory only).
    #[arg(long, default_value_t = 60.0)]
    pub lease_ttl_s: f64,
    /// Accepted commits per outer step (empty data directory only).
    #[arg(long, default_value_t = 1)]
    pub min_commits: u64,
    /// Outer optimizer, `sgd` (with momentum) or `adam` (empty data
    /// directory only).
    #[arg(long, value_enum, default_value_t = OptimizerKind::Sgd)]
    pub optimizer: OptimizerKind,
    /// Outer learning rate (empty data directory only).
    #[arg(long, default_value_t = 0.01)]
    pub lr: f32,
    /// Outer momentum; Adam's `beta1` (empty data directory only).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Adam's `beta2` (empty data directory only).
    #[arg(long, default_value_t = 0.999)]
    pub beta2: f32,
    /// Adam's `eps` (empty data directory only).
    #[arg(long, default_value_t = 1e-8)]
    pub eps: f32,
    /// Warm-up updates of the parameters outside every timescale group
    /// (empty data directory only).
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// A timescale group, `START..END:EVERY:LR:MOMENTUM[:WARMUP]`
    /// (repeatable; empty data directory only).
    #[arg(long = "timescale", value_name = "GROUP", value_parser = parse_timescale)]
    pub timescales: Vec<TimescaleGroup>,
    /// Continuum-memory entries kept, 0 disables it (empty data directory only).
    #[arg(long, default_value_t = MemoryConfig::default().capacity)]
    pub memory_capacity: usize,
    /// Memory entries older than this many steps are stored as f16 (empty
    /// data directory only).
    #[arg(long, default_value_t = MemoryConfig::default().compress_after)]
    pub memory_compress_after: u64,
    /// Recency decay per step of the memory's weights (empty data directory
    /// only).
    #[arg(long, default_value_t = MemoryConfig::default().recency_decay)]
    pub memory_recency_decay: f64,
    /// Base of the staleness decay `base^s`, in (0, 1] (empty data directory
    /// only).
    #[arg(long, default_value_t = 0.5)]
    pub decay_base: f64,
    /// Exit when standard input reaches end of file: a launcher holding the
    /// pipe gets no orphaned server even if it is killed.
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

/// The outer optimizer of `--optimizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerKind {
    /// SGD with heavy-ball momentum.
    Sgd,
    /// Adam with bias correction.
    Adam,
}

/// Parses `START..END:EVERY:LR:MOMENTUM[:WARMUP]` (the ranges are checked
/// against the parameter count when the coordinator is built).
pub fn parse_timescale(s: &str) -> Result<TimescaleGroup, String> {
    let parts: Vec<&str> = s.split(':').collect();
    if !(4..=5).contains(&parts.len()) {
        return Err(format!("{s:?}: expected START..END:EVERY:LR:MOMENTUM[:WARMUP]"));
    }
    let (start, end) =
        parts[0].split_once("..").ok_or_else(|| format!("{:?}: expected a range START..END", parts[0]))?;
    let num = |what: &str, v: &str| -> Result<u64, String> {
        v.trim().parse::<u64>().map_err(|e| format!("{what} {v:?}: {e}"))
    };
    let real = |what: &str, v: &str| -> Result<f32, String> {
        v.trim().parse::<f32>().map_err(|e| format!("{what} {v:?}: {e}"))
    };
    let index = |what: &str, v: &str| -> Result<usize, String> {
        usize::try_from(num(what, v)?).map_err(|e| format!("{what} {v:?}: {e}"))
    };
    Ok(TimescaleGroup {
        range: index("start", start)?..index("end", end)?,
        every: num("every", parts[1])?,
        lr: real("lr", parts[2])?,
        momentum: real("momentum", parts[3])?,
        warmup: match parts.get(4) {
            Some(w) => num("warmup", w)?,
            None => 0,
        },
    })
}

fn secs(what: &str, s: f64) -> Result<Duration, ServiceError> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| ServiceError::Config { reason: format!("{what} = {s} is not a positive duration") })
}

impl ServeArgs {
    /// The server configuration these flags describe (reads the secret).
    pub fn server_config(&self) -> Result<ServerConfig, ServiceError> {
        let mut c = ServerConfig::new(self.data.clone());
        c.listen = self.listen;
        c.secret = match (&self.secret_file, &self.secret_env) {
            (Some(p), _) => {
                let s = std::fs::read_to_string(p)
                    .map_err(|e| ServiceError::Io { what: "read the secret file", source: e })?;
                Some(s.trim().to_owned())
            }
            (None, Some(var)) => Some(
                std::env::var(var)
                    .map_err(|_| ServiceError::Config { reason: format!("environment variable {var} is not set") })?,
            ),
            (None, None) => None,
        };
        if c.secret.as_deref().is_some_and(|s| s.is_empty() || !s.bytes().all(|b| (0x21..0x7f).contains(&b))) {
            return Err(ServiceError::Config { reason: "the shared secret must be non-empty printable ASCII".into() });
        }
        c.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.clone(), key: key.clone() }),
            _ => None,
        };
        c.allow_plaintext_remote = self.allow_plaintext_remote;
        c.max_concurrent = self.max_concurrent;
        c.max_request_bytes = self.max_request_bytes;
        c.idempotency_ttl = secs("--idempotency-ttl-s", self.idempotency_ttl_s)?;
        c.init = self.init_record()?;
        Ok(c)
    }

    /// The record an empty data directory is initialized with: read from
    /// `--init-record`, or built from the flags through
    /// [`ConfigRecord::from_coordinator_config`] (one validated path).
    pub fn init_record(&self) -> Result<ConfigRecord, ServiceError> {
        if let Some(path) = &self.init_record {
            let bytes =
                std::fs::read(path).map_err(|e| ServiceError::Io { what: "read the --init-record file", source: e })?;
            return Ok(ConfigRecord::decode_record(&bytes)?.0);
        }
        let lease_ttl = secs("--lease-ttl-s", self.lease_ttl_s)?;
        let initial = match self.init_zeros {
            Some(0) => return Err(ServiceError::Config { reason: "--init-zeros must be >= 1".into() }),
            Some(n) if n > crate::config::MAX_PARAMS => {
                return Err(ServiceError::Config {
                    reason: format!("--init-zeros {n} is above the limit of {}", crate::config::MAX_PARAMS),
                });
            }
            Some(n) => vec![0.0; n],
            None => self.init.clone(),
        };
        let usize_of = |v: u64, what: &str| {
            usize::try_from(v).map_err(|_| ServiceError::Config { reason: format!("{what} = {v} is too large") })
        };
        let optimizer = match self.optimizer {
            OptimizerKind::Sgd => OuterOptimizer::Sgd { lr: self.lr, momentum: self.momentum },
            OptimizerKind::Adam => {
                OuterOptimizer::Adam { lr: self.lr, beta1: self.momentum, beta2: self.beta2, eps: self.eps }
            }
        };
        let mut builder = CoordinatorConfig::builder()
            .max_in_flight(usize_of(self.max_in_flight, "--max-in-flight")?)
            .max_staleness(self.max_staleness)
            .lease_ttl(lease_ttl)
            .min_commits(usize_of(self.min_commits, "--min-commits")?)
            .optimizer(optimizer)
            .warmup(self.warmup)
            .memory(MemoryConfig {
                capacity: self.memory_capacity,
                compress_after: self.memory_compress_after,
                recency_decay: self.memory_recency_decay,
            })
            .decay(Exponential { base: self.decay_base })
            .dedup_capacity(ConfigRecord::standard().dedup_capacity as usize);
        for g in &self.timescales {
            builder = builder.timescale(g.clone());
        }
        if !(self.decay_base.is_finite() && self.decay_base > 0.0 && self.decay_base <= 1.0) {
            return Err(ServiceError::Config { reason: format!("--decay-base {} must be in (0, 1]", self.decay_base) });
        }
        let config = builder.build()?;
        ConfigRecord::from_coordinator_config(&config, initial)
    }

    /// The flags' record as prost bytes (what `--init-record` reads).
    pub fn encoded_init_record(&self) -> Result<Vec<u8>, ServiceError> {
        Ok(self.init_record()?.encode_to_vec())
    }

    /// Runs the server until SIGINT/SIGTERM (or, with
    /// `--exit-on-stdin-eof`, until standard input closes; every
    /// acknowledged change is already durable, so exiting then loses nothing).
    pub fn run(&self) -> Result<(), ServiceError> {
        let config = self.server_config()?;
        if self.exit_on_stdin_eof {
            std::thread::spawn(|| {
                let mut sink = [0u8; 256];
                // Ends on end of file or a read error: either way the launcher is gone.
                while matches!(std::io::Read::read(&mut std::io::stdin(), &mut sink), Ok(n) if n > 0) {}
                std::process::exit(0);
            });
        }
        crate::server::run_blocking(config)
    }
}
