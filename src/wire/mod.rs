//! The packed-delta wire format (docs/wire-format.md): one self-describing,
//! checksummed buffer per rank per sync, with chunk-local `u16` indices or
//! bitmaps so that a bf16 entry costs about 4 bytes.

pub mod checksum;
mod decode;
mod encode;
pub mod layout;
pub mod quantize;

pub use decode::{PackedView, peek_count, validate};
pub use encode::PackedDelta;
