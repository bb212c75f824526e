//! Typed errors. Every fallible public call returns [`Error`]; each family of
//! failures has its own `#[non_exhaustive]` enum so callers can match on what
//! they can recover from and new variants are not breaking changes.

use std::time::Duration;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the crate returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of its documented range.
    #[error("invalid configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field, as named in [`crate::SyncConfig`] or the builder.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// Two lengths that must agree do not (e.g. `delta` vs `params`).
    #[error("length mismatch for {what}: expected {expected}, got {actual}")]
    LengthMismatch {
        /// What was being compared.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length supplied.
        actual: usize,
    },
    /// Non-finite values (NaN or infinity) were found in `delta` or `params` on
    /// the named ranks. No rank changed its accumulator or parameters.
    #[error("non-finite input on rank(s) {ranks:?}; the step was rolled back on every rank")]
    NonFinite {
        /// Ranks whose input held non-finite values, ascending.
        ranks: Vec<usize>,
    },
    /// A blocking operation did not complete in time.
    #[error("timed out after {after:?} in {op} waiting for rank(s) {missing:?}")]
    Timeout {
        /// The operation that timed out.
        op: &'static str,
        /// Ranks that had not arrived, ascending (empty when unknown).
        missing: Vec<usize>,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// A received packed buffer failed validation.
    #[error("packed buffer from rank {rank} is invalid: {source}")]
    InvalidPeerBuffer {
        /// The rank that sent it.
        rank: usize,
        /// What was wrong with it.
        #[source]
        source: WireError,
    },
    /// A wire-format error outside of an exchange (e.g. decoding user input).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A compute backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A collective failed for a reason other than a timeout.
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    /// The coordinator refused or failed an operation.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
}

/// Why a packed buffer (see [`crate::wire`]) was rejected by the decoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer ends before a structure it announces.
    #[error("truncated: needed at least {needed} bytes, have {have}")]
    Truncated {
        /// Bytes required so far.
        needed: u64,
        /// Bytes present.
        have: u64,
    },
    /// The buffer is longer than its header and tables describe.
    #[error("oversized: expected {expected} bytes, have {have}")]
    Oversized {
        /// Bytes described by the header and tables.
        expected: u64,
        /// Bytes present.
        have: u64,
    },
    /// The first four bytes are not the format's magic.
    #[error("bad magic {found:02x?}")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// The format version is not one this decoder reads.
    #[error("unsupported format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// Version in the buffer.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The value dtype code is unknown.
    #[error("unknown value dtype code {code}")]
    UnknownDtype {
        /// The code found.
        code: u8,
    },
    /// A reserved field or padding byte is not zero.
    #[error("reserved field or padding at byte {offset} is not zero")]
    NonZeroReserved {
        /// Byte offset of the offending field.
        offset: u64,
    },
    /// The header's entry count disagrees with the chunk table, or exceeds `n`.
    #[error("entry count {header} disagrees with the chunk table's {table} (n = {n})")]
    CountMismatch {
        /// Count in the header.
        header: u64,
        /// Sum of the chunk table (saturating).
        table: u64,
        /// Dense length.
        n: u64,
    },
    /// A chunk claims more entries than it has elements.
    #[error("chunk {chunk} claims {count} entries but holds {len} elements")]
    ChunkOverfull {
        /// Chunk number.
        chunk: u64,
        /// Claimed entries.
        count: u32,
        /// Elements in the chunk.
        len: u32,
    },
    /// Indices inside a chunk are not strictly increasing.
    #[error("chunk {chunk}: index at position {position} is not greater than its predecessor")]
    Misordered {
        /// Chunk number.
        chunk: u64,
        /// Position in the chunk's list.
        position: u32,
    },
    /// An index is at or past the end of its chunk.
    #[error("chunk {chunk}: local index {index} is out of range (chunk length {len})")]
    IndexOutOfRange {
        /// Chunk number.
        chunk: u64,
        /// The local index.
        index: u32,
        /// Elements in the chunk.
        len: u32,
    },
    /// A bitmap chunk's population count differs from the chunk table.
    #[error("chunk {chunk}: bitmap holds {bits} entries, table says {count}")]
    BitmapCount {
        /// Chunk number.
        chunk: u64,
        /// Bits set.
        bits: u32,
        /// Count in the table.
        count: u32,
    },
    /// A transmitted value is NaN or infinite.
    #[error("entry {position} carries a non-finite value")]
    NonFiniteValue {
        /// Position among the entries.
        position: u64,
    },
    /// The payload checksum does not match the header.
    #[error("checksum mismatch: header {expected:#010x}, payload {actual:#010x}")]
    ChecksumMismatch {
        /// Checksum in the header.
        expected: u32,
        /// Checksum computed over the buffer.
        actual: u32,
    },
    /// A [`crate::wire::PackedDelta`] was given a different number of indices
    /// and values.
    #[error("{indices} indices but {values} values")]
    EntryLengths {
        /// Indices supplied.
        indices: u64,
        /// Values supplied.
        values: u64,
    },
    /// A [`crate::wire::PackedDelta`] index is at or past the dense length.
    #[error("entry {position}: index {index} is at or past n = {n}")]
    IndexPastEnd {
        /// Position among the entries.
        position: u64,
        /// The global index.
        index: u64,
        /// Dense length.
        n: u64,
    },
    /// A [`crate::wire::PackedDelta`] value is not exactly representable in its
    /// dtype (only possible when the public fields were set by hand).
    #[error("entry {position}: value is not representable in the wire dtype")]
    NotRepresentable {
        /// Position among the entries.
        position: u64,
    },
    /// The encoded buffer for a [`crate::wire::PackedDelta`] could not be
    /// allocated.
    #[error("a buffer for n = {n} needs {bytes} bytes, more than can be allocated")]
    TooLarge {
        /// Dense length.
        n: u64,
        /// Bytes the buffer would need.
        bytes: u64,
    },
    /// The buffer is well formed but describes another problem (length or dtype).
    #[error("buffer is for n = {found_n} with {found_dtype:?}, expected n = {n} with {dtype:?}")]
    Mismatch {
        /// Expected dense length.
        n: u64,
        /// Expected dtype.
        dtype: crate::WireDtype,
        /// Dense length in the buffer.
        found_n: u64,
        /// Dtype in the buffer.
        found_dtype: crate::WireDtype,
    },
}

