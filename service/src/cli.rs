//! The flags of `chronos-sync coordinator serve` (the CLI member embeds
//! them; this crate's tests run the same code in a child process).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.0f32; 4])]
    pub init: Vec<f32>,
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
    /// Outer learning rate, SGD with momentum (empty data directory only).
    #[arg(long, default_value_t = 0.01)]
    pub lr: f32,
    /// Outer momentum (empty data directory only).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
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
        let lease_ttl = secs("--lease-ttl-s", self.lease_ttl_s)?;
        c.init = ConfigRecord {
            initial_params: self.init.clone(),
            max_in_flight: self.max_in_flight,
            max_staleness: self.max_staleness,
            lease_ttl_ms: u64::try_from(lease_ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            min_commits: self.min_commits,
            lr: self.lr,
            momentum: self.momentum,
            ..ConfigRecord::standard()
        };
        Ok(c)
    }

    /// Runs the server until SIGINT/SIGTERM.
    pub fn run(&self) -> Result<(), ServiceError> {
        crate::server::run_blocking(self.server_config()?)
    }
}
