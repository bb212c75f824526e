//! Records one submission: kernel dispatches (each with its own parameter
//! block at a dynamic offset of one shared uniform buffer), buffer clears and
//! copies, in order. Consecutive dispatches share a compute pass; wgpu puts a
//! barrier between dispatches that touch the same storage.
//!
//! What a submission records lives in its [`ParamRing`]'s vectors, which
//! keep their capacity from step to step, and holds clones of the bound
//! buffers and pipelines (reference counts, not copies), so recording and
//! submitting a step allocates nothing on the host after warm-up beyond
//! what wgpu itself does for an encoder and a submission (tests/alloc.rs).

use std::cell::{RefCell, RefMut};

use super::context::GpuContext;
use super::kernels::{Kernel, PARAMS_BYTES};
use crate::error::Result;

/// A buffer range bound to one kernel slot.
#[derive(Clone, Copy)]
pub(super) struct Bind<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    /// `None`: to the end of the buffer.
    pub size: Option<u64>,
}

impl<'a> Bind<'a> {
    /// The whole buffer.
    pub fn all(buffer: &'a wgpu::Buffer) -> Bind<'a> {
        Bind { buffer, offset: 0, size: None }
    }
    /// `size` bytes from `offset`.
    pub fn range(buffer: &'a wgpu::Buffer, offset: u64, size: u64) -> Bind<'a> {
        Bind { buffer, offset, size: Some(size) }
    }
}

/// A bound range as a recorded step keeps it (the buffer's handle cloned).
type Bound = (wgpu::Buffer, u64, Option<u64>);

/// One recorded step. A dispatch's bindings are `bound[binds.0 .. binds.1]`
/// of its ring.
enum Step {
    Dispatch { kernel: Kernel, binds: (usize, usize), slot: usize, grid: (u32, u32) },
    Clear { buffer: wgpu::Buffer, offset: u64, size: u64 },
    Copy { src: wgpu::Buffer, src_offset: u64, dst: wgpu::Buffer, dst_offset: u64, size: u64 },
}

/// The uniform buffer holding parameter blocks, the bind groups built on
/// it, and the recording of the submission in progress. The buffer grows
/// when a submission needs more slots than any before it (first steps
/// only); bind groups are cached by (kernel, bound ranges), so a step that
/// binds what an earlier step bound creates none.
pub(super) struct ParamRing {
    buffer: wgpu::Buffer,
    slots: usize,
    /// The parameter blocks of one submission, staged on the host (reused).
    staging: Vec<u8>,
    /// What the ring buffer holds from offset 0 (the last upload), so an
    /// identical submission uploads nothing.
    written: Vec<u8>,
    /// Cached bind groups, most recent last; emptied when it reaches
    /// [`BIND_CACHE_CAP`] or when the ring buffer is replaced. Entries hold
    /// clones of the bound buffers (keeping their identity unique while
    /// cached).
    groups: Vec<CachedGroup>,
    /// The recording: steps, their bindings and parameter blocks (emptied
    /// when a recording starts; capacity kept).
    steps: Vec<Step>,
    bound: Vec<Bound>,
    params: Vec<[u32; 16]>,
}

/// One cached bind group and what it binds.
struct CachedGroup {
    kernel: &'static str,
    binds: Vec<Bound>,
    group: wgpu::BindGroup,
}

/// Most bind groups one state caches: a step binds a few dozen distinct
/// ranges; more than this means the bound buffers or ranges change from
/// step to step (callers alternating parameter buffers, multi-segment
/// windows), and the cache starts over rather than growing.
pub(super) const BIND_CACHE_CAP: usize = 256;

impl ParamRing {
    /// A ring with room for `slots` parameter blocks.
    pub fn new(ctx: &GpuContext, slots: usize) -> ParamRing {
        let slots = slots.max(1);
        ParamRing {
            buffer: ctx.buffer("params", stride(ctx) * slots as u64, usage()),
            slots,
            staging: Vec::with_capacity(stride(ctx) as usize * slots),
            written: Vec::with_capacity(stride(ctx) as usize * slots),
            groups: Vec::with_capacity(BIND_CACHE_CAP),
            steps: Vec::with_capacity(slots + 8),
            bound: Vec::with_capacity(8 * slots),
            params: Vec::with_capacity(slots),
        }
    }

    /// Replaces the ring buffer by one with room for `slots` blocks; the
    /// bind groups on the old one are dropped, the recording is kept.
    fn grow(&mut self, ctx: &GpuContext, slots: usize) {
        self.buffer = ctx.buffer("params", stride(ctx) * slots as u64, usage());
        self.slots = slots;
        self.groups.clear();
        self.written.clear();
    }
}

/// The cached bind group for `kernel` over `binds` in `groups`, created
/// (and counted) on a miss.
fn cached_group<'g>(
    ctx: &GpuContext,
    groups: &'g mut Vec<CachedGroup>,
    params: &wgpu::Buffer,
    kernel: &Kernel,
    binds: &[Bound],
) -> &'g wgpu::BindGroup {
    let hit = groups.iter().position(|g| {
        g.kernel == kernel.name
            && g.binds.len() == binds.len()
            && g.binds.iter().zip(binds).all(|((b, o, s), (x, xo, xs))| b == x && o == xo && s == xs)
    });
    let at = match hit {
        Some(at) => at,
        None => {
            if groups.len() >= BIND_CACHE_CAP {
                groups.clear();
            }
            let group = bind_group(ctx, kernel, params, binds);
            groups.push(CachedGroup { kernel: kernel.name, binds: binds.to_vec(), group });
            groups.len() - 1
        }
    };
    &groups[at].group
}

