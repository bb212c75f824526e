//! [`RemoteCoordinator`]: a blocking client with the operations of the
//! in-process [`chronos_sync::Coordinator`], implementing
//! [`CoordinatorApi`], so a worker loop runs unchanged against either.
//!
//! Every call has a deadline (`rpc_timeout`, sent as `grpc-timeout` and
//! enforced locally). Transient failures (connection refused or reset, a
//! server restarting, a deadline passed, overload) are retried with
//! exponential backoff and full jitter until `retry_budget` is spent; a retry
//! reuses the request's id (the commit id for commits), so the server answers
//! it from its record instead of applying it again. Typed answers
//! (rejections, conflicts, refused credentials, invalid requests) are never
//! retried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use rand::Rng;
use tonic::transport::{Channel, Endpoint};

use chronos_sync::coordinator::{CommitOutcome, CommitRequest, CoordinatorApi, CurrentState, Lease};
use chronos_sync::{CoordinatorError, Error, Result};

use crate::wire::{self, Failure, path};

/// How the client talks to the server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://HOST:PORT` (or `https://` with TLS).
    pub endpoint: String,
    /// Shared secret sent with every call.
    pub secret: Option<String>,
    /// Deadline of one attempt (default 10 s).
    pub rpc_timeout: Duration,
    /// Connection timeout of one attempt (default 5 s).
    pub connect_timeout: Duration,
    /// Total time a call keeps retrying transient failures (default 120 s).
    pub retry_budget: Duration,
    /// First backoff (default 20 ms); doubles per attempt.
    pub initial_backoff: Duration,
    /// Largest backoff (default 1 s).
    pub max_backoff: Duration,
    /// How long a checkout keeps asking under backpressure (default 30 s,
    /// like the in-process coordinator).
    pub checkout_timeout: Duration,
    /// PEM of the CA that signed the server's certificate (`https://`).
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Name the server's certificate carries (default: the endpoint host).
    pub tls_domain: Option<String>,
}

impl ClientConfig {
    /// Defaults for an endpoint.
    pub fn new(endpoint: impl Into<String>) -> Self {
        ClientConfig {
            endpoint: endpoint.into(),
            secret: None,
            rpc_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            retry_budget: Duration::from_secs(120),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            checkout_timeout: Duration::from_secs(30),
            tls_ca_pem: None,
            tls_domain: None,
        }
    }
}

/// Counters of what the client did (retries and the like).
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Attempts that failed transiently and were retried.
    pub retries: std::sync::atomic::AtomicU64,
}

/// A remote coordinator (shareable across threads: `Arc<RemoteCoordinator>`).
///
/// A blocking client: it runs its own small tokio runtime, so call it (and
/// drop it) from ordinary threads, not from inside an async runtime.
#[derive(Debug)]
pub struct RemoteCoordinator {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    config: ClientConfig,
    auth: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    stats: Arc<ClientStats>,
}

fn invalid_config(reason: impl Into<String>) -> Error {
    Error::InvalidConfig { field: "client", reason: reason.into() }
}

fn bad_answer(what: &str, e: impl std::fmt::Display) -> Error {
    CoordinatorError::InvalidRequest { reason: format!("undecodable {what} from the server: {e}") }.into()
}

/// The first backoff delay and its growth: `min(max, initial * 2^attempt)`,
/// then full jitter (uniform in `[d/2, d]`).
fn backoff(config: &ClientConfig, attempt: u32) -> Duration {
    let base = config.initial_backoff.saturating_mul(1u32 << attempt.min(16)).min(config.max_backoff);
    let nanos = u64::try_from(base.as_nanos()).unwrap_or(u64::MAX).max(2);
    Duration::from_nanos(rand::rng().random_range(nanos / 2..=nanos))
}