/// A compute backend (CPU, WGSL/wgpu, CUDA) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend cannot run on this machine (library or driver missing).
    #[error("{backend} backend unavailable: {reason}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// What is missing, with an install hint.
        reason: String,
    },
    /// No GPU adapter/device was found.
    #[error("no {backend} adapter found: {hint}")]
    NoAdapter {
        /// Backend name.
        backend: &'static str,
        /// How to get one (e.g. install Mesa's lavapipe).
        hint: String,
    },
    /// The device was lost or reset.
    #[error("{backend} device lost: {reason}")]
    DeviceLost {
        /// Backend name.
        backend: &'static str,
        /// Driver message.
        reason: String,
    },
    /// A device allocation failed.
    #[error("{backend} out of memory allocating {bytes} bytes")]
    OutOfMemory {
        /// Backend name.
        backend: &'static str,
        /// Bytes requested.
        bytes: u64,
    },
    /// A shader or kernel failed to compile or validate.
    #[error("{backend} failed to compile `{module}`: {message}")]
    Compile {
        /// Backend name.
        backend: &'static str,
        /// Shader/kernel module.
        module: String,
        /// Compiler message.
        message: String,
    },
    /// A driver call failed.
    #[error("{backend} driver call `{call}` failed: {message}")]
    Driver {
        /// Backend name.
        backend: &'static str,
        /// The failing call.
        call: &'static str,
        /// Driver message.
        message: String,
    },
    /// The device cannot handle this problem size or feature.
    #[error("{backend} does not support {what}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// What is unsupported.
        what: String,
    },
}

