// Shared device helpers for the chronos-sync kernels (fused.cu, select_pack.cu,
// apply.cu). Prepended to each kernel source before NVRTC/nvcc/emulation, so
// the include below is skipped when the text is already present.
#ifndef CS_COMMON_CUH
#define CS_COMMON_CUH

#include <cuda_fp16.h>
#include <cuda_bf16.h>

// Threads per block for every kernel; the host launches exactly this many.
#define CS_BLOCK 256
#define CS_WARPS (CS_BLOCK / 32)
// Level-1/2 histogram bins (11-bit digits) and level-3 bins (9-bit digit).
#define CS_BINS 2048
#define CS_BINS3 512
// Elements per wire chunk (docs/wire-format.md).
#define CS_CHUNK 65536u
// Words of the selection state written by the cut search (see select_pack.cu).
#define CS_SEL_DONE 0
#define CS_SEL_MODE 1
#define CS_SEL_CUT 2
#define CS_SEL_ABOVE 3
#define CS_SEL_PREFIX 4
#define CS_SEL_QUOTA 5
#define CS_SEL_COUNT 6
// 1 when the pack gate (cs_pack_gate) found nothing to pack: every pack
// kernel returns at once, so an untriggered step pays a few empty launches.
#define CS_SEL_SKIP 7
// Words of the per-chunk descriptor (pack and apply).
#define CS_DESC_WORDS 8

typedef unsigned long long cs_u64;

// Words of one rank's verdict from cs_validate_peers (src/wire/verdict.rs);
// the first is 0 when that rank's buffer is valid.
#define CS_VERDICT_WORDS 8

// Whether the `ranks` verdicts at `verdicts` all accept their buffers (true
// for ranks == 0: an exchange the host validated). The apply kernels of an
// exchange validated on the device and not read back yet check it
// themselves, so an invalid buffer changes nothing on any rank.
__device__ __forceinline__ bool cs_verdicts_ok(const unsigned* verdicts, unsigned ranks) {
    for (unsigned r = 0u; r < ranks; ++r)
        if (verdicts[r * CS_VERDICT_WORDS] != 0u) return false;
    return true;
}

// The radix-select key: the bit pattern of |x| (docs/selection.md).
__device__ __forceinline__ unsigned cs_key(float x) { return __float_as_uint(x) & 0x7fffffffu; }

__device__ __forceinline__ unsigned cs_is_nonfinite(float x) {
    return (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u ? 1u : 0u;
}

// MurmurHash3's 32-bit finalizer and the checksum's per-word term
// (src/wire/checksum.rs).
__device__ __forceinline__ unsigned cs_fmix32(unsigned h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}
__device__ __forceinline__ unsigned cs_word_term(unsigned i, unsigned w) {
    return cs_fmix32(w ^ (i * 0x9e3779b9u));
}

// Wire quantization, bit-identical to src/wire/quantize.rs: round to nearest
// even, an infinite result saturates to the largest finite value of that sign.
__device__ __forceinline__ unsigned cs_quantize(float x, unsigned dtype) {
    if (dtype == 0u) return __float_as_uint(x);
    if (dtype == 1u) {
        unsigned b = (unsigned)__half_as_ushort(__float2half_rn(x));
        if ((b & 0x7fffu) == 0x7c00u) b = (b & 0x8000u) | 0x7bffu;
        return b;
    }
    unsigned b = (unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(x));
    if ((b & 0x7fffu) == 0x7f80u) b = (b & 0x8000u) | 0x7f7fu;
    return b;
}
__device__ __forceinline__ float cs_dequantize(unsigned bits, unsigned dtype) {
    if (dtype == 0u) return __uint_as_float(bits);
    if (dtype == 1u) return __half2float(__ushort_as_half((unsigned short)bits));
    return __uint_as_float(bits << 16);
}

// Deterministic warp and block reductions: a fixed shuffle tree inside each
// warp, then warp 0 folds the warp totals in warp order. The result is valid
// in thread 0. `scratch` holds CS_WARPS values in shared memory.
__device__ __forceinline__ float cs_warp_sum_f32(float v) {
    for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_down_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ unsigned cs_warp_sum_u32(unsigned v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}
__device__ float cs_block_sum_f32(float v, float* scratch) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    v = cs_warp_sum_f32(v);
    if (lane == 0u) scratch[warp] = v;
    __syncthreads();
    float r = 0.0f;
    if (warp == 0u) {
        r = lane < CS_WARPS ? scratch[lane] : 0.0f;
        r = cs_warp_sum_f32(r);
    }
    __syncthreads();
    return r;
}
__device__ unsigned cs_block_sum_u32(unsigned v, unsigned* scratch) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    v = cs_warp_sum_u32(v);
    if (lane == 0u) scratch[warp] = v;
    __syncthreads();
    unsigned r = 0u;
    if (warp == 0u) {
        r = lane < CS_WARPS ? scratch[lane] : 0u;
        r = cs_warp_sum_u32(r);
    }
    __syncthreads();
    return r;
}

__device__ __forceinline__ cs_u64 cs_warp_sum_u64(cs_u64 v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}
__device__ cs_u64 cs_block_sum_u64(cs_u64 v, cs_u64* scratch) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    v = cs_warp_sum_u64(v);
    if (lane == 0u) scratch[warp] = v;
    __syncthreads();
    cs_u64 r = 0ull;
    if (warp == 0u) {
        r = lane < CS_WARPS ? scratch[lane] : 0ull;
        r = cs_warp_sum_u64(r);
    }
    __syncthreads();
    return r;
}

// Block-wide exclusive prefix sum of one value per thread (thread order);
// `*total` receives the block total. `scratch` holds CS_WARPS + 1 values.
template <typename T>
__device__ T cs_block_exclusive_scan(T v, T* scratch, T* total) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    T incl = v;
    for (int o = 1; o < 32; o <<= 1) {
        T up = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= (unsigned)o) incl += up;
    }
    if (lane == 31u) scratch[warp] = incl;
    __syncthreads();
    if (threadIdx.x == 0u) {
        T run = 0;
        for (unsigned w = 0; w < CS_WARPS; ++w) {
            T t = scratch[w];
            scratch[w] = run;
            run += t;
        }
        scratch[CS_WARPS] = run;
    }
    __syncthreads();
    T out = scratch[warp] + incl - v;
    *total = scratch[CS_WARPS];
    __syncthreads();
    return out;
}

#endif  // CS_COMMON_CUH
