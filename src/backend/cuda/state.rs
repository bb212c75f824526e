//! Per-instance device state of a [`super::KernelBackend`]: everything a step
//! touches, allocated once in `create_state` so no step allocates device
//! memory (except the peer-buffer staging in `apply`, which grows to the
//! largest exchange seen).

use super::kernels::{BINS, BINS3, DESC_WORDS, SEL_WORDS};
use super::runner::KernelRunner;
use crate::backend::StepStatus;
use crate::backend::transfer::TransferCounter;
use crate::config::{Selection, SyncConfig, WireDtype};
use crate::error::Result;
use crate::wire::ChunkTable;
use crate::wire::layout::{self, CHUNK_ELEMS};
use crate::wire::verdict::VERDICT_WORDS;

/// Device state of one [`crate::SparseSync`] on a kernel backend.
pub struct KernelState<M> {
    pub(super) n: usize,
    /// Blocks of the grid-stride kernels (fixed per state, so the reduction
    /// tree — and with it every status bit — is the same on every step).
    pub(super) grid: u32,
    pub(super) config: SyncConfig,
    /// Double-buffered accumulator; `acc[committed]` is the committed one.
    pub(super) acc: [M; 2],
    /// Level-1 histogram of each accumulator, written by the fused pass.
    pub(super) hist1: [M; 2],
    pub(super) committed: usize,
    /// Status of the last `accumulate`, awaiting `commit_accumulate`.
    pub(super) pending: Option<StepStatus>,
    /// Status of the committed accumulator (its `acc_sq` drives `Threshold`).
    pub(super) committed_status: StepStatus,
    pub(super) hist2: M,
    pub(super) hist3: M,
    pub(super) part_acc: M,
    pub(super) part_theta: M,
    pub(super) part_nonfinite: M,
    /// The step's control block, read back in one copy: the 32-byte
    /// [`StepStatus`] at 0, the pack info (packed length, entry count,
    /// values offset: three `u64`) at [`INFO_OFFSET`], and from
    /// [`CONTROL_BYTES`] on the [`ControlLayout`] for `world` ranks (grown
    /// once, by the first device vote or validation).
    pub(super) control: M,
    /// The control block as read back (status, pack info and, while
    /// `deferred` is `Unread`, the verdicts), reused every step.
    pub(super) host_control: Vec<u8>,
    /// Where the verdicts of the last device validation are.
    pub(super) deferred: Deferred,
    /// The ranks the control block is laid out for (0: only the first
    /// [`CONTROL_BYTES`] so far).
    pub(super) world: usize,
    /// Whether the last `accumulate_and_vote` ran the fused pass (else the
    /// status in the control block is not this step's).
    pub(super) voted_fused: bool,
    pub(super) sel: M,
    pub(super) counts: M,
    pub(super) desc: M,
    pub(super) packed: M,
    /// The packed buffer the fused pass wrote speculatively (its own test
    /// triggered) from accumulator slot `slot`: valid for the committed
    /// accumulator once that slot is committed, until it is used, the
    /// accumulator changes, or the next `accumulate`.
    pub(super) speculative: Option<Speculative>,
    pub(super) host_packed: Vec<u8>,
    /// For the top-k rules, whose entry count is fixed, and dense (every
    /// entry): the largest packed buffer they can write, which
    /// `select_pack` reads back in one copy (taking the length from the
    /// header) instead of reading the packed length first. `None` for the
    /// threshold rule, whose buffers range from empty up to dense.
    pub(super) bounded_read: Option<usize>,
    /// One packed buffer's header and chunk table, read on the host (sized
    /// for `n`): this state's own, read back by `select_pack` under
    /// `bounded_read`, and each peer's in turn when `apply` describes the
    /// buffers on the host. The two uses never overlap, so they share it.
    pub(super) table: ChunkTable,
    /// Apply workspaces: per-element f32 sum and presence mark, kept zero.
    pub(super) sum: M,
    pub(super) mark: M,
    /// Peer bytes and their chunk descriptors, grown on demand.
    pub(super) peer_bytes: Option<M>,
    pub(super) peer_desc: Option<M>,
    pub(super) host_desc: Vec<u32>,
    /// Device validation (`validate_peers`): each rank's (offset, length)
    /// in the uploaded bytes, grown on demand, and the verdicts as read.
    pub(super) peer_spans: Option<M>,
    pub(super) host_spans: Vec<u64>,
    pub(super) host_verdicts: Vec<u32>,
    /// Whether the exchange `validate_peers` last accepted (its rank
    /// offsets in `validated_offsets`) has its bytes and descriptors on the
    /// device for the next `apply`; cleared once used or after a failure.
    pub(super) validated: bool,
    pub(super) validated_offsets: Vec<usize>,
}

