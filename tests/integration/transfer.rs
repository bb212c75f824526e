//! Counted, not claimed: the host traffic of one step on the device
//! backends, read from their transfer counters
//! ([`chronos_sync::backend::TransferCounts`]) around single steps of a
//! one-rank [`SparseSync`] after a warm-up, for every selection rule, on
//! syncing and non-syncing steps. Each test prints the per-step figures
//! (`--show-output`) and asserts the budget its backend documents.
//!
//! The test names start with the backend's name so that `scripts/test-all`'s
//! `-- wgpu` and `-- cuda` sections pick them up.

use chronos_sync::backend::TransferCounts;
use chronos_sync::collective::{Collective, HostStaged};
use chronos_sync::wire::layout;
use chronos_sync::{Backend, LocalCollective, Selection, SparseSync, StepReport, SyncConfig, WireDtype};
use std::sync::Arc;
use std::time::Duration;

/// Two wire chunks and a partial third: multi-chunk headers and layouts.
const N: usize = 140_000;
const WARMUP: usize = 4;
const MEASURED: usize = 4;

/// Every rule, by name, with error feedback on (`true`) and off. With it
/// off the accumulator is zeroed at every sync, so every step packs one
/// step's update and the packed sizes stay steady; with it on the threshold
/// rule alternates between large and near-empty buffers, so only the top-k
/// rules (fixed counts) run with it on.
pub fn rules() -> [(&'static str, Selection, bool); 6] {
    [
        ("topk", Selection::TopK { ratio: 0.01 }, true),
        ("topk", Selection::TopK { ratio: 0.01 }, false),
        ("topk-approx", Selection::TopKApprox { ratio: 0.01, slack: 0.25 }, true),
        ("topk-approx", Selection::TopKApprox { ratio: 0.01, slack: 0.25 }, false),
        ("threshold", Selection::Threshold { rel: 1.0 }, false),
        ("dense", Selection::Dense, false),
    ]
}

/// One measured step: its counts, its report, and whether its exchange was
/// larger than every earlier one of the run (the one case in which a
/// backend may grow its staging for the gathered bytes).
pub struct Measured {
    pub counts: TransferCounts,
    pub report: StepReport,
    pub grew: bool,
}

/// How a measured engine exchanges its packed buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// Over `LocalCollective` as it is: in device memory where the backend's
    /// is the emulation's.
    AsOffered,
    /// Over `HostStaged<LocalCollective>`: always through the host.
    HostStaged,
}

/// Runs `WARMUP + MEASURED` steps of a one-rank engine on `backend` (every
/// step syncing, or none) and returns each measured step. The update is
/// uploaded before the first snapshot, so a step's counts are the engine's
/// own traffic only.
pub fn measure<B: Backend>(
    backend: &Arc<B>,
    counts: fn(&B) -> TransferCounts,
    selection: Selection,
    error_feedback: bool,
    syncing: bool,
) -> Vec<Measured> {
    measure_over(backend, counts, selection, error_feedback, syncing, Exchange::HostStaged)
}

/// [`measure`] with the exchange path chosen.
pub fn measure_over<B: Backend>(
    backend: &Arc<B>,
    counts: fn(&B) -> TransferCounts,
    selection: Selection,
    error_feedback: bool,
    syncing: bool,
    exchange: Exchange,
) -> Vec<Measured> {
    let collective = LocalCollective::group(1, Duration::from_secs(60)).expect("group").remove(0);
    match exchange {
        Exchange::AsOffered => run(backend, counts, selection, error_feedback, syncing, collective),
        Exchange::HostStaged => run(backend, counts, selection, error_feedback, syncing, HostStaged::new(collective)),
    }
}

