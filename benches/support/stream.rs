//! A STREAM-like bandwidth probe run in the same process as the kernels:
//! `copy` (`a = b`) and `triad` (`a = b + s * c`) over buffers several times
//! larger than the last-level cache, split into the same kind of rayon loop
//! over fixed blocks, on the same (global) pool, as the CPU backend's passes.
//!
//! Traffic model (STREAM's convention, which every kernel's model here
//! follows too: compulsory bytes only, no write-allocate reads):
//! copy = 8 B/element (read `b`, write `a`), triad = 12 B/element
//! (read `b` and `c`, write `a`). The plain triad's stores also read each
//! line of `a` first (16 B/element really move); `triad_nt` avoids that.

use chronos_sync::backend::cpu::last_level_cache_bytes;
use rayon::prelude::*;

/// Elements per rayon task, as in the backend's passes.
const BLOCK: usize = 1 << 16;
/// Compulsory bytes per element of `copy`.
pub const COPY_BYTES_PER_ELEM: u64 = 8;
/// Compulsory bytes per element of `triad`.
pub const TRIAD_BYTES_PER_ELEM: u64 = 12;

/// The three STREAM arrays.
pub struct Stream {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl Stream {
    /// Arrays of at least 4x the LLC each (and at least 2^24 elements), so
    /// no pass is served from cache. Pages are touched here, not in the timing.
    pub fn new() -> Stream {
        let elems = ((4 * last_level_cache_bytes()) / 4).next_power_of_two().max(1 << 24);
        // Non-zero fills: `vec![0.0; n]` maps lazily zeroed pages, which the
        // first timed pass would fault in.
        Stream { a: vec![0.5; elems], b: vec![1.0; elems], c: vec![2.0; elems] }
    }

    /// Elements per array.
    pub fn len(&self) -> usize {
        self.a.len()
    }

    /// Compulsory bytes of one `copy`.
    pub fn copy_bytes(&self) -> u64 {
        self.len() as u64 * COPY_BYTES_PER_ELEM
    }

    /// Compulsory bytes of one `triad`.
    pub fn triad_bytes(&self) -> u64 {
        self.len() as u64 * TRIAD_BYTES_PER_ELEM
    }

    /// `a = b`.
    pub fn copy(&mut self) {
        self.a.par_chunks_mut(BLOCK).zip(self.b.par_chunks(BLOCK)).for_each(|(a, b)| a.copy_from_slice(b));
    }

    /// `a = b + s * c` (separate multiply and add, as STREAM specifies).
    pub fn triad(&mut self) {
        let s = std::hint::black_box(3.0f32);
        self.a.par_chunks_mut(BLOCK).zip(self.b.par_chunks(BLOCK)).zip(self.c.par_chunks(BLOCK)).for_each(
            |((a, b), c)| {
                for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                    *a = *b + s * *c;
                }
            },
        );
    }

    /// The triad with non-temporal stores of `a` where the CPU has them
    /// (x86_64 and `a` 16-byte aligned; otherwise the plain triad): the
    /// store skips the read for ownership, so this is the most this machine
    /// moves for the triad's compulsory traffic, and the fairer reference
    /// for kernels that stream their output the same way.
    pub fn triad_nt(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if self.a.as_ptr() as usize % 16 == 0 {
            let s = std::hint::black_box(3.0f32);
            self.a.par_chunks_mut(BLOCK).zip(self.b.par_chunks(BLOCK)).zip(self.c.par_chunks(BLOCK)).for_each(
                |((a, b), c)| {
                    use std::arch::x86_64::{_mm_loadu_ps, _mm_sfence, _mm_stream_ps};
                    for ((a, b), c) in a.chunks_exact_mut(4).zip(b.chunks_exact(4)).zip(c.chunks_exact(4)) {
                        let v: [f32; 4] = std::array::from_fn(|j| b[j] + s * c[j]);
                        // SAFETY: `v` and `a` have 4 elements, `a` is 16-byte
                        // aligned (the array is, and BLOCK and 4 are multiples of
                        // 4 elements); SSE is part of the x86_64 baseline.
                        unsafe { _mm_stream_ps(a.as_mut_ptr(), _mm_loadu_ps(v.as_ptr())) };
                    }
                    // SAFETY: SSE is part of the x86_64 baseline.
                    unsafe { _mm_sfence() };
                },
            );
            return;
        }
        self.triad();
    }
}
