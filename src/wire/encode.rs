//! PLACEHOLDER — helper "wire" replaces this file.
use crate::config::WireDtype;

/// An owned sparse delta: strictly increasing indices and their f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedDelta {
    /// Dense length.
    pub n: u64,
    /// Wire dtype.
    pub dtype: WireDtype,
    /// Strictly increasing indices.
    pub indices: Vec<u64>,
    /// Values (already representable in `dtype`).
    pub values: Vec<f32>,
}