fn run<B: Backend, C: Collective>(
    backend: &Arc<B>,
    counts: fn(&B) -> TransferCounts,
    selection: Selection,
    error_feedback: bool,
    syncing: bool,
    collective: C,
) -> Vec<Measured> {
    let config = SyncConfig::builder()
        .error_feedback(error_feedback)
        .adaptive(false)
        .threshold(if syncing { 0.0 } else { 1e30 })
        .max_accumulation_steps(1 << 40)
        .selection(selection)
        .wire_dtype(WireDtype::Bf16)
        .build()
        .expect("valid config");
    let mut theta = backend.alloc(N).expect("alloc");
    backend.upload(&vec![0.5; N], std::borrow::BorrowMut::borrow_mut(&mut theta)).expect("upload");
    let mut delta = backend.alloc(N).expect("alloc");
    let mut sync = SparseSync::new(Arc::clone(backend), collective, N, config).expect("engine");
    let mut update = vec![0.0f32; N];
    let mut out = Vec::with_capacity(MEASURED);
    let mut largest = 0u64;
    for step in 0..WARMUP + MEASURED {
        for (j, u) in update.iter_mut().enumerate() {
            *u = 1e-3 * (((j * 7 + step * 13) % 17) as f32 - 8.0);
        }
        backend.upload(&update, std::borrow::BorrowMut::borrow_mut(&mut delta)).expect("upload");
        let before = counts(backend);
        let report = sync
            .step(std::borrow::Borrow::borrow(&delta), std::borrow::BorrowMut::borrow_mut(&mut theta))
            .expect("step");
        let spent = counts(backend).since(&before);
        assert_eq!(report.synced, syncing, "step {step}: synced");
        let gathered = report.bytes_sent + report.bytes_received;
        let grew = gathered > largest;
        largest = largest.max(gathered);
        if step >= WARMUP {
            out.push(Measured { counts: spent, report, grew });
        }
    }
    out
}

/// Prints one line of figures.
pub fn print(backend: &str, rule: &str, error_feedback: bool, syncing: bool, c: &TransferCounts) {
    println!(
        "{backend} {rule:>11} {} {:>11}: h2d {} copies / {} B, d2h {} copies / {} B, waits {}, buffers {}, bind groups {}",
        if error_feedback { "ef on " } else { "ef off" },
        if syncing { "syncing" } else { "non-syncing" },
        c.h2d_copies,
        c.h2d_bytes,
        c.d2h_copies,
        c.d2h_bytes,
        c.waits,
        c.buffers_created,
        c.bind_groups_created
    );
}

/// Whether a device backend reads `rule`'s packed buffer back in one copy
/// of the rule's largest buffer (the top-k rules, a fixed entry count, and
/// dense, every entry) rather than after a readback of its layout or length
/// (threshold: anything from empty to dense).
pub fn read_bounded(rule: Selection) -> bool {
    matches!(rule, Selection::TopK { .. } | Selection::TopKApprox { .. } | Selection::Dense)
}

/// Bytes of the header and chunk table of a packed buffer of `N` elements.
pub fn head_bytes() -> u64 {
    layout::index_base(N as u64)
}

