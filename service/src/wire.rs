//! The wire: hand-written prost messages (no `protoc`), the method paths,
//! the raw-bytes codec both ends use, and the typed error detail carried in
//! a gRPC status.
//!
//! The equivalent `.proto` (package `chronos.coordinator.v1`, service
//! `Coordinator`) is documented on each message; field tags never change.

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

use chronos_sync::CoordinatorError;
use chronos_sync::coordinator::{CommitOutcome, RejectReason};

/// gRPC service name.
pub const SERVICE: &str = "chronos.coordinator.v1.Coordinator";
/// Method paths.
pub mod path {
    /// `rpc Checkout(CheckoutRequest) returns (LeaseMsg)`.
    pub const CHECKOUT: &str = "/chronos.coordinator.v1.Coordinator/Checkout";
    /// `rpc Heartbeat(HeartbeatRequest) returns (Empty)`.
    pub const HEARTBEAT: &str = "/chronos.coordinator.v1.Coordinator/Heartbeat";
    /// `rpc Commit(CommitMsg) returns (CommitAnswer)`.
    pub const COMMIT: &str = "/chronos.coordinator.v1.Coordinator/Commit";
    /// `rpc Release(ReleaseRequest) returns (Empty)`.
    pub const RELEASE: &str = "/chronos.coordinator.v1.Coordinator/Release";
    /// `rpc WaitForVersion(WaitRequest) returns (VersionMsg)`.
    pub const WAIT: &str = "/chronos.coordinator.v1.Coordinator/WaitForVersion";
    /// `rpc CurrentState(Empty) returns (StateMsg)`.
    pub const STATE: &str = "/chronos.coordinator.v1.Coordinator/CurrentState";
    /// `rpc Snapshot(Empty) returns (SnapshotMsg)`.
    pub const SNAPSHOT: &str = "/chronos.coordinator.v1.Coordinator/Snapshot";
}

/// Metadata key carrying the shared secret (`authorization: Bearer <secret>`).
pub const AUTH_HEADER: &str = "authorization";

/// `message Empty {}`.
#[derive(Clone, PartialEq, Message)]
pub struct Empty {}

/// `message CheckoutRequest { uint64 worker = 1; uint64 request_id = 2; }`
#[derive(Clone, PartialEq, Message)]
pub struct CheckoutRequest {
    /// Worker asking.
    #[prost(uint64, tag = "1")]
    pub worker: u64,
    /// Client-chosen id, the same on every retry of this checkout.
    #[prost(uint64, tag = "2")]
    pub request_id: u64,
}

/// `message LeaseMsg { uint64 id = 1; uint64 worker = 2; uint64 version = 3; repeated float params = 4; }`
#[derive(Clone, PartialEq, Message)]
pub struct LeaseMsg {
    /// Lease id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Worker.
    #[prost(uint64, tag = "2")]
    pub worker: u64,
    /// Version checked out.
    #[prost(uint64, tag = "3")]
    pub version: u64,
    /// Outer parameters of `version` (empty in requests).
    #[prost(float, repeated, tag = "4")]
    pub params: Vec<f32>,
}

/// `message HeartbeatRequest { LeaseMsg lease = 1; }`
#[derive(Clone, PartialEq, Message)]
pub struct HeartbeatRequest {
    /// The lease (params empty).
    #[prost(message, optional, tag = "1")]
    pub lease: Option<LeaseMsg>,
}

/// `message ReleaseRequest { LeaseMsg lease = 1; uint64 request_id = 2; }`
#[derive(Clone, PartialEq, Message)]
pub struct ReleaseRequest {
    /// The lease (params empty).
    #[prost(message, optional, tag = "1")]
    pub lease: Option<LeaseMsg>,
    /// Client-chosen id, the same on every retry.
    #[prost(uint64, tag = "2")]
    pub request_id: u64,
}

/// `message CommitMsg { LeaseMsg lease = 1; uint64 commit_id = 2; repeated float hypergradient = 3; float validation_loss = 4; }`
#[derive(Clone, PartialEq, Message)]
pub struct CommitMsg {
    /// The lease (params empty).
    #[prost(message, optional, tag = "1")]
    pub lease: Option<LeaseMsg>,
    /// Worker-chosen commit id (idempotency key with the worker).
    #[prost(uint64, tag = "2")]
    pub commit_id: u64,
    /// Hypergradient.
    #[prost(float, repeated, tag = "3")]
    pub hypergradient: Vec<f32>,
    /// Validation loss.
    #[prost(float, tag = "4")]
    pub validation_loss: f32,
}

