// f32 -> f16/bf16 bits with integer operations only, bit-identical to
// src/wire/quantize.rs: round to nearest, ties to even (as the `half`
// crate), and magnitudes that would round to infinity saturate to the
// largest finite value with the input's sign. Inputs are finite.

fn f32_to_f16_bits(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    let sign = (bits >> 16u) & 0x8000u;
    let a = bits & 0x7FFFFFFFu;
    // 65520 and above round to infinity: saturate to 65504.
    if (a >= 0x477FF000u) {
        return sign | 0x7BFFu;
    }
    // Normal f16 range (>= 2^-14): rebias the exponent, round off 13 bits.
    if (a >= 0x38800000u) {
        let h = (a - 0x38000000u) >> 13u;
        let rem = a & 0x1FFFu;
        let up = u32(rem > 0x1000u || (rem == 0x1000u && (h & 1u) == 1u));
        return sign | (h + up);
    }
    // Below half the smallest subnormal (2^-25, inclusive: ties to even 0).
    let e = a >> 23u;
    if (e < 102u) {
        return sign;
    }
    // Subnormal: the significand with its implicit bit, shifted to units of 2^-24.
    let m = (a & 0x7FFFFFu) | 0x800000u;
    let shift = 126u - e;
    let h = m >> shift;
    let rem = m & ((1u << shift) - 1u);
    let half_unit = 1u << (shift - 1u);
    let up = u32(rem > half_unit || (rem == half_unit && (h & 1u) == 1u));
    return sign | (h + up);
}

fn f32_to_bf16_bits(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    let sign = (bits >> 16u) & 0x8000u;
    let a = bits & 0x7FFFFFFFu;
    if (a >= 0x7F7F8000u) {
        return sign | 0x7F7Fu;
    }
    let h = bits >> 16u;
    let rem = bits & 0xFFFFu;
    let up = u32(rem > 0x8000u || (rem == 0x8000u && (h & 1u) == 1u));
    return h + up;
}

fn quantize16(x: f32, dtype_code: u32) -> u32 {
    if (dtype_code == 1u) {
        return f32_to_f16_bits(x);
    }
    return f32_to_bf16_bits(x);
}

// Exact widening of wire bits back to f32 (every f16/bf16 value is an f32).
fn dequantize16(h: u32, dtype_code: u32) -> f32 {
    if (dtype_code == 2u) {
        return bitcast<f32>(h << 16u);
    }
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1Fu;
    let m = h & 0x3FFu;
    if (e == 0u) {
        // Subnormal or zero: m * 2^-24, exact in f32.
        return bitcast<f32>(sign | bitcast<u32>(f32(m) * 5.9604644775390625e-8));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}
