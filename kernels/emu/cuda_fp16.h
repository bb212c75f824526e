// Emulation of the part of <cuda_fp16.h> the kernels use (feature `cuda-emu`):
// round-to-nearest-even f32 -> binary16 conversion in integer arithmetic.
#ifndef CS_EMU_CUDA_FP16_H
#define CS_EMU_CUDA_FP16_H

struct __half {
    unsigned short x;
};

inline __half __float2half_rn(float f) {
    const unsigned x = __float_as_uint(f);
    const unsigned sign = (x >> 16) & 0x8000u;
    const unsigned ax = x & 0x7fffffffu;
    unsigned short r;
    if (ax >= 0x7f800000u) {
        // Infinity, or a quiet NaN keeping the top payload bits.
        r = (unsigned short)(sign | 0x7c00u | (ax > 0x7f800000u ? (0x200u | ((ax >> 13) & 0x3ffu)) : 0u));
        return __half{r};
    }
    const unsigned e = ax >> 23;
    if (e >= 143u) return __half{(unsigned short)(sign | 0x7c00u)};
    if (e >= 113u) {
        // Normal result: rebias the exponent, round the 13 dropped bits
        // (a carry may roll over into the exponent, up to infinity).
        const unsigned mant = ax & 0x7fffffu;
        unsigned q = ((e - 112u) << 10) | (mant >> 13);
        const unsigned rem = mant & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;
        return __half{(unsigned short)(sign | q)};
    }
    // Subnormal or zero result: value = m * 2^(e-150), unit 2^-24.
    const unsigned m = e == 0u ? (ax & 0x7fffffu) : ((ax & 0x7fffffu) | 0x800000u);
    const unsigned s = (e == 0u ? 1u : e) > 126u ? 0u : 126u - (e == 0u ? 1u : e);
    if (s > 24u) return __half{(unsigned short)sign};
    unsigned q = m >> s;
    const unsigned rem = m & ((1u << s) - 1u);
    const unsigned halfway = 1u << (s - 1u);
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
    return __half{(unsigned short)(sign | q)};
}

inline unsigned short __half_as_ushort(__half h) { return h.x; }
inline __half __ushort_as_half(unsigned short b) { return __half{b}; }

inline float __half2float(__half h) {
    const unsigned sign = ((unsigned)h.x & 0x8000u) << 16;
    const unsigned e = ((unsigned)h.x >> 10) & 0x1fu;
    const unsigned m = (unsigned)h.x & 0x3ffu;
    if (e == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (m << 13));
    if (e == 0u) {
        // Subnormal: exactly m * 2^-24 (representable in f32).
        const float v = (float)m * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

#endif  // CS_EMU_CUDA_FP16_H
