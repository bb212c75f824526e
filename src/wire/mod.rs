//! The packed-delta wire format (docs/wire-format.md): one self-describing,
//! checksummed buffer per rank per sync, with chunk-local `u16` indices or
//! bitmaps so that a bf16 entry costs about 4 bytes.
//!
//! [`PackedDelta`] is the owned form and the encoder; [`PackedView`] is the
//! validating, zero-copy decoder that appliers read chunk by chunk
//! ([`ChunkView`]), in parallel if they like. [`ChunkTable`] is the one
//! reader of the header and chunk table, shared by the decoder and every
//! backend's `apply`.

pub mod checksum;
mod decode;
mod encode;
pub mod layout;
pub mod quantize;
mod table;
pub mod verdict;

pub use decode::{ChunkIndex, ChunkView, LocalIndices, PackedView, Validator, decode, validate};
pub use encode::{PackedDelta, encoded_len};
pub use table::{ChunkSpan, ChunkTable, peek_count};
