//! Splitting a vector into segments that each fit one storage binding.
//!
//! A segment is a whole number of wire chunks (65,536 elements), so its byte
//! offset satisfies any storage-offset alignment and no chunk straddles two
//! segments. Kernels see a segment through binding ranges and index it from
//! zero; large segments spill into a 2-D dispatch grid.

use crate::wire::layout::CHUNK_ELEMS;

/// The segments of one vector length.
#[derive(Debug, Clone)]
pub(super) struct Segments {
    /// `(first element, elements)` of each segment, in order.
    pub list: Vec<(u64, u64)>,
    /// Elements per full segment (a multiple of [`CHUNK_ELEMS`]).
    pub elems: u64,
}

impl Segments {
    /// Segments of at most `elems` elements (rounded down to whole chunks,
    /// at least one chunk) covering `0..n`.
    pub fn new(n: u64, elems: u64) -> Segments {
        let chunk = CHUNK_ELEMS as u64;
        let elems = (elems / chunk).max(1) * chunk;
        let mut list = Vec::new();
        let mut base = 0;
        while base < n {
            let len = elems.min(n - base);
            list.push((base, len));
            base += len;
        }
        Segments { list, elems }
    }
}

/// Largest segment, in elements, that the device's binding limits allow:
/// a segment's f32 data plus one alignment's slack must fit one binding.
pub(super) fn max_segment_elems(limits: &wgpu::Limits) -> u64 {
    let bind = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
    let slack = u64::from(limits.min_storage_buffer_offset_alignment.max(4));
    bind.saturating_sub(slack) / 4
}
