// Operation 1, the fused pass (src/backend/mod.rs `Backend::accumulate`):
// acc' = acc + delta into the spare accumulator and, in the same read of the
// inputs, sum(acc'^2), sum(theta^2), the non-finite count of delta and theta
// and the level-1 selection histogram of acc' (docs/selection.md). A second,
// single-block kernel folds the per-block partials in a fixed order and
// applies the threshold test, so the status bits never depend on timing.
#ifndef CS_COMMON_CUH
#include "common.cuh"
#endif

// Fills `count` words with `value` (zeroing histograms, the apply workspaces).
extern "C" __global__ void cs_fill_u32(unsigned* dst, cs_u64 count, unsigned value) {
    const cs_u64 stride = (cs_u64)gridDim.x * blockDim.x;
    for (cs_u64 i = (cs_u64)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride) dst[i] = value;
}

// One grid-stride pass: 128-bit loads of acc, delta and theta, 128-bit store
// of acc'. Writes block b's partial sums to acc_sq[b], theta_sq[b],
// nonfinite[b] and adds the block's level-1 histogram to hist1 (zeroed by the
// host beforehand; integer atomics, so the counts are exact).
extern "C" __global__ void cs_fused_pass(const float* __restrict__ acc_in, const float* __restrict__ delta,
                                         const float* __restrict__ theta, float* __restrict__ acc_out,
                                         float* __restrict__ part_acc_sq, float* __restrict__ part_theta_sq,
                                         unsigned* __restrict__ part_nonfinite, unsigned* __restrict__ hist1,
                                         cs_u64 n) {
    __shared__ unsigned hist[CS_BINS];
    __shared__ float fscratch[CS_WARPS];
    __shared__ unsigned uscratch[CS_WARPS];
    for (unsigned b = threadIdx.x; b < CS_BINS; b += CS_BLOCK) hist[b] = 0u;
    __syncthreads();

    float a_sq = 0.0f, t_sq = 0.0f;
    unsigned bad = 0u;
    const cs_u64 stride = (cs_u64)gridDim.x * CS_BLOCK;
    const cs_u64 first = (cs_u64)blockIdx.x * CS_BLOCK + threadIdx.x;
    const cs_u64 n4 = n >> 2;
    const float4* a4 = reinterpret_cast<const float4*>(acc_in);
    const float4* d4 = reinterpret_cast<const float4*>(delta);
    const float4* t4 = reinterpret_cast<const float4*>(theta);
    float4* o4 = reinterpret_cast<float4*>(acc_out);
    for (cs_u64 i = first; i < n4; i += stride) {
        const float4 a = a4[i], d = d4[i], t = t4[i];
        float4 s;
        s.x = __fadd_rn(a.x, d.x);
        s.y = __fadd_rn(a.y, d.y);
        s.z = __fadd_rn(a.z, d.z);
        s.w = __fadd_rn(a.w, d.w);
        o4[i] = s;
        a_sq = __fmaf_rn(s.x, s.x, a_sq);
        a_sq = __fmaf_rn(s.y, s.y, a_sq);
        a_sq = __fmaf_rn(s.z, s.z, a_sq);
        a_sq = __fmaf_rn(s.w, s.w, a_sq);
        t_sq = __fmaf_rn(t.x, t.x, t_sq);
        t_sq = __fmaf_rn(t.y, t.y, t_sq);
        t_sq = __fmaf_rn(t.z, t.z, t_sq);
        t_sq = __fmaf_rn(t.w, t.w, t_sq);
        bad += cs_is_nonfinite(s.x) + cs_is_nonfinite(s.y) + cs_is_nonfinite(s.z) + cs_is_nonfinite(s.w);
        bad += cs_is_nonfinite(t.x) + cs_is_nonfinite(t.y) + cs_is_nonfinite(t.z) + cs_is_nonfinite(t.w);
        atomicAdd(&hist[cs_key(s.x) >> 20], 1u);
        atomicAdd(&hist[cs_key(s.y) >> 20], 1u);
        atomicAdd(&hist[cs_key(s.z) >> 20], 1u);
        atomicAdd(&hist[cs_key(s.w) >> 20], 1u);
    }
    // Scalar tail: the last n % 4 elements, one per thread of the grid.
    const cs_u64 tail = (n4 << 2) + first;
    if (tail < n) {
        const float d = delta[tail], t = theta[tail];
        const float s = __fadd_rn(acc_in[tail], d);
        acc_out[tail] = s;
        a_sq = __fmaf_rn(s, s, a_sq);
        t_sq = __fmaf_rn(t, t, t_sq);
        bad += cs_is_nonfinite(s) + cs_is_nonfinite(t);
        atomicAdd(&hist[cs_key(s) >> 20], 1u);
    }

    a_sq = cs_block_sum_f32(a_sq, fscratch);
    t_sq = cs_block_sum_f32(t_sq, fscratch);
    bad = cs_block_sum_u32(bad, uscratch);
    if (threadIdx.x == 0u) {
        part_acc_sq[blockIdx.x] = a_sq;
        part_theta_sq[blockIdx.x] = t_sq;
        part_nonfinite[blockIdx.x] = bad;
    }
    // The block sums above end with a barrier, so the shared histogram is complete.
    for (unsigned b = threadIdx.x; b < CS_BINS; b += CS_BLOCK) {
        const unsigned c = hist[b];
        if (c != 0u) atomicAdd(&hist1[b], c);
    }
}

// Single block: folds `blocks` partials (thread t takes t, t+256, ... in
// order, then the fixed block tree) and writes the 8-word StepStatus
// (src/backend/status.rs, same formula as `StepStatus::from_sums`).
extern "C" __global__ void cs_fused_finish(const float* __restrict__ part_acc_sq,
                                           const float* __restrict__ part_theta_sq,
                                           const unsigned* __restrict__ part_nonfinite, unsigned blocks,
                                           float tau, unsigned* __restrict__ status) {
    __shared__ float fscratch[CS_WARPS];
    __shared__ unsigned uscratch[CS_WARPS];
    float a = 0.0f, t = 0.0f;
    unsigned bad = 0u;
    for (unsigned b = threadIdx.x; b < blocks; b += CS_BLOCK) {
        a = __fadd_rn(a, part_acc_sq[b]);
        t = __fadd_rn(t, part_theta_sq[b]);
        bad += part_nonfinite[b];
    }
    a = cs_block_sum_f32(a, fscratch);
    t = cs_block_sum_f32(t, fscratch);
    bad = cs_block_sum_u32(bad, uscratch);
    if (threadIdx.x == 0u) {
        const float sa = __fsqrt_rn(a);
        const float st = __fsqrt_rn(t);
        // Rust's f32::max ignores a NaN operand; fmaxf does the same.
        const float s = __fdiv_rn(sa, fmaxf(st, 1e-8f));
        status[0] = __float_as_uint(a);
        status[1] = __float_as_uint(t);
        status[2] = __float_as_uint(s);
        status[3] = __float_as_uint(tau);
        status[4] = bad;
        status[5] = (bad == 0u && s > tau) ? 1u : 0u;
        status[6] = 0u;
        status[7] = 0u;
    }
}
