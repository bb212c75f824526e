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
    /// A step failed on one or more ranks for a reason other than non-finite
    /// input alone: a wrong-length argument, a backend failure, a rank whose
    /// replica diverged earlier. Every rank of the group returns it for the
    /// same step with the same `failures` (the failures travel in the vote), so
    /// all ranks stay at the same step; the accumulator and parameters are as
    /// they were before the step, except where a failure says otherwise (see
    /// [`FailureCause`]).
    #[error("step failed on {}", describe_failures(failures))]
    RankFailed {
        /// Every failing rank with its cause, by rank.
        failures: Vec<RankFailure>,
        /// On a failing rank, its own error (the others have `None`).
        #[source]
        local: Option<Box<Error>>,
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
    /// A checkpoint could not be written, read or restored.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// One rank's failure of a step, as every rank learns it from the vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankFailure {
    /// The failing rank.
    pub rank: usize,
    /// The bucket (index in its [`crate::SyncGroup`]; 0 for a
    /// [`crate::SparseSync`]) the failure concerns, when it concerns one.
    pub bucket: Option<usize>,
    /// What failed.
    pub cause: FailureCause,
}

/// What failed on a rank (see [`Error::RankFailed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureCause {
    /// Non-finite `delta` or `params`, or an accumulation that overflowed.
    /// Nothing changed on any rank.
    NonFinite,
    /// A `delta` or `params` of the wrong length, or a grouped step given the
    /// wrong number of buckets. Nothing changed on any rank.
    LengthMismatch,
    /// The backend failed while accumulating (nothing changed on any rank)
    /// or while selecting and packing (this step's accumulation is kept on
    /// every rank, nothing was sent, `params` are unchanged).
    Backend,
    /// An earlier step failed on this rank after the exchange (while
    /// applying), so its parameters may differ from its peers'. Every step
    /// fails until the engines are restored from a checkpoint.
    Diverged,
}

impl FailureCause {
    /// The cause's code in the vote (never 0, which means "no failure").
    pub(crate) fn code(self) -> u32 {
        match self {
            FailureCause::NonFinite => 1,
            FailureCause::LengthMismatch => 2,
            FailureCause::Backend => 3,
            FailureCause::Diverged => 4,
        }
    }

    /// The cause for a vote code; unknown codes (a newer peer) read as a
    /// backend failure rather than being dropped.
    pub(crate) fn from_code(code: u32) -> FailureCause {
        match code {
            1 => FailureCause::NonFinite,
            2 => FailureCause::LengthMismatch,
            4 => FailureCause::Diverged,
            _ => FailureCause::Backend,
        }
    }
}

impl std::fmt::Display for RankFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cause = match self.cause {
            FailureCause::NonFinite => "non-finite input",
            FailureCause::LengthMismatch => "wrong length",
            FailureCause::Backend => "backend failure",
            FailureCause::Diverged => "diverged replica",
        };
        match self.bucket {
            Some(b) => write!(f, "rank {} ({cause}, bucket {b})", self.rank),
            None => write!(f, "rank {} ({cause})", self.rank),
        }
    }
}

