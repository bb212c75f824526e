//! The two memory hints the CPU passes use, wrapped safely: a software
//! prefetch for the sparse reads of the packer (hardware prefetchers do not
//! follow a 1%-dense access pattern, so each selected value would otherwise
//! cost a full memory latency), and non-temporal stores for the fused pass's
//! output when it is larger than the cache (the store then skips the read
//! for ownership, a quarter of the pass's traffic). Both change only timing,
//! never a value; on other architectures they compile to nothing or to
//! plain stores.

/// Asks the CPU to start loading the cache line holding `xs[i]`; does
/// nothing when `i` is out of bounds.
#[inline(always)]
pub(super) fn prefetch<T>(xs: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(x) = xs.get(i) {
        // SAFETY: `x` is a valid reference; a prefetch never faults or
        // changes memory, and SSE is part of the x86_64 baseline.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((x as *const T).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (xs, i);
}