fn usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST
}

fn stride(ctx: &GpuContext) -> u64 {
    u64::from(ctx.limits.min_uniform_buffer_offset_alignment).max(PARAMS_BYTES).next_multiple_of(PARAMS_BYTES)
}

/// Builds one submission into its ring's recording.
pub(super) struct Recorder<'r> {
    ctx: &'r GpuContext,
    ring: RefMut<'r, ParamRing>,
}

impl<'r> Recorder<'r> {
    /// An empty submission recorded into `ring` (one submission per ring at
    /// a time: the ring stays borrowed until `submit`).
    pub fn new(ctx: &'r GpuContext, ring: &'r RefCell<ParamRing>) -> Recorder<'r> {
        let mut ring = ring.borrow_mut();
        ring.steps.clear();
        ring.bound.clear();
        ring.params.clear();
        Recorder { ctx, ring }
    }

    /// Dispatches `groups` workgroups of `kernel` (none when `groups` is 0).
    /// `params[0]` and `params[1]` are set here to the grid width and
    /// `groups`; kernels read their own fields from `params[2..]`.
    pub fn dispatch(&mut self, kernel: &Kernel, groups: u32, mut params: [u32; 16], binds: &[Bind<'_>]) {
        if groups == 0 {
            return;
        }
        let grid = self.ctx.grid(groups);
        params[0] = grid.0;
        params[1] = groups;
        let ring = &mut *self.ring;
        ring.params.push(params);
        let first = ring.bound.len();
        ring.bound.extend(binds.iter().map(|b| (b.buffer.clone(), b.offset, b.size)));
        let binds = (first, ring.bound.len());
        ring.steps.push(Step::Dispatch { kernel: kernel.clone(), binds, slot: ring.params.len() - 1, grid });
    }

    /// Zeroes `size` bytes at `offset` (both multiples of 4; none when 0).
    pub fn clear(&mut self, buffer: &wgpu::Buffer, offset: u64, size: u64) {
        if size > 0 {
            self.ring.steps.push(Step::Clear { buffer: buffer.clone(), offset, size });
        }
    }

    /// Copies `size` bytes (a multiple of 4; none when 0).
    pub fn copy(&mut self, src: &wgpu::Buffer, src_offset: u64, dst: &wgpu::Buffer, dst_offset: u64, size: u64) {
        if size > 0 {
            self.ring.steps.push(Step::Copy { src: src.clone(), src_offset, dst: dst.clone(), dst_offset, size });
        }
    }

    /// Writes the parameter blocks (when they differ from the ring's) and
    /// submits everything in order.
    pub fn submit(mut self) -> Result<()> {
        let ctx = self.ctx;
        let stride = stride(ctx);
        let ring = &mut *self.ring;
        if ring.params.len() > ring.slots {
            ring.grow(ctx, ring.params.len().next_power_of_two());
        }
        if !ring.params.is_empty() {
            ring.staging.clear();
            ring.staging.resize(stride as usize * ring.params.len(), 0);
            for (i, p) in ring.params.iter().enumerate() {
                let at = i * stride as usize;
                ring.staging[at..at + PARAMS_BYTES as usize].copy_from_slice(bytemuck::cast_slice(p));
            }
            if !ring.written.starts_with(&ring.staging) {
                ctx.write(&ring.buffer, 0, &ring.staging);
                ring.written.clear();
                ring.written.extend_from_slice(&ring.staging);
            }
        }
        let ParamRing { buffer: params, groups, steps, bound, .. } = ring;
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
        let mut i = 0;
        while i < steps.len() {
            match &steps[i] {
                Step::Clear { buffer, offset, size } => {
                    encoder.clear_buffer(buffer, *offset, Some(*size));
                    i += 1;
                }
                Step::Copy { src, src_offset, dst, dst_offset, size } => {
                    encoder.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, Some(*size));
                    i += 1;
                }
                Step::Dispatch { .. } => {
                    let mut pass = encoder
                        .begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
                    while let Some(Step::Dispatch { kernel, binds, slot, grid }) = steps.get(i) {
                        let group = cached_group(ctx, groups, params, kernel, &bound[binds.0..binds.1]);
                        pass.set_pipeline(&kernel.pipeline);
                        pass.set_bind_group(0, group, &[(*slot as u64 * stride) as u32]);
                        pass.dispatch_workgroups(grid.0, grid.1, 1);
                        i += 1;
                    }
                }
            }
        }
        ctx.queue.submit([encoder.finish()]);
        Ok(())
    }
}

fn bind_group(ctx: &GpuContext, kernel: &Kernel, params: &wgpu::Buffer, binds: &[Bound]) -> wgpu::BindGroup {
    let mut entries = Vec::with_capacity(binds.len() + 1);
    entries.push(wgpu::BindGroupEntry {
        binding: 0,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: params,
            offset: 0,
            size: wgpu::BufferSize::new(PARAMS_BYTES),
        }),
    });
    for (i, (buffer, offset, size)) in binds.iter().enumerate() {
        entries.push(wgpu::BindGroupEntry {
            binding: i as u32 + 1,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer,
                offset: *offset,
                size: size.and_then(wgpu::BufferSize::new),
            }),
        });
    }
    ctx.counter.bind_group();
    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(kernel.name),
        layout: &kernel.layout,
        entries: &entries,
    })
}