/// `message CommitAnswer { bool accepted = 1; double weight = 2; uint64 staleness = 3;
/// optional uint64 published = 4; uint32 reason = 5; uint64 max_staleness = 6; }`
#[derive(Clone, PartialEq, Message)]
pub struct CommitAnswer {
    /// Accepted or rejected.
    #[prost(bool, tag = "1")]
    pub accepted: bool,
    /// Weight (accepted).
    #[prost(double, tag = "2")]
    pub weight: f64,
    /// Staleness.
    #[prost(uint64, tag = "3")]
    pub staleness: u64,
    /// Version published by this commit (accepted, round completed).
    #[prost(uint64, optional, tag = "4")]
    pub published: Option<u64>,
    /// Reject reason: 1 too stale, 2 lease expired, 3 released, 4 reused.
    #[prost(uint32, tag = "5")]
    pub reason: u32,
    /// `max_staleness` of a too-stale rejection.
    #[prost(uint64, tag = "6")]
    pub max_staleness: u64,
}

/// `message WaitRequest { uint64 after = 1; uint64 timeout_ms = 2; }`
#[derive(Clone, PartialEq, Message)]
pub struct WaitRequest {
    /// Wait for a version above this.
    #[prost(uint64, tag = "1")]
    pub after: u64,
    /// How long (the server caps it).
    #[prost(uint64, tag = "2")]
    pub timeout_ms: u64,
}

/// `message VersionMsg { uint64 version = 1; }`
#[derive(Clone, PartialEq, Message)]
pub struct VersionMsg {
    /// Version.
    #[prost(uint64, tag = "1")]
    pub version: u64,
}

/// `message StateMsg { uint64 version = 1; repeated float params = 2; }`
#[derive(Clone, PartialEq, Message)]
pub struct StateMsg {
    /// Version.
    #[prost(uint64, tag = "1")]
    pub version: u64,
    /// Outer parameters.
    #[prost(float, repeated, tag = "2")]
    pub params: Vec<f32>,
}

/// `message SnapshotMsg { bytes snapshot = 1; }`
#[derive(Clone, PartialEq, Message)]
pub struct SnapshotMsg {
    /// Snapshot bytes (the library's format).
    #[prost(bytes = "vec", tag = "1")]
    pub snapshot: Vec<u8>,
}

/// The typed error carried in a status's details:
/// `message ErrorDetail { uint32 kind = 1; uint64 a = 2; uint64 b = 3; uint64 c = 4; uint64 d = 5; string reason = 6; }`
/// (`a..d` by kind, see [`to_status`]).
#[derive(Clone, PartialEq, Message)]
pub struct ErrorDetail {
    /// Which error (the `KIND_*` constants).
    #[prost(uint32, tag = "1")]
    pub kind: u32,
    /// First field.
    #[prost(uint64, tag = "2")]
    pub a: u64,
    /// Second field.
    #[prost(uint64, tag = "3")]
    pub b: u64,
    /// Third field.
    #[prost(uint64, tag = "4")]
    pub c: u64,
    /// Fourth field.
    #[prost(uint64, tag = "5")]
    pub d: u64,
    /// Free text.
    #[prost(string, tag = "6")]
    pub reason: String,
}

const KIND_BACKPRESSURE: u32 = 1;
const KIND_WAIT_TIMEOUT: u32 = 2;
const KIND_UNKNOWN_LEASE: u32 = 3;
const KIND_SHAPE: u32 = 4;
const KIND_NON_FINITE: u32 = 5;
const KIND_LEASE_EXPIRED: u32 = 6;
const KIND_CONFLICT: u32 = 7;
const KIND_OVERLOADED: u32 = 8;
const KIND_UNAUTHENTICATED: u32 = 9;
const KIND_INVALID: u32 = 10;
const KIND_STORAGE: u32 = 11;

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn status(code: Code, d: ErrorDetail) -> Status {
    let msg = d.reason.clone();
    Status::with_details(code, msg, Bytes::from(d.encode_to_vec()))
}