/// Wire chunks of `N` elements.
pub fn chunks() -> u64 {
    layout::num_chunks(N as u64)
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use super::*;
    use chronos_sync::WgpuBackend;

    fn backend() -> Option<Arc<WgpuBackend>> {
        crate::wgpu::make_wgpu().map(Arc::new)
    }

    /// After warm-up a non-syncing step is one 32-byte status readback
    /// (one wait) and nothing else: no upload (the parameter blocks are
    /// unchanged), no buffer, no bind group.
    #[test]
    fn wgpu_transfer_budget_non_syncing_step() {
        let Some(b) = backend() else { return };
        for (name, rule, ef) in rules() {
            for Measured { counts: c, .. } in measure(&b, WgpuBackend::transfer_counts, rule, ef, false) {
                print("wgpu", name, ef, false, &c);
                let budget = TransferCounts { d2h_copies: 1, d2h_bytes: 32, waits: 1, ..TransferCounts::default() };
                assert_eq!(c, budget, "{name}");
            }
        }
    }

    /// After warm-up a syncing step over a host collective reads back the
    /// status, the packed bytes and the peers' verdicts of the device
    /// validation (32 bytes per rank): under the top-k and dense rules the
    /// packed bytes come in one readback of the rule's largest buffer
    /// (rounded up to a word), under the threshold rule after a readback of
    /// the header and chunk table that lays them out. So three readbacks
    /// and four waits (the readbacks and the end of apply) under the top-k
    /// and dense rules, four and five under the threshold rule. It uploads the gathered bytes, each rank's
    /// (offset, length) (8 bytes) and the chunk descriptors and, when the
    /// packed layout changed (threshold only: the bounded pack's
    /// parameters do not depend on it), the parameter blocks of the passes
    /// whose dispatches changed (at most two more uploads, a few KiB). It
    /// creates no buffer and no bind group unless its exchange is larger
    /// than any before (then the gathered staging grows, once, and the
    /// bind groups on it are rebuilt).
    #[test]
    fn wgpu_transfer_budget_syncing_step() {
        let Some(b) = backend() else { return };
        for (name, rule, ef) in rules() {
            for Measured { counts: c, report, grew } in measure(&b, WgpuBackend::transfer_counts, rule, ef, true) {
                print("wgpu", name, ef, true, &c);
                let bounded = read_bounded(rule);
                let (readbacks, packed) = if bounded {
                    let bound = layout::max_packed_bytes(N as u64, WireDtype::Bf16, rule.max_entries(N) as u64);
                    assert!(bound >= report.bytes_sent, "{name}: the bound {bound} holds the buffer");
                    (3, bound.next_multiple_of(4))
                } else {
                    (4, head_bytes() + report.bytes_sent)
                };
                assert_eq!(c.d2h_copies, readbacks, "{name}: readbacks");
                assert_eq!(c.d2h_bytes, 32 + packed + 32, "{name}: readback bytes");
                assert_eq!(c.waits, readbacks + 1, "{name}: waits");
                if !grew {
                    assert_eq!(c.buffers_created, 0, "{name}: buffers created");
                    assert_eq!(c.bind_groups_created, 0, "{name}: bind groups created");
                }
                assert!(c.buffers_created <= 1, "{name}: {} buffers created", c.buffers_created);
                // One rank: the gathered bytes are this rank's own packed buffer.
                let data = report.bytes_sent + report.bytes_received + 8 + 16 * chunks();
                let uploads = if bounded { 3..=3 } else { 3..=5 };
                assert!(uploads.contains(&c.h2d_copies), "{name}: {} uploads", c.h2d_copies);
                assert!(
                    c.h2d_bytes >= data && c.h2d_bytes <= data + 16384,
                    "{name}: {} bytes uploaded for {data} bytes of gathered data and descriptors",
                    c.h2d_bytes
                );
            }
        }
    }
}

#[cfg(feature = "cuda-emu")]
mod cuda_emu {
    use super::*;
    use chronos_sync::CudaEmuBackend;

    fn backend() -> Arc<CudaEmuBackend> {
        Arc::new(CudaEmuBackend::new())
    }

    /// The control block read back once per step: the 32-byte status and
    /// the 24-byte info of the fused pass's speculative pack, padded.
    const CONTROL: u64 = 64;

    /// A non-syncing step reads back the control block (one wait) and
    /// nothing else: its pack kernels found the test untriggered and did
    /// nothing.
    #[test]
    fn cuda_emu_transfer_budget_non_syncing_step() {
        let b = backend();
        for (name, rule, ef) in rules() {
            for Measured { counts: c, .. } in measure(&b, CudaEmuBackend::transfer_counts, rule, ef, false) {
                print("cuda-emu", name, ef, false, &c);
                let budget =
                    TransferCounts { d2h_copies: 1, d2h_bytes: CONTROL, waits: 1, ..TransferCounts::default() };
                assert_eq!(c, budget, "{name}");
            }
        }
    }

