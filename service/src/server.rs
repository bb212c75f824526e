//! The server: a tonic gRPC service over the in-process
//! [`Coordinator`], made durable by [`crate::store`].
//!
//! Every mutating call runs on the blocking pool under one lock: check the
//! idempotency record, apply the change to the coordinator, write snapshot +
//! record (+ commit log row) in one SQLite transaction, and only then answer.
//! If the write fails, the coordinator is rolled back to the last durable
//! snapshot and the call fails with a typed storage error.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;
use tokio::sync::{Semaphore, watch};
use tonic::Status;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::UnaryService;

use chronos_sync::CoordinatorError;
use chronos_sync::coordinator::{CommitRequest, Coordinator, CoordinatorConfig, Lease};

use crate::config::ConfigRecord;
use crate::error::ServiceError;
use crate::store::{AcceptedRow, Db, IdemRecord, KIND_CHECKOUT, KIND_COMMIT, KIND_RELEASE};
use crate::wire::{self, path};

/// PEM files of the server's TLS identity.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// Everything the server is started with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind (default `127.0.0.1:50551`, loopback).
    pub listen: SocketAddr,
    /// Data directory (holds the SQLite database).
    pub data_dir: PathBuf,
    /// Shared secret every call must carry (`authorization: Bearer <secret>`).
    pub secret: Option<String>,
    /// TLS identity (rustls); required for a non-loopback address unless
    /// `allow_plaintext_remote`.
    pub tls: Option<TlsFiles>,
    /// Serve a non-loopback address without TLS (not recommended).
    pub allow_plaintext_remote: bool,
    /// Requests handled at once; beyond it a call is answered at once with
    /// `Overloaded` and a retry hint (default 64).
    pub max_concurrent: usize,
    /// Largest request accepted, in bytes (default 4 MiB).
    pub max_request_bytes: usize,
    /// How long request records (idempotency) are kept; longer than any
    /// client's retry window (default 24 h).
    pub idempotency_ttl: Duration,
    /// Longest `WaitForVersion` the server holds (default 25 s, inside the
    /// request deadline).
    pub max_wait: Duration,
    /// Deadline of every call on the server side (default 30 s; a client's
    /// shorter `grpc-timeout` wins).
    pub request_timeout: Duration,
    /// Retry hint sent with backpressure and overload answers (default 50 ms).
    pub retry_hint: Duration,
    /// Coordinator settings for an empty data directory (an initialized one
    /// keeps its stored settings).
    pub init: ConfigRecord,
}

impl ServerConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50551)),
            data_dir: data_dir.into(),
            secret: None,
            tls: None,
            allow_plaintext_remote: false,
            max_concurrent: 64,
            max_request_bytes: 4 << 20,
            idempotency_ttl: Duration::from_secs(86_400),
            max_wait: Duration::from_secs(25),
            request_timeout: Duration::from_secs(30),
            retry_hint: Duration::from_millis(50),
            init: ConfigRecord::standard(),
        }
    }
}

fn now_ms() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Constant-time equality (the secret check).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The coordinator and its database, behind one lock.
#[derive(Debug)]
struct Core {
    coord: Coordinator,
    config: CoordinatorConfig,
    db: Db,
    last_snapshot: Vec<u8>,
    n: usize,
    /// Held for the server's life: one server per data directory.
    _dir_lock: std::fs::File,
}

fn coord_status(e: &chronos_sync::Error, hint: Duration) -> Status {
    wire::to_status(e, hint)
}

fn lease_of(m: Option<wire::LeaseMsg>) -> Result<Lease, Status> {
    let m = m.ok_or_else(|| wire::invalid("request without a lease"))?;
    if !m.params.is_empty() {
        return Err(wire::invalid("a lease in a request carries no parameters"));
    }
    Ok(Lease { id: m.id, worker: m.worker, version: m.version, params: Arc::from(Vec::new()) })
}

