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

/// [`quantize`] to bf16 for a finite `x`, in plain integer arithmetic that
/// the compiler vectorizes (the CPU packer's inner loop): the same bits as
/// `quantize(x, WireDtype::Bf16)` for every finite `x`. Non-finite inputs
/// are outside the contract (a NaN may come out as a saturated value).
#[inline]
pub fn quantize_bf16_finite(x: f32) -> u16 {
    let bits = x.to_bits();
    // Round to nearest, ties to even: add just under half an ulp, plus one
    // when the lowest kept bit is odd, then truncate.
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    // A carry into an all-ones exponent is a finite value rounded past the
    // largest bf16: saturate, keeping the sign.
    let saturated = if rounded & 0x7fff == 0x7f80 { (rounded & 0x8000) | 0x7f7f } else { rounded };
    saturated as u16
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

#[cfg(test)]
mod tests {
    use super::{quantize, quantize_bf16_finite};
    use crate::config::WireDtype;

    /// Every sign, exponent and kept mantissa (all 2^16 upper halves), with
    /// the dropped halves that decide rounding: zero, just below, at and
    /// just above the tie, and a few others.
    #[test]
    fn bf16_fast_path_matches_quantize_for_every_finite_value() {
        const DROPPED: [u32; 9] = [0, 1, 0x1234, 0x4000, 0x7fff, 0x8000, 0x8001, 0xc000, 0xffff];
        for upper in 0..=0xffffu32 {
            for low in DROPPED {
                let x = f32::from_bits(upper << 16 | low);
                if x.is_finite() {
                    let want = quantize(x, WireDtype::Bf16) as u16;
                    assert_eq!(quantize_bf16_finite(x), want, "x = {x:e} ({:#010x})", x.to_bits());
                }
            }
        }
    }
}