impl RemoteCoordinator {
    /// A client for `config.endpoint`. Connects lazily (the first call
    /// connects, and a lost connection is re-established by the next call).
    pub fn connect(config: ClientConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chronos-client")
            .enable_all()
            .build()
            .map_err(|e| invalid_config(format!("cannot start the client runtime: {e}")))?;
        let mut ep = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| invalid_config(format!("bad endpoint {}: {e}", config.endpoint)))?
            .connect_timeout(config.connect_timeout)
            .timeout(config.rpc_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20));
        if config.tls_ca_pem.is_some() || config.endpoint.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new();
            if let Some(ca) = &config.tls_ca_pem {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca));
            }
            if let Some(d) = &config.tls_domain {
                tls = tls.domain_name(d.clone());
            }
            ep = ep.tls_config(tls).map_err(|e| invalid_config(format!("TLS: {e}")))?;
        }
        let channel = {
            let _g = rt.enter();
            ep.connect_lazy()
        };
        let auth = match &config.secret {
            None => None,
            Some(s) => Some(
                format!("Bearer {s}")
                    .parse()
                    .map_err(|_| invalid_config("the shared secret must be printable ASCII"))?,
            ),
        };
        Ok(RemoteCoordinator { rt, channel, config, auth, stats: Arc::new(ClientStats::default()) })
    }

    /// What the client did so far.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// One attempt: the raw request bytes to a method, the raw answer bytes
    /// back (or the status). Bounded by `timeout`.
    #[doc(hidden)]
    pub fn raw_call(
        &self,
        method: &'static str,
        body: Bytes,
        timeout: Duration,
    ) -> std::result::Result<Bytes, tonic::Status> {
        self.rt.block_on(self.attempt(method, body, timeout))
    }

    async fn attempt(
        &self,
        method: &'static str,
        body: Bytes,
        timeout: Duration,
    ) -> std::result::Result<Bytes, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let mut req = tonic::Request::new(body);
        req.set_timeout(timeout);
        if let Some(a) = &self.auth {
            req.metadata_mut().insert(wire::AUTH_HEADER, a.clone());
        }
        let call = async {
            grpc.ready().await.map_err(|e| tonic::Status::unavailable(format!("not connected: {e}")))?;
            let path = http::uri::PathAndQuery::from_static(method);
            grpc.unary(req, path, wire::RawCodec).await
        };
        match tokio::time::timeout(timeout + Duration::from_millis(500), call).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!("no answer within {timeout:?}"))),
        }
    }

    /// Calls `method` until a non-transient answer or until `deadline`.
    fn call(&self, method: &'static str, body: Bytes, deadline: Instant) -> Result<Bytes> {
        self.call_hinted(method, body, deadline).map_err(|(e, _)| e)
    }

    /// [`Self::call`], keeping the server's retry hint of a typed refusal
    /// (backpressure).
    fn call_hinted(
        &self,
        method: &'static str,
        body: Bytes,
        deadline: Instant,
    ) -> std::result::Result<Bytes, (Error, Option<Duration>)> {
        let mut attempt = 0u32;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = self.config.rpc_timeout.min(left.max(Duration::from_millis(1)));
            let failure = match self.raw_call(method, body.clone(), timeout) {
                Ok(b) => return Ok(b),
                Err(s) => wire::from_status(&s),
            };
            let (reason, hint) = match failure {
                Failure::Typed(Error::Coordinator(CoordinatorError::Overloaded { retry_after }), _) => {
                    (format!("overloaded (hint {retry_after:?})"), Some(retry_after))
                }
                Failure::Typed(e, hint) => return Err((e, hint)),
                Failure::Transient(r) => (r, None),
            };
            attempt += 1;
            let wait = hint.unwrap_or(Duration::ZERO).max(backoff(&self.config, attempt - 1));
            if Instant::now() + wait >= deadline {
                return Err((CoordinatorError::Unavailable { attempts: attempt, reason }.into(), None));
            }
            self.stats.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(wait);
        }
    }

    fn budget(&self) -> Instant {
        Instant::now() + self.config.retry_budget
    }

    fn lease_msg(lease: &Lease) -> wire::LeaseMsg {
        wire::LeaseMsg { id: lease.id, worker: lease.worker, version: lease.version, params: Vec::new() }
    }

    /// Checks out the current version; under backpressure asks again (after
    /// the server's hint, with jitter) until `checkout_timeout`, then
    /// [`CoordinatorError::Backpressure`].
    pub fn checkout(&self, worker: u64) -> Result<Lease> {
        let request_id: u64 = rand::rng().random();
        let body = Bytes::from(wire::CheckoutRequest { worker, request_id }.encode_to_vec());
        let start = Instant::now();
        let until = start + self.config.checkout_timeout;
        let mut attempt = 0u32;
        loop {
            match self.call_hinted(path::CHECKOUT, body.clone(), self.budget().max(until)) {
                Ok(b) => {
                    let m = wire::LeaseMsg::decode(b).map_err(|e| bad_answer("lease", e))?;
                    return Ok(Lease { id: m.id, worker: m.worker, version: m.version, params: Arc::from(m.params) });
                }
                Err((Error::Coordinator(CoordinatorError::Backpressure { in_flight, max, .. }), hint)) => {
                    // The server's hint, with jitter, growing while it lasts.
                    let wait = backoff(&self.config, attempt)
                        .max(hint.unwrap_or(Duration::ZERO))
                        .max(Duration::from_millis(1));
                    attempt += 1;
                    if Instant::now() + wait >= until {
                        return Err(CoordinatorError::Backpressure {
                            worker,
                            after: self.config.checkout_timeout,
                            in_flight,
                            max,
                        }
                        .into());
                    }
                    std::thread::sleep(wait);
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Renews `lease` (see [`chronos_sync::Coordinator::heartbeat`]).
    pub fn heartbeat(&self, lease: &Lease) -> Result<()> {
        let body = Bytes::from(wire::HeartbeatRequest { lease: Some(Self::lease_msg(lease)) }.encode_to_vec());
        self.call(path::HEARTBEAT, body, self.budget()).map(|_| ())
    }

    /// Ends `lease` without a commit (retry-safe).
    pub fn release(&self, lease: &Lease) -> Result<()> {
        let request_id: u64 = rand::rng().random();
        let body =
            Bytes::from(wire::ReleaseRequest { lease: Some(Self::lease_msg(lease)), request_id }.encode_to_vec());
        self.call(path::RELEASE, body, self.budget()).map(|_| ())
    }

    /// The request bytes of a commit (what a retry sends again).
    #[doc(hidden)]
    pub fn commit_body(lease: &Lease, request: &CommitRequest) -> Bytes {
        Bytes::from(
            wire::CommitMsg {
                lease: Some(Self::lease_msg(lease)),
                commit_id: request.commit_id,
                hypergradient: request.hypergradient.clone(),
                validation_loss: request.validation_loss,
            }
            .encode_to_vec(),
        )
    }

    /// Commits against `lease`; retried transparently with the same commit
    /// id, so it is applied at most once. A commit id already used with a
    /// different body: [`CoordinatorError::CommitConflict`].
    pub fn commit(&self, lease: &Lease, request: CommitRequest) -> Result<CommitOutcome> {
        let body = Self::commit_body(lease, &request);
        let b = self.call(path::COMMIT, body, self.budget())?;
        let a = wire::CommitAnswer::decode(b).map_err(|e| bad_answer("commit answer", e))?;
        wire::outcome_of(&a).ok_or_else(|| bad_answer("commit answer", "unknown outcome"))
    }

    /// Waits (at most `timeout`, which the server may cap) for a version
    /// above `after`; [`CoordinatorError::WaitTimeout`] otherwise.
    pub fn wait_for_version(&self, after: u64, timeout: Duration) -> Result<u64> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let body = Bytes::from(wire::WaitRequest { after, timeout_ms }.encode_to_vec());
        let deadline = Instant::now() + timeout;
        let mut attempt = 0u32;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.raw_call(path::WAIT, body.clone(), left + Duration::from_secs(1));
            let failure = match r {
                Ok(b) => return Ok(wire::VersionMsg::decode(b).map_err(|e| bad_answer("version", e))?.version),
                Err(s) => wire::from_status(&s),
            };
            match failure {
                Failure::Typed(Error::Coordinator(CoordinatorError::Overloaded { .. }), _) | Failure::Transient(_) => {
                    let wait = backoff(&self.config, attempt);
                    attempt += 1;
                    if Instant::now() + wait >= deadline {
                        return Err(CoordinatorError::WaitTimeout { version: after, after: timeout }.into());
                    }
                    std::thread::sleep(wait);
                }
                Failure::Typed(e, _) => return Err(e),
            }
        }
    }

    /// The current version and outer parameters.
    pub fn current_state(&self) -> Result<CurrentState> {
        let b = self.call(path::STATE, Bytes::from(wire::Empty {}.encode_to_vec()), self.budget())?;
        let m = wire::StateMsg::decode(b).map_err(|e| bad_answer("state", e))?;
        Ok(CurrentState { version: m.version, params: Arc::from(m.params) })
    }

    /// The current version.
    pub fn current_version(&self) -> Result<u64> {
        Ok(self.current_state()?.version)
    }

    /// The whole meta-state in the library's snapshot format (restore it with
    /// [`chronos_sync::Coordinator::restore`]).
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        let b = self.call(path::SNAPSHOT, Bytes::from(wire::Empty {}.encode_to_vec()), self.budget())?;
        Ok(wire::SnapshotMsg::decode(b).map_err(|e| bad_answer("snapshot", e))?.snapshot)
    }
}

impl CoordinatorApi for RemoteCoordinator {
    fn checkout(&self, worker: u64) -> Result<Lease> {
        RemoteCoordinator::checkout(self, worker)
    }
    fn heartbeat(&self, lease: &Lease) -> Result<()> {
        RemoteCoordinator::heartbeat(self, lease)
    }
    fn commit(&self, lease: &Lease, request: CommitRequest) -> Result<CommitOutcome> {
        RemoteCoordinator::commit(self, lease, request)
    }
    fn release(&self, lease: &Lease) -> Result<()> {
        RemoteCoordinator::release(self, lease)
    }
    fn wait_for_version(&self, after: u64, timeout: Duration) -> Result<u64> {
        RemoteCoordinator::wait_for_version(self, after, timeout)
    }
    fn current_state(&self) -> Result<CurrentState> {
        RemoteCoordinator::current_state(self)
    }
    fn export_snapshot(&self) -> Result<Vec<u8>> {
        RemoteCoordinator::snapshot(self)
    }
}