impl Core {
    fn persist(
        &mut self,
        rec: Option<&IdemRecord>,
        acc: Option<&AcceptedRow>,
        now: i64,
        ttl: Duration,
    ) -> Result<(), Status> {
        let snap = self.coord.snapshot();
        match self.db.persist(&snap, rec, acc, now, ttl) {
            Ok(()) => {
                self.last_snapshot = snap;
                Ok(())
            }
            Err(e) => {
                // Memory must not run ahead of the disk: back to the last
                // durable state.
                if let Ok(c) = Coordinator::restore(&self.last_snapshot, self.config.clone()) {
                    self.coord = c;
                }
                Err(wire::storage(format!("change not made durable, so not applied: {e}")))
            }
        }
    }

    fn replay(
        &self,
        worker: u64,
        kind: i64,
        id: u64,
        body: &[u8],
        s: &Settings,
        now: i64,
    ) -> Result<Option<Bytes>, Status> {
        let rec = self.db.lookup(worker, kind, id, now, s.ttl).map_err(|e| wire::storage(e.to_string()))?;
        match rec {
            None => Ok(None),
            Some(r) if r.body == body => Ok(Some(Bytes::from(r.response))),
            Some(_) if kind == KIND_COMMIT => {
                Err(coord_status(&CoordinatorError::CommitConflict { worker, commit_id: id }.into(), s.hint))
            }
            Some(_) => {
                Err(wire::invalid(format!("request id {id} of worker {worker} was used for a different request")))
            }
        }
    }

    fn checkout(&mut self, body: &[u8], s: &Settings) -> Result<Bytes, Status> {
        let req: wire::CheckoutRequest = wire::decode(body, "CheckoutRequest")?;
        let canon = req.encode_to_vec();
        let now = now_ms();
        if let Some(b) = self.replay(req.worker, KIND_CHECKOUT, req.request_id, &canon, s, now)? {
            return Ok(b);
        }
        let lease = self.coord.checkout_timeout(req.worker, Duration::ZERO).map_err(|e| coord_status(&e, s.hint))?;
        let resp = wire::LeaseMsg {
            id: lease.id,
            worker: lease.worker,
            version: lease.version,
            params: lease.params.to_vec(),
        }
        .encode_to_vec();
        let rec = IdemRecord {
            worker: req.worker,
            kind: KIND_CHECKOUT,
            id: req.request_id,
            body: canon,
            response: resp.clone(),
        };
        self.persist(Some(&rec), None, now, s.ttl)?;
        Ok(Bytes::from(resp))
    }

    fn heartbeat(&mut self, body: &[u8], s: &Settings) -> Result<Bytes, Status> {
        let req: wire::HeartbeatRequest = wire::decode(body, "HeartbeatRequest")?;
        let lease = lease_of(req.lease)?;
        self.coord.heartbeat(&lease).map_err(|e| coord_status(&e, s.hint))?;
        self.persist(None, None, now_ms(), s.ttl)?;
        Ok(Bytes::from(wire::Empty {}.encode_to_vec()))
    }

    fn release(&mut self, body: &[u8], s: &Settings) -> Result<Bytes, Status> {
        let req: wire::ReleaseRequest = wire::decode(body, "ReleaseRequest")?;
        let canon = req.encode_to_vec();
        let lease = lease_of(req.lease)?;
        let now = now_ms();
        if let Some(b) = self.replay(lease.worker, KIND_RELEASE, req.request_id, &canon, s, now)? {
            return Ok(b);
        }
        self.coord.release(&lease).map_err(|e| coord_status(&e, s.hint))?;
        let resp = wire::Empty {}.encode_to_vec();
        let rec = IdemRecord {
            worker: lease.worker,
            kind: KIND_RELEASE,
            id: req.request_id,
            body: canon,
            response: resp.clone(),
        };
        self.persist(Some(&rec), None, now, s.ttl)?;
        Ok(Bytes::from(resp))
    }

