//! [`WgpuState`]: everything one `SparseSync` keeps on the device, allocated
//! once by `create_state` and reused every step.

use std::cell::RefCell;

use super::buffer::vector_usage;
use super::context::{BACKEND, GpuContext, MapSlot, map_slot};
use super::recorder::ParamRing;
use super::segments::{Segments, max_segment_elems};
use crate::config::{Selection, SyncConfig, WireDtype};
use crate::error::{BackendError, Result};
use crate::wire::ChunkTable;
use crate::wire::layout::{self, CHUNK_ELEMS};

/// Elements reduced by one workgroup of the fused pass (256 x 16).
pub(super) const FUSED_TILE: u64 = 4096;
/// Elements per compaction tile (256 x 4).
pub(super) const PACK_TILE: u64 = 1024;

/// Which selection rule, with its device parameters.
#[derive(Debug, Clone, Copy)]
pub(super) enum Rule {
    /// Radix cut search with `k` and `kmax`.
    TopK { k: u32, kmax: u32 },
    /// `key >= bits(rel * sqrt(A / n))`.
    Threshold { rel: f32 },
    /// Every index.
    Dense,
}

/// The largest header-and-index and values sections a top-k or the dense
/// rule can write (`max_packed_bytes` for its most entries, split at the values
/// section and rounded up to a word, clamped to the buffers), when both
/// packing buffers fit one storage binding: then the pack runs on the
/// device's layout alone and one readback of `idx + val` bytes brings the
/// buffer (`select_pack::select_pack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PackBounds {
    pub(super) idx: u64,
    pub(super) val: u64,
}

/// Per-instance device state of a [`super::WgpuBackend`].
pub struct WgpuState {
    pub(super) owner: u64,
    pub(super) n: u64,
    pub(super) dtype: WireDtype,
    pub(super) rule: Rule,
    /// Set for the top-k and dense rules when the packing buffers fit one binding.
    pub(super) bounds: Option<PackBounds>,
    pub(super) error_feedback: bool,
    pub(super) segs: Segments,
    /// Double-buffered accumulator; `acc[committed]` is the committed one.
    pub(super) acc: [wgpu::Buffer; 2],
    pub(super) committed: usize,
    /// An `accumulate` wrote the spare accumulator since the last commit.
    pub(super) pending: bool,
    pub(super) partials: wgpu::Buffer,
    pub(super) hist1: wgpu::Buffer,
    pub(super) hist23: wgpu::Buffer,
    pub(super) status: wgpu::Buffer,
    pub(super) status_read: wgpu::Buffer,
    pub(super) sel: wgpu::Buffer,
    pub(super) tiles: wgpu::Buffer,
    pub(super) tile_info: wgpu::Buffer,
    pub(super) chunk_info: wgpu::Buffer,
    /// Header, chunk table and index sections of the packed buffer.
    pub(super) pk_idx: wgpu::Buffer,
    /// Values section of the packed buffer.
    pub(super) pk_val: wgpu::Buffer,
    pub(super) checksum: wgpu::Buffer,
    pub(super) head_read: wgpu::Buffer,
    pub(super) packed_read: wgpu::Buffer,
    /// The packed bytes of the last `select_pack`, on the host.
    pub(super) packed_host: Vec<u8>,
    /// Dense per-index sum of the rank contributions (apply).
    pub(super) sum: wgpu::Buffer,
    /// One bit per index: some rank sent it (apply).
    pub(super) mark: wgpu::Buffer,
    /// `sum` or `mark` may hold non-zero words: an apply was submitted and
    /// did not finish. Both are zero otherwise (apply_theta restores them),
    /// so apply clears them only when this is set.
    pub(super) scratch_dirty: bool,
    /// Gathered rank buffers and their chunk descriptors (grown on demand).
    pub(super) gathered: Option<(wgpu::Buffer, u64)>,
    pub(super) desc: Option<(wgpu::Buffer, u64)>,
    /// The header and chunk table of this rank's last packed buffer, as
    /// read back after the scan (sized for `n` here).
    pub(super) own_table: ChunkTable,
    /// Each peer's header and chunk table (apply; one per rank, grown once
    /// to the largest group seen).
    pub(super) peer_tables: Vec<ChunkTable>,
    /// The chunk descriptors `apply` uploads (reused).
    pub(super) host_desc: Vec<[u32; 4]>,
    /// Device validation of the peers (`validate_peers`): each rank's
    /// (offset, length) in `gathered`, the verdicts and their readback
    /// copy, grown to the largest group seen.
    pub(super) peer_spans: Option<(wgpu::Buffer, u64)>,
    pub(super) verdicts: Option<(wgpu::Buffer, u64)>,
    pub(super) verdicts_read: Option<(wgpu::Buffer, u64)>,
    pub(super) host_spans: Vec<u32>,
    pub(super) host_verdicts: Vec<u32>,
    /// Whether `gathered` holds the exchange `validate_peers` last
    /// accepted (rank offsets in `validated_offsets`), for the next `apply`.
    pub(super) validated: bool,
    pub(super) validated_offsets: Vec<usize>,
    /// Parameter blocks and cached bind groups, one ring per submission
    /// kind (accumulate, select, pack, apply, validate), so that a submission whose
    /// parameters match its previous ones uploads nothing.
    pub(super) params: [RefCell<ParamRing>; 5],
    /// The selection rule's initial selection words, written once here and
    /// copied on the device into `sel` at every select (no upload per sync).
    pub(super) sel_init: wgpu::Buffer,
    /// The result slot of this state's readbacks.
    pub(super) map_slot: MapSlot,
}

