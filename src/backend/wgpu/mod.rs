//! The WGSL backend: the spec's three device operations as hand-written WGSL
//! (`shaders/`) executed through wgpu (Vulkan; lavapipe on machines without
//! a GPU). Feature `wgpu`.
//!
//! - Operation 1 is one fused pass plus a one-workgroup finish; the host reads
//!   back the 32-byte [`StepStatus`] and nothing else.
//! - Operation 2 runs the radix cut search, an order-preserving compaction
//!   (tile counts, a scan, the write) and the checksum on the device, and
//!   `select_pack` returns the packed buffer from host memory. Under the
//!   top-k and dense rules (a fixed entry count) whose packing buffers fit
//!   one storage binding, that is one readback of the rule's largest buffer
//!   (`wire::layout::max_packed_bytes`, rounded up to a word), cut to the
//!   length the header and chunk table give; under the threshold rule two,
//!   the header and chunk table (`32 + 4 * ceil(n / 65536)` bytes), then
//!   exactly the packed buffer.
//! - Validation of the peers' buffers (`shaders/validate.wgsl`) uploads the
//!   gathered bytes of every rank and each rank's (offset, length), checks
//!   every rank on the device (one workgroup per rank, the host validator's
//!   checks in its order) and reads back 32 bytes of verdict per rank. An
//!   exchange larger than one storage binding is validated on the host.
//! - Operation 3 uploads a table of chunk descriptors (16 bytes per chunk
//!   per rank; the bytes are already there), then applies the rank
//!   buffers in rank order with one dispatch per rank (no float atomics),
//!   then error feedback on this rank's entries.
//!
//! So a step reads back the status, and a syncing step additionally reads
//! back the packed bytes, re-uploads everything gathered and reads back the
//! verdicts. Counted per step after warm-up
//! ([`WgpuBackend::transfer_counts`], held by the `wgpu_transfer_budget_*`
//! tests for every rule): a non-syncing step is one 32-byte readback and
//! one wait, with no upload; a syncing step over a host collective is three
//! readbacks (status, the bounded packed buffer, the verdicts), four waits
//! and three uploads (the gathered bytes, the spans, the chunk descriptors)
//! under the top-k and dense rules, and under the threshold rule four
//! readbacks (the header and chunk table before the packed bytes), five
//! waits, and the parameter blocks of passes whose dispatches changed with
//! the packed layout. Pipelines are compiled once per backend
//! and the state's buffers are created once in `create_state`, except the
//! device buffers for the gathered bytes and the chunk descriptors, which
//! `apply` grows (to the next power of two) when an exchange is larger than
//! any before, and the parameter rings, which grow when a submission needs
//! more slots. Each state keeps one parameter ring per kind of submission
//! (accumulate, select, pack, apply, validate) and uploads a ring only when its
//! blocks differ from what it holds; bind groups are cached per (kernel,
//! bound ranges), and a buffer that fits one storage binding is bound whole
//! (kernels get its word offsets as parameters), so the same ranges recur
//! every step and no bind group is created after warm-up. Apply leaves its
//! dense scratch (the per-index sum and the mark bits) zeroed behind it, so
//! it clears neither. The host side allocates nothing per step after
//! warm-up (the recording, the chunk tables and the descriptors live in the
//! state's reused vectors; `tests/alloc.rs` checks it, counting apart the
//! allocations wgpu itself makes inside its encoder, submit, queue-write and
//! map calls). Vectors
//! longer than one storage binding are processed in chunk-aligned segments
//! through binding ranges, and grids wider than the per-dimension limit spill
//! into y. Workgroups have 256 invocations; no subgroup operations are used,
//! so the bytes do not depend on the adapter's subgroup support.

mod apply;
mod buffer;
mod context;
mod fused;
mod kernels;
mod recorder;
mod segments;
mod select_pack;
mod state;
mod validate;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use buffer::WgpuBuffer;
pub use state::WgpuState;