/// A collective failed (timeouts are [`Error::Timeout`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectiveError {
    /// An earlier failure (timeout, dropped rank) broke the group; it must be re-created.
    #[error("collective group is broken: {reason}")]
    Broken {
        /// The first failure.
        reason: String,
    },
    /// Ranks entered different operations or sizes (a programming error upstream).
    #[error("rank {rank} entered `{found}` while others entered `{expected}`")]
    Mismatched {
        /// The rank that diverged.
        rank: usize,
        /// Operation the others are in.
        expected: &'static str,
        /// Operation that rank entered.
        found: &'static str,
    },
    /// The rank or world size is out of range.
    #[error("invalid group: rank {rank} of world size {world}")]
    InvalidRank {
        /// Rank.
        rank: usize,
        /// World size.
        world: usize,
    },
    /// NCCL returned an error.
    #[error("NCCL call `{call}` failed with result code {code}: {message}")]
    Nccl {
        /// The failing call.
        call: &'static str,
        /// `ncclResult_t` value.
        code: u32,
        /// Description.
        message: String,
    },
}

/// The coordinator refused or failed an operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// `max_in_flight` versions stayed checked out for the whole checkout timeout.
    #[error("checkout by worker {worker} timed out after {after:?}: {in_flight} versions in flight (max {max})")]
    Backpressure {
        /// Worker asking.
        worker: u64,
        /// Timeout that elapsed.
        after: Duration,
        /// Versions in flight.
        in_flight: usize,
        /// The configured maximum.
        max: usize,
    },
    /// No new version was published within the wait timeout.
    #[error("no version newer than {version} within {after:?}")]
    WaitTimeout {
        /// Version waited past.
        version: u64,
        /// Timeout that elapsed.
        after: Duration,
    },
    /// The lease is unknown or already ended.
    #[error("unknown or ended lease {lease} of worker {worker}")]
    UnknownLease {
        /// Lease id.
        lease: u64,
        /// Worker.
        worker: u64,
    },
    /// A result's shape differs from the outer parameters.
    #[error("hypergradient has length {actual}, outer parameters {expected}")]
    ShapeMismatch {
        /// Expected length.
        expected: usize,
        /// Supplied length.
        actual: usize,
    },
    /// A result holds non-finite values.
    #[error("commit {commit} carries non-finite values")]
    NonFinite {
        /// Commit id.
        commit: u64,
    },
    /// A snapshot could not be restored.
    #[error("corrupt snapshot: {reason}")]
    CorruptSnapshot {
        /// What was wrong.
        reason: String,
    },
    /// The lease stopped heartbeating for longer than the lease TTL and was
    /// expired; its slot was freed.
    #[error("lease {lease} of worker {worker} expired (no heartbeat within the lease TTL)")]
    LeaseExpired {
        /// Lease id.
        lease: u64,
        /// Worker.
        worker: u64,
    },
    /// A well-formed snapshot does not fit the configuration it is restored
    /// with (different parameter count, optimizer kind or timescale layout).
    #[error("snapshot does not match the configuration: {reason}")]
    SnapshotMismatch {
        /// What differs.
        reason: String,
    },
    /// A commit id already answered was sent again with a different body
    /// (hypergradient, loss or lease): a conflict, not a retry. Nothing was
    /// applied.
    #[error("commit {commit_id} of worker {worker} was already answered for a different request body")]
    CommitConflict {
        /// Worker.
        worker: u64,
        /// The reused commit id.
        commit_id: u64,
    },
    /// A remote coordinator is at its limit of concurrent requests; nothing
    /// was done. Retry after the hint.
    #[error("coordinator overloaded; retry after {retry_after:?}")]
    Overloaded {
        /// How long the server suggests waiting.
        retry_after: Duration,
    },
    /// A remote coordinator refused the call's credentials (missing or wrong
    /// shared secret). Never retried.
    #[error("refused by the coordinator: {reason}")]
    Unauthenticated {
        /// Why.
        reason: String,
    },
    /// A remote coordinator refused a malformed or oversized request; nothing
    /// was changed.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What was wrong.
        reason: String,
    },
    /// A remote coordinator could not be reached or did not answer in time,
    /// after every retry.
    #[error("coordinator unavailable after {attempts} attempt(s): {reason}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// A remote coordinator failed to make a change durable (or another
    /// server-side failure); the change was not acknowledged.
    #[error("coordinator storage failure: {reason}")]
    Storage {
        /// What failed.
        reason: String,
    },
}
