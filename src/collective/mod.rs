//! Collectives: how ranks agree and exchange packed buffers.
//!
//! The trait is deliberately small: the vote (an element-wise max of a few
//! `u32`), a count exchange, and a variable-size all-gather of bytes. Every
//! rank calls the same operations in the same order; each call returns within
//! the collective's timeout, never hanging, with [`crate::Error::Timeout`].
//! Its `missing` list names the ranks that did not arrive where the
//! collective can know them: [`LocalCollective`] always does; NCCL cannot
//! see which peer is late, so its timeouts name none (an empty list), and
//! neither can MPI.
//!
//! Implementations: [`LocalCollective`] (W ranks as threads of one process,
//! the embedded default), behind the `mpi` feature [`MpiCollective`] (ranks
//! are processes of an MPI job, across hosts) and, behind the `nccl`
//! feature, an NCCL collective.
//! [`SharedCollective`] lets several engines use one collective.
//!
//! Device memory: a collective that can exchange a device backend's memory
//! itself reports it ([`Collective::device_memory`]: NCCL on the backend's
//! stream, and [`LocalCollective`] for the CUDA emulation), and the engine
//! then moves the packed buffers from the pack kernel to the apply kernels
//! without the host ([`device`]), and for an engine of one bucket also
//! reduces the vote and gathers the counts there
//! ([`Collective::all_reduce_max_device`],
//! [`Collective::all_gather_u64_device`]); every other pairing, and any
//! collective wrapped in [`HostStaged`], stages the exchange through the
//! host. A wrapper that reports its inner collective's device memory must
//! forward all three device methods.
//!
//! Announced lengths are untrusted: the engines bound every rank's length
//! by the selection rule's worst case before calling
//! [`Collective::all_gather_bytes`], and [`Gathered::reset`] refuses sums
//! that overflow or cannot be reserved, so a lying peer gets a typed error,
//! never an allocation failure.

pub mod device;
pub mod gathered;
pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod shared;
pub mod staged;

pub use device::{DeviceBytes, DeviceLens, DeviceMemory, DeviceVote, PackedOnDevice};
pub use gathered::Gathered;
pub use local::LocalCollective;
#[cfg(feature = "mpi")]
pub use mpi::MpiCollective;
pub use shared::SharedCollective;
pub use staged::HostStaged;

use crate::error::{CollectiveError, Result};
use std::time::Duration;

/// A group of ranks that can vote and exchange bytes.
pub trait Collective: Send {
    /// This rank, in `0..world_size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// The timeout every blocking call of this collective honours.
    fn timeout(&self) -> Duration;

    /// Element-wise maximum of `values` over all ranks, in place. Every rank
    /// passes the same length.
    fn all_reduce_max(&mut self, values: &mut [u32]) -> Result<()>;

    /// Every rank's `value`, in rank order, written into `out` (resized to W).
    fn all_gather_u64(&mut self, value: u64, out: &mut Vec<u64>) -> Result<()>;

    /// Every rank's `send` bytes, concatenated in rank order into `out`.
    /// `lens` holds every rank's send length as agreed by
    /// [`Collective::all_gather_u64`]; `send.len()` must equal `lens[rank]`.
    fn all_gather_bytes(&mut self, send: &[u8], lens: &[u64], out: &mut Gathered) -> Result<()>;

    /// A hint that no rank will send more than `max_bytes_per_rank` bytes in
    /// [`Collective::all_gather_bytes`], so implementations can allocate their
    /// staging once, up front, instead of growing it during steps. Correctness
    /// never depends on it.
    fn reserve_payload(&mut self, max_bytes_per_rank: usize) {
        let _ = max_bytes_per_rank;
    }

    /// The device memory [`Collective::all_gather_device`] can exchange
    /// (`None`, the default: host bytes only). See [`device`].
    fn device_memory(&self) -> Option<DeviceMemory> {
        None
    }