use self::buffer::vector_usage;
use self::context::{BACKEND, GpuContext};
use self::kernels::Kernels;
use crate::backend::{Backend, HostPeerCheck, StepStatus, TransferCounts};
use crate::collective::Gathered;
use crate::config::SyncConfig;
use crate::error::{BackendError, Error, Result};

/// Tuning knobs of [`WgpuBackend::with_options`]; the defaults use the
/// device's own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WgpuOptions {
    /// Largest segment in elements (rounded down to whole 65,536-element
    /// chunks); `None`: as much as one storage binding holds. Smaller values
    /// exercise the multi-segment path that very long vectors take.
    pub max_segment_elems: Option<u64>,
    /// Widest dispatch grid in x; `None`: the device limit (65,535 on most).
    /// Smaller values exercise the 2-D grids that long vectors need.
    pub max_groups_x: Option<u32>,
    /// Bound on every wait for the device.
    pub timeout: Duration,
}

impl Default for WgpuOptions {
    fn default() -> Self {
        WgpuOptions { max_segment_elems: None, max_groups_x: None, timeout: Duration::from_secs(120) }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The WGSL/wgpu backend. Owns one device; every buffer and state it hands
/// out belongs to that device.
pub struct WgpuBackend {
    ctx: GpuContext,
    kernels: Kernels,
    options: WgpuOptions,
    id: u64,
}

impl WgpuBackend {
    /// Opens the first high-performance adapter with default options.
    /// [`BackendError::NoAdapter`] (with an install hint for lavapipe) when
    /// there is none; [`BackendError::Compile`] if a shader fails validation.
    pub fn new() -> Result<WgpuBackend> {
        WgpuBackend::with_options(WgpuOptions::default())
    }

    /// Like [`WgpuBackend::new`], with explicit options.
    pub fn with_options(options: WgpuOptions) -> Result<WgpuBackend> {
        let ctx = GpuContext::new(options.max_groups_x, options.timeout)?;
        let kernels = Kernels::new(&ctx)?;
        Ok(WgpuBackend { ctx, kernels, options, id: NEXT_ID.fetch_add(1, Ordering::Relaxed) })
    }

    /// A backend on the caller's `device` and `queue` (a training
    /// framework's own), so that [`WgpuBackend::wrap_buffer`] can hand the
    /// engine the framework's tensors without a copy. The pipelines are
    /// compiled on that device. The caller keeps its device-lost callback
    /// and uncaptured-error handler (this backend installs neither, so a
    /// lost device surfaces as driver errors of later operations); every
    /// wait of this backend polls the whole device, so it also waits for
    /// the caller's submitted work, still bounded by `options.timeout`.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, options: WgpuOptions) -> Result<WgpuBackend> {
        let ctx = GpuContext::from_device(device, queue, options.max_groups_x, options.timeout);
        let kernels = Kernels::new(&ctx)?;
        Ok(WgpuBackend { ctx, kernels, options, id: NEXT_ID.fetch_add(1, Ordering::Relaxed) })
    }

    /// Wraps the caller's `buffer` as a vector of `len` elements of this
    /// backend, with no copy: steps read and write the caller's memory, and
    /// [`WgpuBuffer::buffer`] / [`WgpuBuffer::into_inner`] give it back.
    ///
    /// The buffer must hold at least `4 * len` bytes (`len >= 1`) and have
    /// `STORAGE`, `COPY_SRC` and `COPY_DST` usage (kernels bind it; upload
    /// and download copy into and out of it); otherwise this is
    /// [`BackendError::Unsupported`] naming what is wrong. Only its first
    /// `4 * len` bytes are used.
    ///
    /// # Safety
    /// `buffer` must have been created on the device this backend runs on
    /// (the one given to [`WgpuBackend::from_device`]). wgpu exposes no
    /// buffer's device, so this cannot be checked here, and wgpu 30 does not
    /// refuse a buffer of another device when it is bound (seen on
    /// lavapipe: a step on one ran and returned `Ok`), so a foreign buffer
    /// would hand the driver a resource of another device.
    pub unsafe fn wrap_buffer(&self, buffer: wgpu::Buffer, len: usize) -> Result<WgpuBuffer> {
        let unsupported = |what: String| -> Error { BackendError::Unsupported { backend: BACKEND, what }.into() };
        let needed = vector_usage();
        if !buffer.usage().contains(needed) {
            return Err(unsupported(format!("a wrapped buffer with usage {:?} (needs {needed:?})", buffer.usage())));
        }
        if len == 0 || buffer.size() < 4 * len as u64 {
            return Err(unsupported(format!(
                "wrapping {len} elements in a buffer of {} bytes (needs 1 ..= size / 4 elements)",
                buffer.size()
            )));
        }
        Ok(WgpuBuffer { buffer, len, owner: self.id })
    }

    /// Host traffic, waits, buffer and bind-group creations of this backend
    /// since it was created, over every state and thread using it. Take one
    /// snapshot before and one after a step and subtract
    /// ([`TransferCounts::since`]); the per-step budgets are in this
    /// module's documentation and held by the `wgpu_transfer_budget` tests.
    pub fn transfer_counts(&self) -> TransferCounts {
        self.ctx.counter.snapshot()
    }

    /// The adapter's name as the driver reports it (e.g. `llvmpipe (...)`).
    pub fn adapter_name(&self) -> &str {
        &self.ctx.info.name
    }

    fn check_buffer(&self, buf: &WgpuBuffer, n: usize, what: &'static str) -> Result<()> {
        if buf.owner != self.id {
            return Err(BackendError::Unsupported {
                backend: BACKEND,
                what: format!("{what} allocated by another WgpuBackend"),
            }
            .into());
        }
        if buf.len != n {
            return Err(Error::LengthMismatch { what, expected: n, actual: buf.len });
        }
        Ok(())
    }

    fn check_state(&self, state: &WgpuState) -> Result<()> {
        if state.owner != self.id {
            return Err(BackendError::Unsupported {
                backend: BACKEND,
                what: "a state created by another WgpuBackend".into(),
            }
            .into());
        }
        Ok(())
    }

    /// Copies `size` bytes of `src` to the host through a temporary staging buffer.
    fn read_back(&self, op: &'static str, src: &wgpu::Buffer, dst: &mut [f32]) -> Result<()> {
        let bytes = 4 * dst.len() as u64;
        self.ctx.scoped(op, bytes, false, || {
            let staging =
                self.ctx.buffer("download", bytes, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
            let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(op) });
            enc.copy_buffer_to_buffer(src, 0, &staging, 0, Some(bytes));
            self.ctx.queue.submit([enc.finish()]);
            self.ctx.read_mapped(op, &staging, bytes, &context::map_slot(), |b| {
                bytemuck::cast_slice_mut::<f32, u8>(dst).copy_from_slice(b)
            })
        })
    }
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuBackend").field("adapter", &self.ctx.info.name).field("options", &self.options).finish()
    }
}