    fn commit(&mut self, body: &[u8], s: &Settings) -> Result<Bytes, Status> {
        let req: wire::CommitMsg = wire::decode(body, "CommitMsg")?;
        let canon = req.encode_to_vec();
        let lease = lease_of(req.lease)?;
        if req.hypergradient.len() != self.n {
            let e = CoordinatorError::ShapeMismatch { expected: self.n, actual: req.hypergradient.len() };
            return Err(coord_status(&e.into(), s.hint));
        }
        let now = now_ms();
        if let Some(b) = self.replay(lease.worker, KIND_COMMIT, req.commit_id, &canon, s, now)? {
            return Ok(b);
        }
        let before = self.coord.stats().accepted;
        let request = CommitRequest {
            commit_id: req.commit_id,
            hypergradient: req.hypergradient,
            validation_loss: req.validation_loss,
        };
        let hypergradient = request.hypergradient.clone();
        let outcome = self.coord.commit(&lease, request).map_err(|e| coord_status(&e, s.hint))?;
        let newly_accepted = self.coord.stats().accepted > before;
        let row = match outcome {
            chronos_sync::coordinator::CommitOutcome::Accepted { weight, staleness, published } if newly_accepted => {
                Some(AcceptedRow {
                    seq: 0,
                    worker: lease.worker,
                    commit_id: req.commit_id,
                    lease: lease.id,
                    checked_out: lease.version,
                    staleness,
                    weight,
                    published,
                    loss: req.validation_loss,
                    hypergradient,
                })
            }
            _ => None,
        };
        let resp = wire::answer_of(&outcome).encode_to_vec();
        let rec = IdemRecord {
            worker: lease.worker,
            kind: KIND_COMMIT,
            id: req.commit_id,
            body: canon,
            response: resp.clone(),
        };
        self.persist(Some(&rec), row.as_ref(), now, s.ttl)?;
        Ok(Bytes::from(resp))
    }

    fn state(&self) -> Bytes {
        let (version, params) = self.coord.state();
        Bytes::from(wire::StateMsg { version, params: params.to_vec() }.encode_to_vec())
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(wire::SnapshotMsg { snapshot: self.coord.snapshot() }.encode_to_vec())
    }
}

/// Settings every handler reads.
#[derive(Debug, Clone)]
struct Settings {
    secret: Option<String>,
    ttl: Duration,
    hint: Duration,
    max_wait: Duration,
}

#[derive(Debug)]
struct Shared {
    core: Mutex<Core>,
    permits: Arc<Semaphore>,
    version: watch::Sender<u64>,
    settings: Settings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Checkout,
    Heartbeat,
    Commit,
    Release,
    Wait,
    State,
    Snapshot,
}

impl Op {
    fn of(path: &str) -> Option<Op> {
        Some(match path {
            path::CHECKOUT => Op::Checkout,
            path::HEARTBEAT => Op::Heartbeat,
            path::COMMIT => Op::Commit,
            path::RELEASE => Op::Release,
            path::WAIT => Op::Wait,
            path::STATE => Op::State,
            path::SNAPSHOT => Op::Snapshot,
            _ => return None,
        })
    }
}

impl Shared {
    fn check_auth(&self, md: &MetadataMap) -> Result<(), Status> {
        let Some(secret) = &self.settings.secret else {
            return Ok(());
        };
        let Some(v) = md.get(wire::AUTH_HEADER) else {
            return Err(wire::unauthenticated("this call carries no credentials (a shared secret is required)"));
        };
        let given = v.as_bytes().strip_prefix(b"Bearer ").unwrap_or(b"");
        if !same(given, secret.as_bytes()) {
            return Err(wire::unauthenticated("wrong shared secret"));
        }
        Ok(())
    }

    fn blocking(&self, op: Op, body: &[u8]) -> Result<Bytes, Status> {
        let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &self.settings;
        let out = match op {
            Op::Checkout => core.checkout(body, s),
            Op::Heartbeat => core.heartbeat(body, s),
            Op::Commit => core.commit(body, s),
            Op::Release => core.release(body, s),
            Op::State => {
                wire::decode::<wire::Empty>(body, "Empty")?;
                Ok(core.state())
            }
            Op::Snapshot => {
                wire::decode::<wire::Empty>(body, "Empty")?;
                Ok(core.snapshot())
            }
            Op::Wait => Err(wire::invalid("not a blocking call")),
        };
        self.version.send_if_modified(|v| {
            let now = core.coord.current_version();
            let changed = *v != now;
            *v = now;
            changed
        });
        out
    }

