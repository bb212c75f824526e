//! The compute pipelines, compiled once per backend from the hand-written
//! WGSL in `shaders/` (each module is `common.wgsl` plus its own file).

use super::context::GpuContext;
use crate::error::Result;

const COMMON: &str = include_str!("../../../shaders/common.wgsl");
const QUANTIZE: &str = include_str!("../../../shaders/quantize.wgsl");

/// How a kernel sees one binding.
#[derive(Clone, Copy)]
pub(super) enum Slot {
    /// The per-dispatch parameter block (uniform, dynamic offset).
    Params,
    /// Read-only storage.
    Read,
    /// Read-write storage.
    Write,
}

/// Bytes of every kernel's parameter block (16 `u32`s).
pub(super) const PARAMS_BYTES: u64 = 64;

/// One pipeline and the layout of its bind group 0 (cloning copies handles,
/// not the pipeline).
#[derive(Clone)]
pub(super) struct Kernel {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// Every kernel the backend dispatches.
pub(super) struct Kernels {
    pub fused: Kernel,
    pub fused_finish: Kernel,
    pub hist_level: Kernel,
    pub cut: Kernel,
    pub threshold_cut: Kernel,
    pub tile_count: Kernel,
    pub scan: Kernel,
    pub pack_write: Kernel,
    pub checksum: Kernel,
    pub scatter: Kernel,
    pub apply_theta: Kernel,
    pub validate: Kernel,
}

use Slot::{Params as P, Read as R, Write as W};

impl Kernels {
    /// Compiles every module; a WGSL or pipeline validation failure is a
    /// [`crate::BackendError::Compile`] naming the module.
    pub fn new(ctx: &GpuContext) -> Result<Kernels> {
        let fused_src = include_str!("../../../shaders/fused.wgsl");
        let pack_src = include_str!("../../../shaders/pack_write.wgsl");
        let scatter_src = include_str!("../../../shaders/scatter.wgsl");
        Ok(Kernels {
            fused: build(ctx, "fused", &[fused_src], &[P, R, R, R, W, W, W])?,
            fused_finish: build(
                ctx,
                "fused_finish",
                &[include_str!("../../../shaders/fused_finish.wgsl")],
                &[P, R, W],
            )?,
            hist_level: build(ctx, "hist_level", &[include_str!("../../../shaders/hist_level.wgsl")], &[P, R, R, W])?,
            cut: build(ctx, "cut", &[include_str!("../../../shaders/cut.wgsl")], &[P, R, W])?,
            threshold_cut: build(
                ctx,
                "threshold_cut",
                &[include_str!("../../../shaders/threshold_cut.wgsl")],
                &[P, R, W],
            )?,
            tile_count: build(ctx, "tile_count", &[include_str!("../../../shaders/tile_count.wgsl")], &[P, R, R, W])?,
            scan: build(ctx, "scan", &[include_str!("../../../shaders/scan.wgsl")], &[P, R, R, W, W, W])?,
            pack_write: build(ctx, "pack_write", &[QUANTIZE, pack_src], &[P, R, R, R, R, W, W])?,
            checksum: build(ctx, "checksum", &[include_str!("../../../shaders/checksum.wgsl")], &[P, R, R, W])?,
            scatter: build(ctx, "scatter", &[QUANTIZE, scatter_src], &[P, R, R, R, W, W])?,
            apply_theta: build(
                ctx,
                "apply_theta",
                &[include_str!("../../../shaders/apply_theta.wgsl")],
                &[P, W, W, W],
            )?,
            validate: build(ctx, "validate", &[include_str!("../../../shaders/validate.wgsl")], &[P, R, R, W])?,
        })
    }
}

fn build(ctx: &GpuContext, name: &'static str, parts: &[&str], slots: &[Slot]) -> Result<Kernel> {
    let mut source = String::from(COMMON);
    for part in parts {
        source.push('\n');
        source.push_str(part);
    }
    let module_name = format!("shaders/{name}.wgsl");
    ctx.scoped(&module_name, 0, true, || {
        let device = &ctx.device;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match slot {
                    Slot::Params => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: true,
                        min_binding_size: wgpu::BufferSize::new(PARAMS_BYTES),
                    },
                    Slot::Read => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: true },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Slot::Write => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: false },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                },
                count: None,
            })
            .collect();
        let layout =
            device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(name), entries: &entries });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(name),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        Ok(Kernel { name, pipeline, layout })
    })
}