/// Byte offset of the pack info in the control block.
pub(super) const INFO_OFFSET: usize = 32;
/// Bytes of the control block read back per step: the status and the pack
/// info (24 bytes, padded).
pub(super) const CONTROL_BYTES: usize = 64;

/// The control block past its first [`CONTROL_BYTES`], for `world` ranks:
/// the vote words of a step voted in device memory (`1 + world` `u32`),
/// every rank's packed length (`world` `u64`), then the device validation's
/// verdicts (`VERDICT_WORDS` `u32` per rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ControlLayout {
    pub(super) world: usize,
}

impl ControlLayout {
    /// Byte offset of the vote words.
    pub(super) const VOTE: usize = CONTROL_BYTES;
    pub(super) fn vote_words(self) -> usize {
        1 + self.world
    }
    /// Byte offset of the packed lengths (8-byte aligned).
    pub(super) fn lens(self) -> usize {
        (Self::VOTE + 4 * self.vote_words()).next_multiple_of(8)
    }
    /// Byte offset of the verdicts.
    pub(super) fn verdicts(self) -> usize {
        self.lens() + 8 * self.world
    }
    /// Bytes of the whole block.
    pub(super) fn len(self) -> usize {
        self.verdicts() + 4 * VERDICT_WORDS * self.world
    }
}

/// The verdicts of the last exchange validated on the device, whose
/// reading was deferred (a device exchange: the apply kernels check them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Deferred {
    /// None outstanding: no device exchange since the last reset, or its
    /// verdicts were read when it was validated.
    None,
    /// On the device, where the control block's layout for `world` ranks
    /// puts them: the next `accumulate` reads them with the status.
    Unread,
    /// Read back into `host_verdicts`.
    Read,
}

/// A packed buffer already written on the device by the fused pass.
#[derive(Debug, Clone, Copy)]
pub(super) struct Speculative {
    /// The accumulator slot it was packed from.
    pub(super) slot: usize,
    /// Its length in bytes and its entry count (the pack info).
    pub(super) total: usize,
    pub(super) entries: u64,
}

/// Largest packed buffer for `n` elements of `dtype`: every value present,
/// every chunk a bitmap ([`layout::max_packed_bytes`] for `n` entries).
pub fn max_packed_bytes(n: usize, dtype: WireDtype) -> usize {
    layout::max_packed_bytes(n as u64, dtype, n as u64) as usize
}

/// Number of wire chunks for `n` elements.
pub fn chunks(n: usize) -> usize {
    n.div_ceil(CHUNK_ELEMS)
}

impl<M: Send> KernelState<M> {
    pub(super) fn new<R: KernelRunner<Mem = M>>(
        runner: &R,
        counter: &TransferCounter,
        n: usize,
        config: &SyncConfig,
        grid: u32,
    ) -> Result<Self> {
        let alloc = |bytes: usize| {
            counter.buffer();
            runner.alloc_zeroed(bytes)
        };
        let c = chunks(n);
        let packed_cap = max_packed_bytes(n, config.wire_dtype);
        Ok(KernelState {
            n,
            grid,
            config: config.clone(),
            acc: [alloc(4 * n)?, alloc(4 * n)?],
            hist1: [alloc(4 * BINS)?, alloc(4 * BINS)?],
            committed: 0,
            pending: None,
            committed_status: StepStatus::default(),
            hist2: alloc(4 * BINS)?,
            hist3: alloc(4 * BINS3)?,
            part_acc: alloc(4 * grid as usize)?,
            part_theta: alloc(4 * grid as usize)?,
            part_nonfinite: alloc(4 * grid as usize)?,
            control: alloc(CONTROL_BYTES)?,
            host_control: Vec::with_capacity(CONTROL_BYTES),
            deferred: Deferred::None,
            world: 0,
            voted_fused: false,
            sel: alloc(4 * SEL_WORDS)?,
            counts: alloc(8 * c)?,
            desc: alloc(4 * DESC_WORDS * c)?,
            packed: alloc(packed_cap)?,
            speculative: None,
            host_packed: Vec::with_capacity(packed_cap),
            bounded_read: match config.selection {
                Selection::TopK { .. } | Selection::TopKApprox { .. } | Selection::Dense => {
                    let entries = config.selection.max_entries(n) as u64;
                    let bound = layout::max_packed_bytes(n as u64, config.wire_dtype, entries);
                    Some(usize::try_from(bound).map_or(packed_cap, |b| b.min(packed_cap)))
                }
                Selection::Threshold { .. } => None,
            },
            table: ChunkTable::for_len(n as u64),
            sum: alloc(4 * n)?,
            mark: alloc(4 * n)?,
            peer_bytes: None,
            peer_desc: None,
            host_desc: Vec::with_capacity(DESC_WORDS * c),
            peer_spans: None,
            host_spans: Vec::new(),
            host_verdicts: Vec::new(),
            validated: false,
            validated_offsets: Vec::new(),
        })
    }
}
