// Operation 3 (src/backend/mod.rs `Backend::apply`): walks the entries of one
// rank's packed buffer (already bounds-checked by the host, which passes one
// descriptor per chunk: count, bitmap flag, absolute index-section and values
// offsets, chunk length). One kernel, three modes, launched rank by rank on
// one stream, so every sum is formed in rank order without float atomics:
//   mode 0 (gather): sum[i] += v_r,i in f32, mark[i] = 1
//   mode 1 (finish): for marked i, theta[i] += weight * sum[i] (one f32
//                    multiply, one f32 add, never fused); sum and mark reset
//   mode 2 (feedback, own rank only): acc[i] -= v_own,i
// Every launch first checks the exchange's device verdicts (cs_verdicts_ok;
// `gate_ranks` 0 when the host validated it) and does nothing unless every
// rank's buffer was accepted.
#ifndef CS_COMMON_CUH
#include "common.cuh"
#endif

__device__ __forceinline__ void cs_visit(unsigned mode, cs_u64 i, float v, float* sum, unsigned* mark,
                                         float* theta, float* acc, float weight) {
    if (mode == 0u) {
        sum[i] = __fadd_rn(sum[i], v);
        mark[i] = 1u;
    } else if (mode == 1u) {
        if (mark[i] != 0u) {
            theta[i] = __fadd_rn(theta[i], __fmul_rn(weight, sum[i]));
            sum[i] = 0.0f;
            mark[i] = 0u;
        }
    } else {
        acc[i] = __fsub_rn(acc[i], v);
    }
}

__device__ __forceinline__ float cs_load_value(const unsigned char* g, cs_u64 at, unsigned dtype) {
    if (dtype == 0u) return __uint_as_float(*reinterpret_cast<const unsigned*>(g + at));
    return cs_dequantize(*reinterpret_cast<const unsigned short*>(g + at), dtype);
}

extern "C" __global__ void cs_apply_entries(const unsigned char* __restrict__ g, const unsigned* __restrict__ desc,
                                            unsigned dtype, unsigned mode, float* sum, unsigned* mark,
                                            float* theta, float* acc, float weight,
                                            const unsigned* __restrict__ verdicts, unsigned gate_ranks) {
    __shared__ unsigned uscan[CS_WARPS + 1];
    if (!cs_verdicts_ok(verdicts, gate_ranks)) return;
    const unsigned* d = desc + (cs_u64)blockIdx.x * CS_DESC_WORDS;
    const unsigned cnt = d[0];
    if (cnt == 0u) return;
    const bool bitmap = d[1] != 0u;
    const cs_u64 idx_off = (cs_u64)d[2] | ((cs_u64)d[3] << 32);
    const cs_u64 val_off = (cs_u64)d[4] | ((cs_u64)d[5] << 32);
    const unsigned len = d[6];
    const cs_u64 base = (cs_u64)blockIdx.x * CS_CHUNK;
    const cs_u64 vsize = dtype == 0u ? 4ull : 2ull;
    if (!bitmap) {
        const unsigned short* list = reinterpret_cast<const unsigned short*>(g + idx_off);
        for (unsigned j = threadIdx.x; j < cnt; j += CS_BLOCK) {
            const unsigned local = list[j];
            if (local >= len) continue;
            const float v = mode == 1u ? 0.0f : cs_load_value(g, val_off + (cs_u64)j * vsize, dtype);
            cs_visit(mode, base + local, v, sum, mark, theta, acc, weight);
        }
        return;
    }
    const unsigned* words = reinterpret_cast<const unsigned*>(g + idx_off);
    const unsigned nwords = (len + 31u) / 32u;
    unsigned carry = 0u;
    for (unsigned w0 = 0u; w0 < nwords; w0 += CS_BLOCK) {
        const unsigned w = w0 + threadIdx.x;
        unsigned bits = w < nwords ? words[w] : 0u;
        // Bits at or past the chunk's end are ignored (the decoder rejects them).
        if (w == nwords - 1u && (len & 31u) != 0u) bits &= (1u << (len & 31u)) - 1u;
        unsigned total;
        unsigned r = carry + cs_block_exclusive_scan<unsigned>(__popc(bits), uscan, &total);
        carry += total;
        while (bits != 0u && r < cnt) {
            const unsigned b = (unsigned)(__ffs(bits) - 1);
            bits &= bits - 1u;
            const float v = mode == 1u ? 0.0f : cs_load_value(g, val_off + (cs_u64)r * vsize, dtype);
            cs_visit(mode, base + (cs_u64)w * 32u + b, v, sum, mark, theta, acc, weight);
            ++r;
        }
    }
}

// Error feedback off: the whole accumulator is zeroed after a sync, under
// the same verdict gate as the apply launches.
extern "C" __global__ void cs_zero_if_valid(float* __restrict__ acc, cs_u64 n,
                                            const unsigned* __restrict__ verdicts, unsigned gate_ranks) {
    if (!cs_verdicts_ok(verdicts, gate_ranks)) return;
    const cs_u64 stride = (cs_u64)gridDim.x * blockDim.x;
    for (cs_u64 i = (cs_u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) acc[i] = 0.0f;
}