impl Backend for WgpuBackend {
    type Vector = WgpuBuffer;
    type Buffer = WgpuBuffer;
    type State = WgpuState;

    fn name(&self) -> String {
        format!("wgpu ({}, {:?})", self.ctx.info.name, self.ctx.info.backend)
    }

    fn alloc(&self, n: usize) -> Result<WgpuBuffer> {
        let bytes = 4 * n as u64;
        if bytes > self.ctx.limits.max_buffer_size {
            return Err(BackendError::OutOfMemory { backend: BACKEND, bytes }.into());
        }
        self.ctx.scoped("alloc", bytes, false, || {
            // New buffers are zero-initialized by wgpu.
            Ok(WgpuBuffer { buffer: self.ctx.buffer("vector", bytes, vector_usage()), len: n, owner: self.id })
        })
    }

    fn upload(&self, src: &[f32], dst: &mut WgpuBuffer) -> Result<()> {
        self.check_buffer(dst, src.len(), "upload destination")?;
        self.ctx.scoped("upload", 0, false, || {
            if !src.is_empty() {
                self.ctx.write(&dst.buffer, 0, bytemuck::cast_slice(src));
                self.ctx.queue.submit([]);
            }
            Ok(())
        })
    }

    fn download(&self, src: &WgpuBuffer, dst: &mut [f32]) -> Result<()> {
        self.check_buffer(src, dst.len(), "download source")?;
        if dst.is_empty() {
            return Ok(());
        }
        self.read_back("wgpu download", &src.buffer, dst)
    }