    async fn wait(&self, body: &[u8]) -> Result<Bytes, Status> {
        let req: wire::WaitRequest = wire::decode(body, "WaitRequest")?;
        let timeout = Duration::from_millis(req.timeout_ms).min(self.settings.max_wait);
        let mut rx = self.version.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|v| *v > req.after)).await;
        match waited {
            Ok(Ok(v)) => Ok(Bytes::from(wire::VersionMsg { version: *v }.encode_to_vec())),
            Ok(Err(_)) => Err(wire::storage("server shutting down")),
            Err(_) => {
                let e = CoordinatorError::WaitTimeout { version: req.after, after: timeout };
                Err(coord_status(&e.into(), self.settings.hint))
            }
        }
    }

    async fn handle(self: Arc<Self>, op: Op, req: tonic::Request<Bytes>) -> Result<tonic::Response<Bytes>, Status> {
        self.check_auth(req.metadata())?;
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            return Err(wire::overloaded(self.settings.hint));
        };
        let body = req.into_inner();
        let out = if op == Op::Wait {
            self.wait(&body).await
        } else {
            let me = Arc::clone(&self);
            tokio::task::spawn_blocking(move || me.blocking(op, &body))
                .await
                .map_err(|e| wire::storage(format!("handler failed: {e}")))?
        };
        drop(permit);
        out.map(tonic::Response::new)
    }
}

/// One call routed to [`Shared::handle`].
struct Call {
    shared: Arc<Shared>,
    op: Op,
}

impl UnaryService<Bytes> for Call {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        Box::pin(Arc::clone(&self.shared).handle(self.op, request))
    }
}

/// The HTTP/2 service tonic serves.
#[derive(Clone)]
struct GrpcService {
    shared: Arc<Shared>,
    max_request: usize,
}

impl<B> tower_service::Service<http::Request<B>> for GrpcService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(op) = Op::of(req.uri().path()) else {
            let path = req.uri().path().to_owned();
            return Box::pin(async move { Ok(Status::unimplemented(format!("no method {path}")).into_http()) });
        };
        let call = Call { shared: Arc::clone(&self.shared), op };
        let max = self.max_request;
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(wire::RawCodec).apply_max_message_size_config(Some(max), Some(usize::MAX));
            Ok(grpc.unary(call, req).await)
        })
    }
}

/// A server opened on its data directory and bound to its address, not yet
/// serving.
pub struct Server {
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    config: ServerConfig,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("listen", &self.local_addr()).finish_non_exhaustive()
    }
}