    /// [`Collective::all_gather_bytes`] in device memory: every rank's
    /// `send` bytes, concatenated in rank order from `recv.ptr` on. `lens`
    /// is as there (bounded by the caller); `send.len` must equal
    /// `lens[rank]` and `recv.len` hold their sum, else
    /// [`crate::Error::LengthMismatch`]. Returns within the timeout. The
    /// default is [`CollectiveError::Unsupported`].
    ///
    /// # Safety
    /// `send` and `recv` are live allocations of this collective's
    /// [`Collective::device_memory`] of at least their lengths, `recv` not
    /// overlapping `send`, and nothing else writes them until the call
    /// returns (on a CUDA stream: only work ordered on it).
    unsafe fn all_gather_device(&mut self, send: DeviceBytes, lens: &[u64], recv: DeviceBytes) -> Result<()> {
        let _ = (send, lens, recv);
        Err(CollectiveError::Unsupported { what: "exchanging device memory".into() }.into())
    }

    /// [`Collective::all_reduce_max`] on the `words.len / 4` `u32` words at
    /// `words`, in device memory, in place: the vote of a step whose status
    /// stays on the device. Every rank passes the same length (a multiple
    /// of 4, else [`crate::Error::LengthMismatch`]). Returns within the
    /// timeout. The default is [`CollectiveError::Unsupported`].
    ///
    /// # Safety
    /// `words` is a live allocation of this collective's
    /// [`Collective::device_memory`], 4-byte aligned, that nothing else
    /// touches until the call returns (on a CUDA stream: only work ordered
    /// on it).
    unsafe fn all_reduce_max_device(&mut self, words: DeviceBytes) -> Result<()> {
        let _ = words;
        Err(CollectiveError::Unsupported { what: "reducing device memory".into() }.into())
    }

    /// [`Collective::all_gather_u64`] in device memory: this rank's
    /// little-endian `u64` at `send` (8 bytes), every rank's written to
    /// `recv` (`8 * world` bytes) in rank order; other lengths are
    /// [`crate::Error::LengthMismatch`]. Returns within the timeout. The
    /// default is [`CollectiveError::Unsupported`].
    ///
    /// # Safety
    /// As [`Collective::all_gather_device`]: live, disjoint allocations of
    /// this collective's device memory of at least those lengths, 8-byte
    /// aligned, untouched by anything else until the call returns.
    unsafe fn all_gather_u64_device(&mut self, send: DeviceBytes, recv: DeviceBytes) -> Result<()> {
        let _ = (send, recv);
        Err(CollectiveError::Unsupported { what: "exchanging counts in device memory".into() }.into())
    }
}

/// A borrowed collective is a collective, so an engine can run on one and
/// hand it back (e.g. to gather a job's counters afterwards).
impl<C: Collective + ?Sized> Collective for &mut C {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn world_size(&self) -> usize {
        (**self).world_size()
    }
    fn timeout(&self) -> Duration {
        (**self).timeout()
    }
    fn all_reduce_max(&mut self, values: &mut [u32]) -> Result<()> {
        (**self).all_reduce_max(values)
    }
    fn all_gather_u64(&mut self, value: u64, out: &mut Vec<u64>) -> Result<()> {
        (**self).all_gather_u64(value, out)
    }
    fn all_gather_bytes(&mut self, send: &[u8], lens: &[u64], out: &mut Gathered) -> Result<()> {
        (**self).all_gather_bytes(send, lens, out)
    }
    fn reserve_payload(&mut self, max_bytes_per_rank: usize) {
        (**self).reserve_payload(max_bytes_per_rank);
    }
    fn device_memory(&self) -> Option<DeviceMemory> {
        (**self).device_memory()
    }
    unsafe fn all_gather_device(&mut self, send: DeviceBytes, lens: &[u64], recv: DeviceBytes) -> Result<()> {
        // SAFETY: the caller's contract is the inner call's.
        unsafe { (**self).all_gather_device(send, lens, recv) }
    }
    unsafe fn all_reduce_max_device(&mut self, words: DeviceBytes) -> Result<()> {
        // SAFETY: the caller's contract is the inner call's.
        unsafe { (**self).all_reduce_max_device(words) }
    }
    unsafe fn all_gather_u64_device(&mut self, send: DeviceBytes, recv: DeviceBytes) -> Result<()> {
        // SAFETY: the caller's contract is the inner call's.
        unsafe { (**self).all_gather_u64_device(send, recv) }
    }
}