/// Which of a state's parameter rings a submission uses.
#[derive(Debug, Clone, Copy)]
pub(super) enum Phase {
    Accumulate = 0,
    Select = 1,
    Pack = 2,
    Apply = 3,
    Validate = 4,
}

impl WgpuState {
    /// The parameter ring of `phase`.
    pub(super) fn ring(&self, phase: Phase) -> &RefCell<ParamRing> {
        &self.params[phase as usize]
    }

    /// Number of wire chunks.
    pub(super) fn chunks(&self) -> u64 {
        layout::num_chunks(self.n)
    }
    /// Bytes of the header and chunk table.
    pub(super) fn head_bytes(&self) -> u64 {
        layout::index_base(self.n)
    }
}

/// Allocates a state for `n` elements (`config` already validated).
pub(super) fn create(
    ctx: &GpuContext,
    owner: u64,
    n: usize,
    config: &SyncConfig,
    seg_limit: Option<u64>,
) -> Result<WgpuState> {
    let n64 = n as u64;
    let unsupported = |what: String| -> crate::Error { BackendError::Unsupported { backend: BACKEND, what }.into() };
    if n == 0 {
        return Err(unsupported("vectors of length 0".into()));
    }
    if n64 >= u64::from(u32::MAX) - FUSED_TILE {
        return Err(unsupported(format!("n = {n} (u32 element indices: n must be below 2^32 - 4096)")));
    }
    let max_seg = max_segment_elems(&ctx.limits);
    if max_seg < CHUNK_ELEMS as u64 {
        return Err(unsupported(format!("storage bindings below {} bytes", CHUNK_ELEMS * 4 + 256)));
    }
    let seg_elems = seg_limit.map_or(max_seg, |s| s.min(max_seg));
    let segs = Segments::new(n64, seg_elems);
    let dtype = config.wire_dtype;
    // Every chunk a bitmap and every value present: the largest buffer.
    let val_bytes = layout::values_bytes(n64, dtype);
    let idx_bytes = layout::max_packed_bytes(n64, dtype, n64) - val_bytes;
    let packed_bytes = idx_bytes + val_bytes;
    if packed_bytes > u64::from(u32::MAX)
        || 4 * n64 > ctx.limits.max_buffer_size
        || val_bytes > ctx.limits.max_buffer_size
    {
        return Err(unsupported(format!(
            "n = {n}: buffers of {} bytes exceed max_buffer_size {} (or the 4 GiB packed-offset range)",
            packed_bytes.max(4 * n64),
            ctx.limits.max_buffer_size
        )));
    }
    let rule = match config.selection {
        Selection::TopK { .. } => {
            let k = config.selection.k(n).unwrap_or(1) as u32;
            Rule::TopK { k, kmax: k }
        }
        Selection::TopKApprox { slack, .. } => {
            let k = config.selection.k(n).unwrap_or(1) as u32;
            let kmax = ((k as f64) * (1.0 + slack)).floor().min(u32::MAX as f64) as u32;
            Rule::TopK { k, kmax: kmax.max(k) }
        }
        Selection::Threshold { rel } => Rule::Threshold { rel: rel as f32 },
        _ => Rule::Dense,
    };
    let fits = idx_bytes <= ctx.max_binding() && val_bytes <= ctx.max_binding();
    // The threshold rule's buffers range up to dense: it keeps the layout
    // readback rather than reading back a dense-sized bound every sync.
    let bounds = match config.selection {
        Selection::TopK { .. } | Selection::TopKApprox { .. } | Selection::Dense if fits => {
            let entries = config.selection.max_entries(n) as u64;
            let val = layout::values_bytes(entries, dtype).min(val_bytes);
            let all = layout::max_packed_bytes(n64, dtype, entries);
            Some(PackBounds { idx: all.saturating_sub(val).next_multiple_of(4).min(idx_bytes), val })
        }
        _ => None,
    };
    let chunks = layout::num_chunks(n64);
    let fused_groups = n64.div_ceil(FUSED_TILE);
    let tiles = n64.div_ceil(PACK_TILE);
    let store = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    let read = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
    // Parameter blocks per submission: select + pack is the largest.
    let slots = 8 * segs.list.len() + 16 + 2 * packed_bytes.div_ceil(segs.elems * 4) as usize;
    let total = 3 * 4 * n64 + n64 / 8 + 2 * packed_bytes + 16 * fused_groups + 16 * tiles + 16 * chunks;
    ctx.scoped("create_state", total, false, || {
        Ok(WgpuState {
            owner,
            n: n64,
            dtype,
            rule,
            bounds,
            error_feedback: config.error_feedback,
            segs: segs.clone(),
            acc: [ctx.buffer("acc0", 4 * n64, vector_usage()), ctx.buffer("acc1", 4 * n64, vector_usage())],
            committed: 0,
            pending: false,
            partials: ctx.buffer("partials", 16 * fused_groups, store),
            hist1: ctx.buffer("hist1", 2048 * 4, store),
            hist23: ctx.buffer("hist23", 2048 * 4, store),
            status: ctx.buffer("status", 32, store),
            status_read: ctx.buffer("status_read", 32, read),
            sel: ctx.buffer("sel", 32, store),
            tiles: ctx.buffer("tiles", 8 * tiles, store),
            tile_info: ctx.buffer("tile_info", 8 * tiles, store),
            // One entry more: the scan's section sizes (shaders/scan.wgsl).
            chunk_info: ctx.buffer("chunk_info", 16 * (chunks + 1), store),
            pk_idx: ctx.buffer("pk_idx", idx_bytes, store),
            pk_val: ctx.buffer("pk_val", val_bytes, store),
            checksum: ctx.buffer("checksum", 4, store),
            head_read: ctx.buffer("head_read", layout::index_base(n64), read),
            packed_read: ctx.buffer("packed_read", packed_bytes, read),
            packed_host: Vec::with_capacity(packed_bytes as usize),
            sum: ctx.buffer("sum", 4 * n64, store),
            mark: ctx.buffer("mark", 4 * n64.div_ceil(32), store),
            scratch_dirty: false,
            gathered: None,
            desc: None,
            own_table: ChunkTable::for_len(n64),
            peer_tables: Vec::new(),
            host_desc: Vec::with_capacity(chunks as usize),
            peer_spans: None,
            verdicts: None,
            verdicts_read: None,
            host_spans: Vec::new(),
            host_verdicts: Vec::new(),
            validated: false,
            validated_offsets: Vec::new(),
            params: std::array::from_fn(|_| RefCell::new(ParamRing::new(ctx, slots))),
            sel_init: {
                let b = ctx.buffer("sel_init", 32, wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST);
                ctx.write(&b, 0, bytemuck::cast_slice(&super::select_pack::initial_selection(rule)));
                b
            },
            map_slot: map_slot(),
        })
    })
}
