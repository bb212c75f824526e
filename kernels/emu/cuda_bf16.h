// Emulation of the part of <cuda_bf16.h> the kernels use (feature `cuda-emu`):
// round-to-nearest-even f32 -> bfloat16, NaN kept quiet.
#ifndef CS_EMU_CUDA_BF16_H
#define CS_EMU_CUDA_BF16_H

struct __nv_bfloat16 {
    unsigned short x;
};

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    const unsigned x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(unsigned short)((x >> 16) | 0x40u)};
    const unsigned r = x + 0x7fffu + ((x >> 16) & 1u);
    return __nv_bfloat16{(unsigned short)(r >> 16)};
}

inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }

#endif  // CS_EMU_CUDA_BF16_H