impl Server {
    /// Opens (or initializes) the data directory, restores the coordinator
    /// exactly as the last acknowledged change left it, and binds.
    pub fn open(config: ServerConfig) -> Result<Self, ServiceError> {
        if !config.listen.ip().is_loopback() && config.tls.is_none() && !config.allow_plaintext_remote {
            return Err(ServiceError::Config {
                reason: format!(
                    "{} is not a loopback address: configure TLS (or allow plaintext explicitly)",
                    config.listen
                ),
            });
        }
        if config.max_concurrent == 0 || config.idempotency_ttl.is_zero() || config.request_timeout.is_zero() {
            return Err(ServiceError::Config {
                reason: "max_concurrent, idempotency_ttl and request_timeout must be > 0".into(),
            });
        }
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| ServiceError::Io { what: "create the data directory", source: e })?;
        let dir_lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(config.data_dir.join("lock"))
            .map_err(|e| ServiceError::Io { what: "open DIR/lock", source: e })?;
        match dir_lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(ServiceError::Config {
                    reason: format!("{} is in use by another server", config.data_dir.display()),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(ServiceError::Io { what: "lock DIR/lock", source: e }),
        }
        let mut db = Db::open(&config.data_dir)?;
        let (coord, cconfig, n) = match db.load()? {
            Some((rec, snap)) => {
                let (rec, cconfig) = ConfigRecord::decode_record(&rec)?;
                let coord = Coordinator::restore(&snap, cconfig.clone())?;
                (coord, cconfig, rec.initial_params.len())
            }
            None => {
                let cconfig = config.init.coordinator_config()?;
                let coord = Coordinator::new(config.init.initial_params.clone(), cconfig.clone())?;
                db.init(&config.init.encode_to_vec(), &coord.snapshot())?;
                (coord, cconfig, config.init.initial_params.len())
            }
        };
        let last_snapshot = coord.snapshot();
        let version = coord.current_version();
        let listener = std::net::TcpListener::bind(config.listen)
            .map_err(|e| ServiceError::Io { what: "bind the listen address", source: e })?;
        listener.set_nonblocking(true).map_err(|e| ServiceError::Io { what: "configure the listener", source: e })?;
        let shared = Arc::new(Shared {
            core: Mutex::new(Core { coord, config: cconfig, db, last_snapshot, n, _dir_lock: dir_lock }),
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
            version: watch::Sender::new(version),
            settings: Settings {
                secret: config.secret.clone(),
                ttl: config.idempotency_ttl,
                hint: config.retry_hint,
                max_wait: config.max_wait,
            },
        });
        Ok(Server { shared, listener, config })
    }

    /// The bound address (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// Serves until `shutdown` completes (must run inside a tokio runtime).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServiceError> {
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .map_err(|e| ServiceError::Io { what: "register the listener", source: e })?;
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut builder = tonic::transport::Server::builder()
            .timeout(self.config.request_timeout)
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)));
        if let Some(tls) = &self.config.tls {
            let read =
                |p: &PathBuf| std::fs::read(p).map_err(|e| ServiceError::Io { what: "read a TLS file", source: e });
            let identity = tonic::transport::Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
            builder = builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
        }
        let svc = GrpcService { shared: self.shared, max_request: self.config.max_request_bytes };
        builder.serve_with_incoming_shutdown(svc, incoming, shutdown).await?;
        Ok(())
    }
}

/// A server serving on its own thread and runtime (benches, tests, or a
/// process embedding it); stops when dropped.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServiceError>>>,
}

impl RunningServer {
    /// Opens the server (in the calling thread, so errors surface here) and
    /// serves it on a new thread.
    pub fn spawn(config: ServerConfig) -> Result<Self, ServiceError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(config.max_concurrent.max(1) + 4)
            .enable_all()
            .build()
            .map_err(|e| ServiceError::Io { what: "start the runtime", source: e })?;
        let server = {
            let _g = rt.enter();
            Server::open(config)?
        };
        let addr = server.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("chronos-coordinator".into())
            .spawn(move || {
                rt.block_on(server.serve(async {
                    let _ = rx.await;
                }))
            })
            .map_err(|e| ServiceError::Io { what: "start the server thread", source: e })?;
        Ok(RunningServer { addr, stop: Some(tx), thread: Some(thread) })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for the server thread.
    pub fn stop(mut self) -> Result<(), ServiceError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), ServiceError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ServiceError::Config { reason: "the server thread panicked".into() }),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Opens the server, prints `listening on ADDR` (and writes it to
/// `DIR/address`), and serves until SIGINT or SIGTERM.
pub fn run_blocking(config: ServerConfig) -> Result<(), ServiceError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(config.max_concurrent.max(1) + 4)
        .enable_all()
        .build()
        .map_err(|e| ServiceError::Io { what: "start the runtime", source: e })?;
    let dir = config.data_dir.clone();
    rt.block_on(async move {
        let server = Server::open(config)?;
        let addr = server.local_addr();
        std::fs::write(dir.join("address"), addr.to_string())
            .map_err(|e| ServiceError::Io { what: "write DIR/address", source: e })?;
        println!("listening on {addr}");
        server.serve(shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