    fn buffer_len(&self, buf: &WgpuBuffer) -> usize {
        buf.len
    }

    fn create_state(&self, n: usize, config: &SyncConfig) -> Result<WgpuState> {
        state::create(&self.ctx, self.id, n, config, self.options.max_segment_elems)
    }

    fn read_accumulator(&self, state: &WgpuState, dst: &mut [f32]) -> Result<()> {
        self.check_state(state)?;
        if dst.len() as u64 != state.n {
            return Err(Error::LengthMismatch { what: "accumulator", expected: state.n as usize, actual: dst.len() });
        }
        self.read_back("wgpu read_accumulator", &state.acc[state.committed], dst)
    }

    fn write_accumulator(&self, state: &mut WgpuState, src: &[f32]) -> Result<()> {
        self.check_state(state)?;
        if src.len() as u64 != state.n {
            return Err(Error::LengthMismatch { what: "accumulator", expected: state.n as usize, actual: src.len() });
        }
        self.ctx.scoped("write_accumulator", 0, false, || {
            self.ctx.write(&state.acc[state.committed], 0, bytemuck::cast_slice(src));
            self.ctx.queue.submit([]);
            Ok(())
        })
    }

    fn accumulate(
        &self,
        state: &mut WgpuState,
        delta: &WgpuBuffer,
        theta: &WgpuBuffer,
        tau: f32,
    ) -> Result<StepStatus> {
        self.check_state(state)?;
        self.check_buffer(delta, state.n as usize, "delta")?;
        self.check_buffer(theta, state.n as usize, "theta")?;
        self.ctx.scoped("accumulate", 0, false, || {
            fused::accumulate(&self.ctx, &self.kernels, state, &delta.buffer, &theta.buffer, tau)
        })
    }

    fn commit_accumulate(&self, state: &mut WgpuState) -> Result<()> {
        self.check_state(state)?;
        if state.pending {
            state.committed = 1 - state.committed;
            state.pending = false;
        }
        Ok(())
    }

    fn select_pack<'s>(&self, state: &'s mut WgpuState) -> Result<&'s [u8]> {
        self.check_state(state)?;
        // Run inside the error scopes, then hand out the bytes.
        self.ctx.scoped("select_pack", 0, false, || {
            select_pack::select_pack(&self.ctx, &self.kernels, state).map(|_| ())
        })?;
        Ok(&state.packed_host)
    }

    /// On the device when the exchange fits one storage binding
    /// (`shaders/validate.wgsl`: one workgroup per rank, the host
    /// validator's checks in its order): the gathered bytes and each rank's
    /// (offset, length) are uploaded, and one readback of 32 bytes per rank
    /// brings the verdicts; the next `apply` of the same exchange uploads
    /// no bytes. An exchange larger than one binding, or whose length is
    /// not a multiple of 4 (some buffer in it is invalid), is checked by
    /// `host`.
    fn validate_peers(&self, state: &mut WgpuState, gathered: &Gathered, host: HostPeerCheck<'_>) -> Result<()> {
        self.check_state(state)?;
        self.ctx.scoped("validate_peers", 0, false, || {
            validate::validate_peers(&self.ctx, &self.kernels, state, gathered, host)
        })
    }

    fn apply(
        &self,
        state: &mut WgpuState,
        theta: &mut WgpuBuffer,
        gathered: &Gathered,
        own_rank: usize,
        weight: f32,
    ) -> Result<()> {
        self.check_state(state)?;
        self.check_buffer(theta, state.n as usize, "theta")?;
        self.ctx.scoped("apply", 0, false, || {
            apply::apply(&self.ctx, &self.kernels, state, &theta.buffer, gathered, own_rank, weight)
        })
    }
}