/// A typed library error as a gRPC status with an [`ErrorDetail`].
/// `retry_after` is the hint sent with backpressure.
pub fn to_status(e: &chronos_sync::Error, retry_after: std::time::Duration) -> Status {
    let reason = e.to_string();
    let d = |kind, a, b, c, dd| ErrorDetail { kind, a, b, c, d: dd, reason: reason.clone() };
    match e {
        chronos_sync::Error::Coordinator(ce) => match ce {
            CoordinatorError::Backpressure { worker, in_flight, max, .. } => status(
                Code::ResourceExhausted,
                d(KIND_BACKPRESSURE, *worker, *in_flight as u64, *max as u64, ms(retry_after)),
            ),
            CoordinatorError::WaitTimeout { version, after } => {
                status(Code::DeadlineExceeded, d(KIND_WAIT_TIMEOUT, *version, ms(*after), 0, 0))
            }
            CoordinatorError::UnknownLease { lease, worker } => {
                status(Code::NotFound, d(KIND_UNKNOWN_LEASE, *lease, *worker, 0, 0))
            }
            CoordinatorError::ShapeMismatch { expected, actual } => {
                status(Code::InvalidArgument, d(KIND_SHAPE, *expected as u64, *actual as u64, 0, 0))
            }
            CoordinatorError::NonFinite { commit } => {
                status(Code::InvalidArgument, d(KIND_NON_FINITE, *commit, 0, 0, 0))
            }
            CoordinatorError::LeaseExpired { lease, worker } => {
                status(Code::FailedPrecondition, d(KIND_LEASE_EXPIRED, *lease, *worker, 0, 0))
            }
            CoordinatorError::CommitConflict { worker, commit_id } => {
                status(Code::AlreadyExists, d(KIND_CONFLICT, *worker, *commit_id, 0, 0))
            }
            CoordinatorError::Overloaded { retry_after } => {
                status(Code::ResourceExhausted, d(KIND_OVERLOADED, ms(*retry_after), 0, 0, 0))
            }
            CoordinatorError::Unauthenticated { .. } => {
                status(Code::Unauthenticated, d(KIND_UNAUTHENTICATED, 0, 0, 0, 0))
            }
            CoordinatorError::InvalidRequest { .. } => status(Code::InvalidArgument, d(KIND_INVALID, 0, 0, 0, 0)),
            _ => status(Code::Internal, d(KIND_STORAGE, 0, 0, 0, 0)),
        },
        chronos_sync::Error::InvalidConfig { .. } => status(Code::InvalidArgument, d(KIND_INVALID, 0, 0, 0, 0)),
        _ => status(Code::Internal, d(KIND_STORAGE, 0, 0, 0, 0)),
    }
}

/// A refused call (typed, with its reason).
pub fn invalid(reason: impl Into<String>) -> Status {
    let reason = reason.into();
    status(Code::InvalidArgument, ErrorDetail { kind: KIND_INVALID, reason, ..Default::default() })
}

/// Refused credentials.
pub fn unauthenticated(reason: impl Into<String>) -> Status {
    let reason = reason.into();
    status(Code::Unauthenticated, ErrorDetail { kind: KIND_UNAUTHENTICATED, reason, ..Default::default() })
}

/// At the request limit; retry after the hint.
pub fn overloaded(retry_after: std::time::Duration) -> Status {
    let reason = format!("server at its limit of concurrent requests; retry after {retry_after:?}");
    status(
        Code::ResourceExhausted,
        ErrorDetail { kind: KIND_OVERLOADED, a: ms(retry_after), reason, ..Default::default() },
    )
}

/// A server-side failure (nothing acknowledged).
pub fn storage(reason: impl Into<String>) -> Status {
    let reason = reason.into();
    status(Code::Internal, ErrorDetail { kind: KIND_STORAGE, reason, ..Default::default() })
}

/// What the client makes of a status.
#[derive(Debug)]
pub enum Failure {
    /// A typed answer: not retried (except `Backpressure`/`Overloaded`,
    /// which carry a hint).
    Typed(chronos_sync::Error, Option<std::time::Duration>),
    /// Transport trouble or a server that went away: retry.
    Transient(String),
}