fn describe_failures(failures: &[RankFailure]) -> String {
    let parts: Vec<String> = failures.iter().map(ToString::to_string).collect();
    parts.join(", ")
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
    /// A rank announced a packed buffer longer than the selection rule's
    /// worst case allows (checked before anything is allocated for it).
    #[error("announced {announced} bytes, more than the {limit} bytes the selection rule allows")]
    AnnouncedTooLarge {
        /// Bytes announced.
        announced: u64,
        /// The largest buffer the configuration can produce.
        limit: u64,
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
    /// An MPI call returned an error code (feature `mpi`).
    #[error("MPI call `{call}` failed with error code {code}: {message}")]
    Mpi {
        /// The failing call.
        call: &'static str,
        /// The MPI error code.
        code: i32,
        /// MPI's description of it.
        message: String,
    },
    /// The process was not launched as the MPI job it must be part of (no
    /// launcher, or a world of another size than asked for).
    #[error("MPI launch: {reason}")]
    Launch {
        /// What is wrong and what to run instead.
        reason: String,
    },
    /// The collective cannot do what was asked of it (e.g. exchange
    /// device memory).
    #[error("collective cannot do this: {what}")]
    Unsupported {
        /// What was asked.
        what: String,
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

/// Why a checkpoint (see [`crate::checkpoint`]) could not be written, was
/// rejected by the decoder, or does not fit the engine it is restored into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The buffer ends before a structure it announces.
    #[error("truncated checkpoint: needed at least {needed} bytes, have {available}")]
    Truncated {
        /// Bytes required so far (saturated at `u64::MAX` for absurd lengths).
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// The buffer continues past the last bucket.
    #[error("checkpoint has trailing bytes: its buckets end at {expected}, the buffer has {found}")]
    TrailingBytes {
        /// Bytes described by the header and the buckets.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// The first four bytes are not the checkpoint magic.
    #[error("bad checkpoint magic {found:02x?}")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// The format version is not one this build reads.
    #[error("unsupported checkpoint version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// Version in the buffer.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The checksum in the header does not match the buffer.
    #[error("checkpoint checksum mismatch: header {expected:#018x}, buffer {actual:#018x}")]
    ChecksumMismatch {
        /// Checksum stored in the header.
        expected: u64,
        /// Checksum computed over the buffer.
        actual: u64,
    },
    /// A reserved field or padding byte is not zero.
    #[error("checkpoint reserved field or padding at byte {offset} is not zero")]
    NonZeroReserved {
        /// Byte offset of the offending byte.
        offset: u64,
    },
    /// A bucket's wire dtype code is unknown.
    #[error("bucket {bucket}: unknown wire dtype code {code}")]
    InvalidDtype {
        /// Bucket number.
        bucket: usize,
        /// The code found.
        code: u8,
    },
    /// A field holds a value no engine state has (`world == 0`,
    /// `rank >= world`, `since_sync > steps`).
    #[error("invalid checkpoint field `{field}`: {reason}")]
    InvalidField {
        /// The field, as named in [`crate::checkpoint::Checkpoint`] or
        /// [`crate::checkpoint::BucketState`].
        field: &'static str,
        /// Why it was rejected (naming the bucket where there is one).
        reason: String,
    },
    /// An accumulator value is NaN or infinite.
    #[error("bucket {bucket}: accumulator value {index} is not finite")]
    NonFinite {
        /// Bucket number.
        bucket: usize,
        /// Index in the accumulator.
        index: u64,
    },
    /// A bucket's accumulator does not hold `n` values (encoding only).
    #[error("bucket {bucket}: n = {n} but the accumulator holds {len} values")]
    AccumulatorLength {
        /// Bucket number.
        bucket: usize,
        /// The bucket's `n`.
        n: u64,
        /// Values in its accumulator.
        len: u64,
    },
    /// The encoded checkpoint could not be allocated.
    #[error("a checkpoint of {bytes} bytes cannot be allocated")]
    TooLarge {
        /// Bytes needed (`u64::MAX` when the size overflows).
        bytes: u64,
    },
    /// Restore: the checkpoint was written by a group of another size.
    #[error("checkpoint is for world size {found}, this group has {expected}")]
    WorldMismatch {
        /// This group's world size.
        expected: u32,
        /// World size in the checkpoint.
        found: u32,
    },
    /// Restore: the checkpoint was written by another rank.
    #[error("checkpoint is for rank {found}, this is rank {expected}")]
    RankMismatch {
        /// This rank.
        expected: u32,
        /// Rank in the checkpoint.
        found: u32,
    },
    /// Restore: the checkpoint holds another number of buckets.
    #[error("checkpoint holds {found} buckets, the engine has {expected}")]
    BucketCountMismatch {
        /// Buckets of the engine.
        expected: usize,
        /// Buckets in the checkpoint.
        found: usize,
    },
    /// Restore: a bucket has another dense length.
    #[error("bucket {bucket}: checkpoint length {found}, the engine has {expected}")]
    LengthMismatch {
        /// Bucket number.
        bucket: usize,
        /// The engine's length.
        expected: u64,
        /// Length in the checkpoint.
        found: u64,
    },
    /// Restore: a bucket has another wire dtype.
    #[error("bucket {bucket}: checkpoint dtype {found:?}, the engine uses {expected:?}")]
    DtypeMismatch {
        /// Bucket number.
        bucket: usize,
        /// The engine's dtype.
        expected: crate::WireDtype,
        /// Dtype in the checkpoint.
        found: crate::WireDtype,
    },
    /// Restore: a bucket was written under another configuration
    /// ([`crate::SyncConfig::fingerprint`] differs).
    #[error("bucket {bucket}: checkpoint config fingerprint {found:#018x}, the engine's is {expected:#018x}")]
    ConfigMismatch {
        /// Bucket number.
        bucket: usize,
        /// Fingerprint of the engine's configuration.
        expected: u64,
        /// Fingerprint in the checkpoint.
        found: u64,
    },
}
