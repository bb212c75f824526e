//! Conversion of accumulator values to the wire dtype. Every backend must
//! reproduce these bits exactly: round to nearest, ties to even (as `half`
//! does), with magnitudes beyond the dtype's finite range saturated to its
//! largest finite value so that error feedback keeps the remainder.

use crate::config::WireDtype;
use half::{bf16, f16};

/// Encodes a finite `x` to the wire bits of `dtype` (low bits of the `u32`).
#[inline]
pub fn quantize(x: f32, dtype: WireDtype) -> u32 {
    match dtype {
        WireDtype::F32 => x.to_bits(),
        WireDtype::F16 => {
            let h = f16::from_f32(x);
            let h = if h.is_infinite() { if x < 0.0 { f16::MIN } else { f16::MAX } } else { h };
            h.to_bits() as u32
        }
        WireDtype::Bf16 => {
            let h = bf16::from_f32(x);
            let h = if h.is_infinite() { if x < 0.0 { bf16::MIN } else { bf16::MAX } } else { h };
            h.to_bits() as u32
        }
    }
}

/// Decodes wire bits of `dtype` back to `f32` (exact: every wire value is an f32).
#[inline]
pub fn dequantize(bits: u32, dtype: WireDtype) -> f32 {
    match dtype {
        WireDtype::F32 => f32::from_bits(bits),
        WireDtype::F16 => f16::from_bits(bits as u16).to_f32(),
        WireDtype::Bf16 => bf16::from_bits(bits as u16).to_f32(),
    }
}

/// `dequantize(quantize(x))`: the value a receiver will see for `x`.
#[inline]
pub fn round_trip(x: f32, dtype: WireDtype) -> f32 {
    dequantize(quantize(x, dtype), dtype)
}
