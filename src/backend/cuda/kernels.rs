//! The kernel table shared by every runner: names, modules, sources and the
//! argument slots of each launch. Ids and argument order mirror
//! `kernels/emu/launch.cpp` (a test checks the names agree).

/// Threads per block of every kernel (`CS_BLOCK` in `kernels/common.cuh`).
pub const BLOCK: u32 = 256;
/// Bins of the level-1 and level-2 histograms.
pub const BINS: usize = 2048;
/// Bins of the level-3 histogram.
pub const BINS3: usize = 512;
/// Words of one per-chunk descriptor (`CS_DESC_WORDS`).
pub const DESC_WORDS: usize = 8;
/// Words of the selection state (`CS_SEL_*`).
pub const SEL_WORDS: usize = 16;

/// One of the kernel source files (each prefixed by `common.cuh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Module {
    /// `kernels/fused.cu`: operation 1.
    Fused,
    /// `kernels/select_pack.cu`: operation 2.
    SelectPack,
    /// `kernels/apply.cu`: operation 3.
    Apply,
    /// `kernels/validate.cu`: the peer buffers' checks before operation 3.
    Validate,
}

const COMMON: &str = include_str!("../../../kernels/common.cuh");

impl Module {
    /// Every module.
    pub const ALL: [Module; 4] = [Module::Fused, Module::SelectPack, Module::Apply, Module::Validate];

    /// File stem under `kernels/`.
    pub fn stem(self) -> &'static str {
        match self {
            Module::Fused => "fused",
            Module::SelectPack => "select_pack",
            Module::Apply => "apply",
            Module::Validate => "validate",
        }
    }

    /// The complete, self-contained CUDA source (common helpers prepended, so
    /// the module's `#include "common.cuh"` is skipped).
    pub fn source(self) -> String {
        let body = match self {
            Module::Fused => include_str!("../../../kernels/fused.cu"),
            Module::SelectPack => include_str!("../../../kernels/select_pack.cu"),
            Module::Apply => include_str!("../../../kernels/apply.cu"),
            Module::Validate => include_str!("../../../kernels/validate.cu"),
        };
        format!("{COMMON}\n{body}")
    }
}

/// Every kernel, numbered as `cs_emu_launch` expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Kernel {
    /// `cs_fill_u32(dst, count: u64, value: u32)`.
    FillU32 = 0,
    /// `cs_fused_pass(acc_in, delta, theta, acc_out, part_acc, part_theta, part_nf, hist1, n: u64)`.
    FusedPass = 1,
    /// `cs_fused_finish(part_acc, part_theta, part_nf, blocks: u32, tau: f32, status)`.
    FusedFinish = 2,
    /// `cs_select_fixed(sel, cut: u32, status, rel: f32, n: u64, from_status: u32)`.
    SelectFixed = 3,
    /// `cs_cut_search(hist, level: u32, k: u32, kmax: u32, sel, next_hist)`.
    CutSearch = 4,
    /// `cs_hist_level(acc, n: u64, level: u32, sel, hist)`.
    HistLevel = 5,
    /// `cs_chunk_count(acc, n: u64, sel, counts)`.
    ChunkCount = 6,
    /// `cs_pack_layout(counts, nchunks: u32, n: u64, dtype: u32, sel, desc, out, info)`.
    PackLayout = 7,
    /// `cs_pack_chunk(acc, sel, desc, info, dtype: u32, out)`.
    PackChunk = 8,
    /// `cs_checksum(out, info, sel)`.
    Checksum = 9,
    /// `cs_apply_entries(g, desc, dtype: u32, mode: u32, sum, mark, theta, acc, weight: f32, verdicts, gate_ranks: u32)`.
    ApplyEntries = 10,
    /// `cs_validate_peers(g, spans, n: u64, dtype: u32, desc, verdicts)`.
    ValidatePeers = 11,
    /// `cs_pack_gate(status, mode: u32, sel, vote, world: u32)`.
    PackGate = 12,
    /// `cs_zero_if_valid(acc, n: u64, verdicts, gate_ranks: u32)`.
    ZeroIfValid = 13,
    /// `cs_vote_word(status, forced: u32, rank: u32, world: u32, host_code: u32, nonfinite_code: u32, vote)`.
    VoteWord = 14,
}