/// Maps a status to a typed error (from its detail) or a transient failure.
pub fn from_status(s: &Status) -> Failure {
    use std::time::Duration;
    let detail = if s.details().is_empty() { None } else { ErrorDetail::decode(s.details()).ok() };
    let Some(d) = detail else {
        return match s.code() {
            Code::Unauthenticated => {
                Failure::Typed(CoordinatorError::Unauthenticated { reason: s.message().to_owned() }.into(), None)
            }
            Code::OutOfRange | Code::InvalidArgument | Code::Unimplemented => Failure::Typed(
                CoordinatorError::InvalidRequest { reason: format!("{:?}: {}", s.code(), s.message()) }.into(),
                None,
            ),
            _ => Failure::Transient(format!("{:?}: {}", s.code(), s.message())),
        };
    };
    let e: CoordinatorError = match d.kind {
        KIND_BACKPRESSURE => {
            let hint = Duration::from_millis(d.d);
            return Failure::Typed(
                CoordinatorError::Backpressure {
                    worker: d.a,
                    after: Duration::ZERO,
                    in_flight: d.b as usize,
                    max: d.c as usize,
                }
                .into(),
                Some(hint),
            );
        }
        KIND_WAIT_TIMEOUT => CoordinatorError::WaitTimeout { version: d.a, after: Duration::from_millis(d.b) },
        KIND_UNKNOWN_LEASE => CoordinatorError::UnknownLease { lease: d.a, worker: d.b },
        KIND_SHAPE => CoordinatorError::ShapeMismatch { expected: d.a as usize, actual: d.b as usize },
        KIND_NON_FINITE => CoordinatorError::NonFinite { commit: d.a },
        KIND_LEASE_EXPIRED => CoordinatorError::LeaseExpired { lease: d.a, worker: d.b },
        KIND_CONFLICT => CoordinatorError::CommitConflict { worker: d.a, commit_id: d.b },
        KIND_OVERLOADED => {
            let hint = Duration::from_millis(d.a);
            return Failure::Typed(CoordinatorError::Overloaded { retry_after: hint }.into(), Some(hint));
        }
        KIND_UNAUTHENTICATED => CoordinatorError::Unauthenticated { reason: d.reason },
        KIND_INVALID => CoordinatorError::InvalidRequest { reason: d.reason },
        KIND_STORAGE => CoordinatorError::Storage { reason: d.reason },
        k => CoordinatorError::InvalidRequest { reason: format!("unknown error kind {k}: {}", d.reason) },
    };
    Failure::Typed(e.into(), None)
}

/// A commit outcome on the wire.
pub fn answer_of(o: &CommitOutcome) -> CommitAnswer {
    match *o {
        CommitOutcome::Accepted { weight, staleness, published } => {
            CommitAnswer { accepted: true, weight, staleness, published, reason: 0, max_staleness: 0 }
        }
        CommitOutcome::Rejected { staleness, reason } => {
            let (code, max) = match reason {
                RejectReason::TooStale { max_staleness } => (1, max_staleness),
                RejectReason::LeaseExpired => (2, 0),
                RejectReason::LeaseReleased => (3, 0),
                RejectReason::LeaseAlreadyCommitted => (4, 0),
                _ => (0, 0),
            };
            CommitAnswer { accepted: false, weight: 0.0, staleness, published: None, reason: code, max_staleness: max }
        }
    }
}

/// The outcome a wire answer stands for; `None` for an answer no server
/// sends (unknown reason, non-finite or non-positive weight).
pub fn outcome_of(a: &CommitAnswer) -> Option<CommitOutcome> {
    if a.accepted {
        if !(a.weight.is_finite() && a.weight > 0.0) || a.reason != 0 {
            return None;
        }
        return Some(CommitOutcome::Accepted { weight: a.weight, staleness: a.staleness, published: a.published });
    }
    let reason = match a.reason {
        1 => RejectReason::TooStale { max_staleness: a.max_staleness },
        2 => RejectReason::LeaseExpired,
        3 => RejectReason::LeaseReleased,
        4 => RejectReason::LeaseAlreadyCommitted,
        _ => return None,
    };
    Some(CommitOutcome::Rejected { staleness: a.staleness, reason })
}

/// A codec passing the message bytes through untouched: each end decodes
/// the prost message itself, so a malformed request is a typed
/// `InvalidArgument` and a stored answer goes out byte for byte.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// Encoder half of [`RawCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

/// Decoder half of [`RawCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Decodes a request, mapping garbage to a typed `InvalidArgument`.
pub fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M, Status> {
    M::decode(bytes).map_err(|e| invalid(format!("malformed {what}: {e}")))
}
