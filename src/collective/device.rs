//! Device memory a collective can exchange itself, so a device backend's
//! packed buffers go from the pack kernel to the apply kernels without
//! visiting the host ([`super::Collective::all_gather_device`]).
//!
//! The engine takes that path for a step when the backend's
//! [`crate::Backend::device_memory`] and the collective's
//! [`super::Collective::device_memory`] are the same memory (for CUDA: the
//! same device and the same stream, so the exchange is ordered after the
//! pack kernels and before the validation and apply kernels with no event
//! between them); otherwise it stages through the host: the backend's
//! `select_pack` returns host bytes and `apply` uploads them, the one
//! host-staging path every backend and collective support.
//!
//! An engine of one bucket on such a pair also votes there: the fused pass
//! writes this rank's vote words next to its status
//! ([`crate::Backend::accumulate_and_vote`]), the collective reduces them
//! in place, the pack kernels read the result and pack only when it says
//! sync ([`crate::Backend::pack_after_device_vote`]), the collective
//! gathers every rank's packed length, and one readback brings the status,
//! the vote and the lengths to the host ([`crate::Backend::read_device_vote`]).
//! A step is then that one readback, syncing or not.

/// Where a backend's device memory lives, as far as a collective moving it
/// needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceMemory {
    /// Memory of CUDA device `ordinal`, work ordered on the stream whose
    /// `CUstream` handle is `stream`.
    Cuda {
        /// The device's ordinal.
        ordinal: usize,
        /// The stream's handle (an address, compared, never dereferenced).
        stream: u64,
    },
    /// The CUDA emulation's "device" memory: host memory of this process
    /// (feature `cuda-emu`), which [`super::LocalCollective`] exchanges.
    Emulated,
}

/// `len` bytes of device memory at address `ptr` (a device pointer, or a
/// host address for [`DeviceMemory::Emulated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceBytes {
    /// The first byte's address.
    pub ptr: u64,
    /// Bytes.
    pub len: usize,
}

/// A packed buffer left in device memory by [`crate::Backend::pack_on_device`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedOnDevice {
    /// Where the buffer is, exactly its length.
    pub bytes: DeviceBytes,
    /// Entries it holds (its header's count).
    pub entries: u64,
}

/// This rank's part of a vote reduced in device memory
/// ([`crate::Backend::accumulate_and_vote`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceVote {
    /// The bucket's forced-sync clock ran out this step.
    pub forced: bool,
    /// This rank and the number of ranks (the vote has `1 + world` words).
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// A failure the host found before the fused pass, as a vote word (0:
    /// none; the fused pass is then not run).
    pub code: u32,
    /// The vote word for a non-finite input, written when the fused pass
    /// finds one.
    pub nonfinite_code: u32,
}

/// Where the packed length of a pack after a device vote is, and where the
/// count exchange in device memory writes every rank's
/// ([`crate::Backend::pack_after_device_vote`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLens {
    /// This rank's packed length, one little-endian `u64`.
    pub send: DeviceBytes,
    /// Every rank's, `8 * world` bytes.
    pub recv: DeviceBytes,
}