impl Kernel {
    /// Every kernel, in id order.
    pub const ALL: [Kernel; 15] = [
        Kernel::FillU32,
        Kernel::FusedPass,
        Kernel::FusedFinish,
        Kernel::SelectFixed,
        Kernel::CutSearch,
        Kernel::HistLevel,
        Kernel::ChunkCount,
        Kernel::PackLayout,
        Kernel::PackChunk,
        Kernel::Checksum,
        Kernel::ApplyEntries,
        Kernel::ValidatePeers,
        Kernel::PackGate,
        Kernel::ZeroIfValid,
        Kernel::VoteWord,
    ];

    /// The `extern "C"` symbol.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::FillU32 => "cs_fill_u32",
            Kernel::FusedPass => "cs_fused_pass",
            Kernel::FusedFinish => "cs_fused_finish",
            Kernel::SelectFixed => "cs_select_fixed",
            Kernel::CutSearch => "cs_cut_search",
            Kernel::HistLevel => "cs_hist_level",
            Kernel::ChunkCount => "cs_chunk_count",
            Kernel::PackLayout => "cs_pack_layout",
            Kernel::PackChunk => "cs_pack_chunk",
            Kernel::Checksum => "cs_checksum",
            Kernel::ApplyEntries => "cs_apply_entries",
            Kernel::ValidatePeers => "cs_validate_peers",
            Kernel::PackGate => "cs_pack_gate",
            Kernel::ZeroIfValid => "cs_zero_if_valid",
            Kernel::VoteWord => "cs_vote_word",
        }
    }

    /// The module defining it.
    pub fn module(self) -> Module {
        match self {
            Kernel::FillU32 | Kernel::FusedPass | Kernel::FusedFinish => Module::Fused,
            Kernel::ApplyEntries | Kernel::ZeroIfValid => Module::Apply,
            Kernel::ValidatePeers => Module::Validate,
            _ => Module::SelectPack,
        }
    }
}

/// One kernel argument, with the exact width of the C parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// A device pointer (`T*`).
    Ptr(u64),
    /// `unsigned`.
    U32(u32),
    /// `unsigned long long`.
    U64(u64),
    /// `float`.
    F32(f32),
}

impl Arg {
    /// The argument's value in the low bytes of a little-endian 64-bit slot:
    /// what the emulation's launcher reads, and what `cuLaunchKernel` reads
    /// as many bytes of as the parameter has.
    pub fn slot(self) -> u64 {
        match self {
            Arg::Ptr(p) | Arg::U64(p) => p,
            Arg::U32(v) => u64::from(v),
            Arg::F32(v) => u64::from(v.to_bits()),
        }
    }
}

/// Most arguments any kernel of `kernels/*.cu` takes (11 today), with room.
pub const MAX_ARGS: usize = 16;

/// `args` as slots ([`Arg::slot`]) in a stack array, so a launch allocates
/// nothing; more than [`MAX_ARGS`] is a driver error of `backend`'s `call`.
pub(crate) fn arg_slots(
    kernel: Kernel,
    args: &[Arg],
    backend: &'static str,
    call: &'static str,
) -> crate::error::Result<[u64; MAX_ARGS]> {
    if args.len() > MAX_ARGS {
        return Err(crate::error::BackendError::Driver {
            backend,
            call,
            message: format!("{} given {} arguments (at most {MAX_ARGS})", kernel.name(), args.len()),
        }
        .into());
    }
    let mut slots = [0u64; MAX_ARGS];
    for (slot, arg) in slots.iter_mut().zip(args) {
        *slot = arg.slot();
    }
    Ok(slots)
}
