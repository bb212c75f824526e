//! Counted host traffic of a device backend: what crosses between host and
//! device, how often the host blocks on the device, and how many device
//! objects are created. The wgpu backend ([`crate::WgpuBackend::transfer_counts`])
//! and the CUDA backends (`KernelBackend::transfer_counts`, which counts at
//! the [`crate::backend::cuda::KernelRunner`] seam, so the CPU emulation and
//! cudarc are counted by the same code) keep these counters; tests take a
//! snapshot before and after a step and assert the difference against the
//! documented per-step budget.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a backend's counters since it was created; subtract two
/// with [`TransferCounts::since`] to get one operation's or one step's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferCounts {
    /// Host-to-device copies (uploads, queue writes of data or parameters).
    pub h2d_copies: u64,
    /// Bytes in those copies.
    pub h2d_bytes: u64,
    /// Device-to-host copies (mapped readbacks, `memcpy` to the host).
    pub d2h_copies: u64,
    /// Bytes in those copies.
    pub d2h_bytes: u64,
    /// Times the host blocked until the device finished earlier work (a
    /// readback's wait counts once).
    pub waits: u64,
    /// Device buffers (allocations) created.
    pub buffers_created: u64,
    /// Bind groups created (wgpu only; always 0 on CUDA).
    pub bind_groups_created: u64,
}

impl TransferCounts {
    /// The counts accumulated between `earlier` and `self` (field by field,
    /// saturating at 0 so a snapshot from another backend cannot underflow).
    pub fn since(&self, earlier: &TransferCounts) -> TransferCounts {
        TransferCounts {
            h2d_copies: self.h2d_copies.saturating_sub(earlier.h2d_copies),
            h2d_bytes: self.h2d_bytes.saturating_sub(earlier.h2d_bytes),
            d2h_copies: self.d2h_copies.saturating_sub(earlier.d2h_copies),
            d2h_bytes: self.d2h_bytes.saturating_sub(earlier.d2h_bytes),
            waits: self.waits.saturating_sub(earlier.waits),
            buffers_created: self.buffers_created.saturating_sub(earlier.buffers_created),
            bind_groups_created: self.bind_groups_created.saturating_sub(earlier.bind_groups_created),
        }
    }
}

/// The live counters behind [`TransferCounts`]: relaxed atomics, so a
/// backend shared between threads counts every rank's traffic together.
#[derive(Debug, Default)]
pub struct TransferCounter {
    h2d_copies: AtomicU64,
    h2d_bytes: AtomicU64,
    d2h_copies: AtomicU64,
    d2h_bytes: AtomicU64,
    waits: AtomicU64,
    buffers_created: AtomicU64,
    bind_groups_created: AtomicU64,
}

impl TransferCounter {
    /// Counts one host-to-device copy of `bytes`.
    pub fn h2d(&self, bytes: u64) {
        self.h2d_copies.fetch_add(1, Ordering::Relaxed);
        self.h2d_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    /// Counts one device-to-host copy of `bytes`.
    pub fn d2h(&self, bytes: u64) {
        self.d2h_copies.fetch_add(1, Ordering::Relaxed);
        self.d2h_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    /// Counts one blocking wait for the device.
    pub fn wait(&self) {
        self.waits.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts one device buffer creation.
    pub fn buffer(&self) {
        self.buffers_created.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts one bind-group creation.
    pub fn bind_group(&self) {
        self.bind_groups_created.fetch_add(1, Ordering::Relaxed);
    }
    /// The counts so far.
    pub fn snapshot(&self) -> TransferCounts {
        TransferCounts {
            h2d_copies: self.h2d_copies.load(Ordering::Relaxed),
            h2d_bytes: self.h2d_bytes.load(Ordering::Relaxed),
            d2h_copies: self.d2h_copies.load(Ordering::Relaxed),
            d2h_bytes: self.d2h_bytes.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            buffers_created: self.buffers_created.load(Ordering::Relaxed),
            bind_groups_created: self.bind_groups_created.load(Ordering::Relaxed),
        }
    }
}