    /// With the collective in device memory (`LocalCollective` moves the
    /// emulation's), the vote and the count exchange run there too, and a
    /// step reads back one block, on every rule: the control block with the
    /// status, the pack info, the reduced vote (1 + W words), every rank's
    /// packed length (8 bytes per rank) and, after a sync, that sync's
    /// verdicts (32 bytes per rank), which its apply kernels checked on the
    /// device. One rank: 80 bytes, 112 after a sync. One readback, one
    /// wait; the only upload is each rank's (offset, length), 16 bytes, on
    /// a syncing step; a non-syncing step uploads nothing. No packed byte
    /// crosses to the host or back.
    #[test]
    fn cuda_emu_transfer_budget_device_exchange() {
        const VOTED: u64 = CONTROL + 8 + 8;
        let b = backend();
        for (name, rule, ef) in rules() {
            for Measured { counts: c, grew, .. } in
                measure_over(&b, CudaEmuBackend::transfer_counts, rule, ef, true, Exchange::AsOffered)
            {
                print("cuda-emu (device exchange)", name, ef, true, &c);
                assert_eq!((c.d2h_copies, c.d2h_bytes, c.waits), (1, VOTED + 32, 1), "{name}: readbacks");
                assert_eq!((c.h2d_copies, c.h2d_bytes), (1, 16), "{name}: uploads");
                assert!(c.buffers_created <= u64::from(grew), "{name}: {} buffers created", c.buffers_created);
            }
            for Measured { counts: c, .. } in
                measure_over(&b, CudaEmuBackend::transfer_counts, rule, ef, false, Exchange::AsOffered)
            {
                print("cuda-emu (device exchange)", name, ef, false, &c);
                let budget = TransferCounts { d2h_copies: 1, d2h_bytes: VOTED, waits: 1, ..TransferCounts::default() };
                assert_eq!(c, budget, "{name}: non-syncing");
            }
        }
    }

    /// A syncing step staged through the host (`HostStaged`) reads back the
    /// control block and the packed bytes: under the top-k and dense rules
    /// in one copy of the rule's largest buffer, under the threshold rule
    /// exactly, its length known from the control block; then the peers'
    /// verdicts from the device validation (32 bytes per rank). So three
    /// readbacks and three waits on every rule. It uploads the gathered bytes and
    /// each rank's (offset, length), 16 bytes (the chunk descriptors are
    /// written on the device), and allocates nothing unless its exchange is
    /// larger than any before (then the gathered staging grows, once).
    #[test]
    fn cuda_emu_transfer_budget_syncing_step() {
        let b = backend();
        for (name, rule, ef) in rules() {
            for Measured { counts: c, report, grew } in measure(&b, CudaEmuBackend::transfer_counts, rule, ef, true) {
                print("cuda-emu", name, ef, true, &c);
                let bounded = read_bounded(rule);
                let packed = if bounded {
                    let bound = layout::max_packed_bytes(N as u64, WireDtype::Bf16, rule.max_entries(N) as u64);
                    assert!(bound >= report.bytes_sent, "{name}: the bound {bound} holds the buffer");
                    bound
                } else {
                    report.bytes_sent
                };
                assert_eq!(c.d2h_copies, 3, "{name}: readbacks");
                assert_eq!(c.d2h_bytes, CONTROL + packed + 32, "{name}: readback bytes");
                assert_eq!(c.waits, 3, "{name}: waits");
                assert!(c.buffers_created <= u64::from(grew), "{name}: {} buffers created", c.buffers_created);
                assert_eq!(c.h2d_copies, 2, "{name}: uploads");
                assert_eq!(c.h2d_bytes, report.bytes_sent + report.bytes_received + 16, "{name}: upload bytes");
            }
        }
    }
}
