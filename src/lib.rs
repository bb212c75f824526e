#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod backend;
pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod sync;
#[cfg(test)]
mod testing;
pub mod wire;

#[cfg(feature = "cuda")]
pub use backend::cuda::CudaBackend;
#[cfg(feature = "cuda-emu")]
pub use backend::cuda::CudaEmuBackend;
#[cfg(feature = "wgpu")]
pub use backend::wgpu::{WgpuBackend, WgpuOptions};
pub use backend::{Backend, CpuBackend, StepStatus};
#[cfg(feature = "mpi")]
pub use collective::MpiCollective;
#[cfg(feature = "nccl")]
pub use collective::nccl::{NcclCollective, NcclId};
pub use collective::{Collective, Gathered, LocalCollective, SharedCollective};
pub use config::{BudgetTarget, Selection, SyncConfig, SyncConfigBuilder, ThresholdBudget, WireDtype};
pub use coordinator::{Coordinator, CoordinatorConfig};
/// The cudarc this crate is built with, so a framework hands
/// [`CudaBackend::on_stream`] a stream of the same version.
#[cfg(feature = "cuda")]
pub use cudarc;
pub use error::{
    BackendError, CheckpointError, CollectiveError, CoordinatorError, Error, FailureCause, RankFailure, Result,
    WireError,
};
pub use sync::{BucketStep, GroupReport, SparseSync, StepReport, SyncGroup};
/// The wgpu this crate is built with, so a framework hands
/// [`WgpuBackend::from_device`] a device and buffers of the same version.
#[cfg(feature = "wgpu")]
pub use wgpu;
