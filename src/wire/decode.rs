//! PLACEHOLDER — helper "wire" replaces this file.
use crate::config::WireDtype;
use crate::error::WireError;

/// A validated, zero-copy view of a packed buffer.
#[derive(Debug, Clone, Copy)]
pub struct PackedView<'a> {
    bytes: &'a [u8],
}

/// Validates `bytes` fully and checks it is for `n` elements of `dtype`.
pub fn validate(bytes: &[u8], n: u64, dtype: WireDtype) -> Result<(), WireError> {
    let _ = (bytes, n, dtype);
    todo!()
}

/// Reads the entry count from a header (no full validation).
pub fn peek_count(bytes: &[u8]) -> Result<u64, WireError> {
    let _ = bytes;
    todo!()
}

impl<'a> PackedView<'a> {
    /// The bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}
