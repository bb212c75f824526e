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
