//! Records one submission: kernel dispatches (each with its own parameter
//! block at a dynamic offset of one shared uniform buffer), buffer clears and
//! copies, in order. Consecutive dispatches share a compute pass; wgpu puts a
//! barrier between dispatches that touch the same storage.

use std::cell::RefCell;

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

enum Step<'a> {
    Dispatch { kernel: &'a Kernel, binds: Vec<Bind<'a>>, slot: usize, grid: (u32, u32) },
    Clear { buffer: &'a wgpu::Buffer, offset: u64, size: u64 },
    Copy { src: &'a wgpu::Buffer, src_offset: u64, dst: &'a wgpu::Buffer, dst_offset: u64, size: u64 },
}

/// The uniform buffer holding parameter blocks, and the bind groups built
/// on it. The buffer grows when a submission needs more slots than any
/// before it (first steps only); bind groups are cached by (kernel, bound
/// ranges), so a step that binds what an earlier step bound creates none.
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
}

/// One cached bind group and what it binds.
struct CachedGroup {
    kernel: &'static str,
    binds: Vec<(wgpu::Buffer, u64, Option<u64>)>,
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
        }
    }

    /// The cached bind group for `kernel` over `binds`, created (and
    /// counted) on a miss.
    fn group(&mut self, ctx: &GpuContext, kernel: &Kernel, binds: &[Bind<'_>]) -> &wgpu::BindGroup {
        let hit = self.groups.iter().position(|g| {
            g.kernel == kernel.name
                && g.binds.len() == binds.len()
                && g.binds.iter().zip(binds).all(|((b, o, s), x)| b == x.buffer && *o == x.offset && *s == x.size)
        });
        let at = match hit {
            Some(at) => at,
            None => {
                if self.groups.len() >= BIND_CACHE_CAP {
                    self.groups.clear();
                }
                let group = bind_group(ctx, kernel, &self.buffer, binds);
                let binds = binds.iter().map(|b| (b.buffer.clone(), b.offset, b.size)).collect();
                self.groups.push(CachedGroup { kernel: kernel.name, binds, group });
                self.groups.len() - 1
            }
        };
        &self.groups[at].group
    }
}

fn usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST
}

fn stride(ctx: &GpuContext) -> u64 {
    u64::from(ctx.limits.min_uniform_buffer_offset_alignment).max(PARAMS_BYTES).next_multiple_of(PARAMS_BYTES)
}

/// Builds one submission.
pub(super) struct Recorder<'a> {
    ctx: &'a GpuContext,
    steps: Vec<Step<'a>>,
    params: Vec<[u32; 16]>,
}

impl<'a> Recorder<'a> {
    /// An empty submission.
    pub fn new(ctx: &'a GpuContext) -> Recorder<'a> {
        Recorder { ctx, steps: Vec::new(), params: Vec::new() }
    }

    /// Dispatches `groups` workgroups of `kernel` (none when `groups` is 0).
    /// `params[0]` and `params[1]` are set here to the grid width and
    /// `groups`; kernels read their own fields from `params[2..]`.
    pub fn dispatch(&mut self, kernel: &'a Kernel, groups: u32, mut params: [u32; 16], binds: &[Bind<'a>]) {
        if groups == 0 {
            return;
        }
        let grid = self.ctx.grid(groups);
        params[0] = grid.0;
        params[1] = groups;
        self.params.push(params);
        self.steps.push(Step::Dispatch { kernel, binds: binds.to_vec(), slot: self.params.len() - 1, grid });
    }

    /// Zeroes `size` bytes at `offset` (both multiples of 4; none when 0).
    pub fn clear(&mut self, buffer: &'a wgpu::Buffer, offset: u64, size: u64) {
        if size > 0 {
            self.steps.push(Step::Clear { buffer, offset, size });
        }
    }

    /// Copies `size` bytes (a multiple of 4; none when 0).
    pub fn copy(&mut self, src: &'a wgpu::Buffer, src_offset: u64, dst: &'a wgpu::Buffer, dst_offset: u64, size: u64) {
        if size > 0 {
            self.steps.push(Step::Copy { src, src_offset, dst, dst_offset, size });
        }
    }

    /// Writes the parameter blocks and submits everything in order.
    pub fn submit(self, ring: &RefCell<ParamRing>) -> Result<()> {
        let ctx = self.ctx;
        let mut ring = ring.borrow_mut();
        let stride = stride(ctx);
        if self.params.len() > ring.slots {
            *ring = ParamRing::new(ctx, self.params.len().next_power_of_two());
        }
        if !self.params.is_empty() {
            let ring = &mut *ring;
            ring.staging.clear();
            ring.staging.resize(stride as usize * self.params.len(), 0);
            for (i, p) in self.params.iter().enumerate() {
                let at = i * stride as usize;
                ring.staging[at..at + PARAMS_BYTES as usize].copy_from_slice(bytemuck::cast_slice(p));
            }
            if !ring.written.starts_with(&ring.staging) {
                ctx.write(&ring.buffer, 0, &ring.staging);
                ring.written.clear();
                ring.written.extend_from_slice(&ring.staging);
            }
        }
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
        let mut i = 0;
        while i < self.steps.len() {
            match &self.steps[i] {
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
                    while let Some(Step::Dispatch { kernel, binds, slot, grid }) = self.steps.get(i) {
                        let group = ring.group(ctx, kernel, binds).clone();
                        pass.set_pipeline(&kernel.pipeline);
                        pass.set_bind_group(0, &group, &[(*slot as u64 * stride) as u32]);
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

fn bind_group(ctx: &GpuContext, kernel: &Kernel, params: &wgpu::Buffer, binds: &[Bind<'_>]) -> wgpu::BindGroup {
    let mut entries = Vec::with_capacity(binds.len() + 1);
    entries.push(wgpu::BindGroupEntry {
        binding: 0,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: params,
            offset: 0,
            size: wgpu::BufferSize::new(PARAMS_BYTES),
        }),
    });
    for (i, b) in binds.iter().enumerate() {
        entries.push(wgpu::BindGroupEntry {
            binding: i as u32 + 1,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: b.buffer,
                offset: b.offset,
                size: b.size.and_then(wgpu::BufferSize::new),
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
