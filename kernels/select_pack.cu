// Operation 2 (src/backend/mod.rs `Backend::select_pack`): the radix select of
// docs/selection.md on the committed accumulator, then order-preserving
// compaction straight into the packed wire buffer (docs/wire-format.md) and
// its checksum. Kernels run in this order on one stream:
//   cs_pack_gate -> cs_cut_search(1) -> cs_hist_level(2) -> cs_cut_search(2) -> cs_hist_level(3)
//   -> cs_cut_search(3)   (or cs_select_fixed for Threshold / Dense)
//   -> cs_chunk_count -> cs_pack_layout -> cs_pack_chunk -> cs_checksum
// The selection state `sel` (CS_SEL_* words) carries the decision between
// kernels, so the host never reads anything back until the buffer is done.
// cs_pack_gate runs first and turns the rest of the chain into empty
// launches when there is nothing to pack: the fused pass packs
// speculatively, right after the status, whenever its own significance test
// triggered (a triggered rank always syncs, the vote being a max), and after
// a vote reduced on the device the pack runs when the vote says sync.
#ifndef CS_COMMON_CUH
#include "common.cuh"
#endif

// One thread: whether the chain below packs. Mode 0, the fused pass's
// speculative pack: when the status word `triggered` (status[5], written by
// cs_fused_finish) is set. Mode 1, a pack after the host's vote: always.
// Mode 2, a pack after a vote reduced on the device (cs_vote_word, then the
// collective): when the vote's word for the bucket (vote[0]) is set and no
// rank's failure word (vote[1..=world]) is. CS_SEL_SKIP is cleared to pack.
extern "C" __global__ void cs_pack_gate(const unsigned* __restrict__ status, unsigned mode,
                                        unsigned* __restrict__ sel, const unsigned* __restrict__ vote,
                                        unsigned world) {
    if (threadIdx.x != 0u || blockIdx.x != 0u) return;
    bool pack = mode == 1u || (mode == 0u && status[5] != 0u);
    if (mode == 2u) {
        pack = vote[0] != 0u;
        for (unsigned r = 0u; r < world; ++r)
            if (vote[1u + r] != 0u) pack = false;
    }
    sel[CS_SEL_SKIP] = pack ? 0u : 1u;
}

// One thread: this rank's words of a vote reduced on the device
// (src/sync/vote.rs, one bucket): vote[0] = triggered or forced, vote[1 + r]
// = rank r's failure code, only this rank's set, all others zero (so a max
// over the ranks gathers every rank's code). `host_code` is a failure the
// host found before the fused pass (the status is then not read); else a
// non-finite input gives `nonfinite_code`.
extern "C" __global__ void cs_vote_word(const unsigned* __restrict__ status, unsigned forced, unsigned rank,
                                        unsigned world, unsigned host_code, unsigned nonfinite_code,
                                        unsigned* __restrict__ vote) {
    if (threadIdx.x != 0u || blockIdx.x != 0u) return;
    unsigned code = host_code;
    if (code == 0u && status[4] != 0u) code = nonfinite_code;
    for (unsigned r = 0u; r < world; ++r) vote[1u + r] = 0u;
    vote[0] = (code == 0u && (status[5] != 0u || forced != 0u)) ? 1u : 0u;
    vote[1u + rank] = code;
}

// Threshold and Dense rules: select every key >= cut. With `from_status`
// the cut is the Threshold rule's rel * sqrt(A / n), A read from the status
// (the same f32 operations, correctly rounded, as the host's
// `rel * (A / n).sqrt()`); otherwise it is `cut`.
extern "C" __global__ void cs_select_fixed(unsigned* __restrict__ sel, unsigned cut,
                                           const unsigned* __restrict__ status, float rel, cs_u64 n,
                                           unsigned from_status) {
    if (sel[CS_SEL_SKIP] != 0u) return;
    if (threadIdx.x == 0u && blockIdx.x == 0u) {
        if (from_status != 0u) {
            const float mean_sq = __fdiv_rn(__uint_as_float(status[0]), (float)n);
            cut = __float_as_uint(__fmul_rn(rel, __fsqrt_rn(mean_sq)));
        }
        sel[CS_SEL_DONE] = 1u;
        sel[CS_SEL_MODE] = 0u;
        sel[CS_SEL_CUT] = cut;
        sel[CS_SEL_ABOVE] = 0u;
        sel[CS_SEL_PREFIX] = 0u;
        sel[CS_SEL_QUOTA] = 0u;
        sel[CS_SEL_COUNT] = 0u;
    }
}

// One level of the cut search, one block. Finds the highest bin b at which
// above + sum(hist[b..]) reaches k; stops with `key >= cut` when that count is
// at most kmax, else descends (zeroing next_hist for the next level's
// histogram). After level 3 the prefix is an exact key T and ties are taken
// by index order (mode 1).
extern "C" __global__ void cs_cut_search(const unsigned* __restrict__ hist, unsigned level, unsigned k,
                                         unsigned kmax, unsigned* __restrict__ sel,
                                         unsigned* __restrict__ next_hist) {
    __shared__ unsigned sums[CS_BLOCK];
    __shared__ unsigned found[4];
    if (sel[CS_SEL_SKIP] != 0u) return;
    unsigned above = 0u, prefix = 0u;
    if (level != 1u) {
        if (sel[CS_SEL_DONE] != 0u) return;
        above = sel[CS_SEL_ABOVE];
        prefix = sel[CS_SEL_PREFIX];
    }
    const unsigned bins = level == 3u ? CS_BINS3 : CS_BINS;
    const unsigned shift = level == 1u ? 20u : (level == 2u ? 9u : 0u);
    const unsigned per = bins / CS_BLOCK;
    const unsigned lo = threadIdx.x * per;
    unsigned mine = 0u;
    for (unsigned b = lo; b < lo + per; ++b) mine += hist[b];
    sums[threadIdx.x] = mine;
    if (threadIdx.x == 0u) {
        // Fallback when no bin reaches k (only possible on corrupt counts):
        // take every key matching the prefix.
        found[0] = 0u;
        found[1] = 0xffffffffu;
        found[2] = above;
        found[3] = 0u;
    }
    __syncthreads();
    unsigned higher = 0u;
    for (unsigned t = threadIdx.x + 1u; t < CS_BLOCK; ++t) higher += sums[t];
    const unsigned need = k - above;
    unsigned run = higher;
    for (unsigned b = lo + per; b-- > lo;) {
        const unsigned before = run;
        run += hist[b];
        if (run >= need && before < need) {
            found[0] = b;
            found[1] = above + run;
            found[2] = above + before;
        }
    }
    if (threadIdx.x == 0u) found[3] = run;  // thread 0's run is the level's total
    __syncthreads();
    const unsigned b = found[0];
    unsigned ge = found[1];
    if (ge == 0xffffffffu) ge = above + found[3];
    const unsigned above_next = found[2];
    const unsigned cut = prefix | (b << shift);
    if (ge <= kmax) {
        if (threadIdx.x == 0u) {
            sel[CS_SEL_DONE] = 1u;
            sel[CS_SEL_MODE] = 0u;
            sel[CS_SEL_CUT] = cut;
            sel[CS_SEL_COUNT] = ge;
        }
        return;
    }
    if (level == 3u) {
        if (threadIdx.x == 0u) {
            sel[CS_SEL_DONE] = 1u;
            sel[CS_SEL_MODE] = 1u;
            sel[CS_SEL_CUT] = cut;
            sel[CS_SEL_ABOVE] = above_next;
            sel[CS_SEL_QUOTA] = k - above_next;
            sel[CS_SEL_COUNT] = k;
        }
        return;
    }
    const unsigned next_bins = level == 2u ? CS_BINS3 : CS_BINS;
    for (unsigned i = threadIdx.x; i < next_bins; i += CS_BLOCK) next_hist[i] = 0u;
    if (threadIdx.x == 0u) {
        sel[CS_SEL_DONE] = 0u;
        sel[CS_SEL_ABOVE] = above_next;
        sel[CS_SEL_PREFIX] = cut;
    }
}

// Level-2/3 histogram over keys whose higher digits equal the chosen prefix.
// Skipped (uniformly) once the search is done.
extern "C" __global__ void cs_hist_level(const float* __restrict__ acc, cs_u64 n, unsigned level,
                                         const unsigned* __restrict__ sel, unsigned* __restrict__ hist_out) {
    __shared__ unsigned hist[CS_BINS];
    if (sel[CS_SEL_DONE] != 0u || sel[CS_SEL_SKIP] != 0u) return;
    const unsigned prefix = sel[CS_SEL_PREFIX];
    const unsigned hi = level == 2u ? 20u : 9u;
    const unsigned shift = level == 2u ? 9u : 0u;
    const unsigned mask = level == 2u ? 0x7ffu : 0x1ffu;
    const unsigned bins = level == 2u ? CS_BINS : CS_BINS3;
    const unsigned want = prefix >> hi;
    for (unsigned b = threadIdx.x; b < bins; b += CS_BLOCK) hist[b] = 0u;
    __syncthreads();
    const cs_u64 stride = (cs_u64)gridDim.x * CS_BLOCK;
    const cs_u64 first = (cs_u64)blockIdx.x * CS_BLOCK + threadIdx.x;
    const cs_u64 n4 = n >> 2;
    const float4* a4 = reinterpret_cast<const float4*>(acc);
    for (cs_u64 i = first; i < n4; i += stride) {
        const float4 a = a4[i];
        const unsigned k0 = cs_key(a.x), k1 = cs_key(a.y), k2 = cs_key(a.z), k3 = cs_key(a.w);
        if ((k0 >> hi) == want) atomicAdd(&hist[(k0 >> shift) & mask], 1u);
        if ((k1 >> hi) == want) atomicAdd(&hist[(k1 >> shift) & mask], 1u);
        if ((k2 >> hi) == want) atomicAdd(&hist[(k2 >> shift) & mask], 1u);
        if ((k3 >> hi) == want) atomicAdd(&hist[(k3 >> shift) & mask], 1u);
    }
    const cs_u64 tail = (n4 << 2) + first;
    if (tail < n) {
        const unsigned k0 = cs_key(acc[tail]);
        if ((k0 >> hi) == want) atomicAdd(&hist[(k0 >> shift) & mask], 1u);
    }
    __syncthreads();
    for (unsigned b = threadIdx.x; b < bins; b += CS_BLOCK) {
        const unsigned c = hist[b];
        if (c != 0u) atomicAdd(&hist_out[b], c);
    }
}

__device__ __forceinline__ unsigned cs_chunk_len(cs_u64 n, unsigned c) {
    const cs_u64 rest = n - (cs_u64)c * CS_CHUNK;
    return rest < CS_CHUNK ? (unsigned)rest : CS_CHUNK;
}

// One block per wire chunk: entries strictly selected, and ties (mode 1).
extern "C" __global__ void cs_chunk_count(const float* __restrict__ acc, cs_u64 n,
                                          const unsigned* __restrict__ sel, unsigned* __restrict__ counts) {
    __shared__ cs_u64 lscratch[CS_WARPS];
    if (sel[CS_SEL_SKIP] != 0u) return;
    const unsigned mode = sel[CS_SEL_MODE], cut = sel[CS_SEL_CUT];
    const unsigned len = cs_chunk_len(n, blockIdx.x);
    const float* base = acc + (cs_u64)blockIdx.x * CS_CHUNK;
    const float4* b4 = reinterpret_cast<const float4*>(base);
    unsigned strict = 0u, ties = 0u;
    for (unsigned j = threadIdx.x; j < (len >> 2); j += CS_BLOCK) {
        const float4 a = b4[j];
        const unsigned k0 = cs_key(a.x), k1 = cs_key(a.y), k2 = cs_key(a.z), k3 = cs_key(a.w);
        if (mode == 0u) {
            strict += (k0 >= cut) + (k1 >= cut) + (k2 >= cut) + (k3 >= cut);
        } else {
            strict += (k0 > cut) + (k1 > cut) + (k2 > cut) + (k3 > cut);
            ties += (k0 == cut) + (k1 == cut) + (k2 == cut) + (k3 == cut);
        }
    }
    const unsigned j = (len & ~3u) + threadIdx.x;
    if (j < len) {
        const unsigned k0 = cs_key(base[j]);
        strict += mode == 0u ? (k0 >= cut) : (k0 > cut);
        ties += (mode == 1u && k0 == cut);
    }
    // Both counts in one 64-bit block sum (ties high, strict low).
    const cs_u64 both = cs_block_sum_u64(((cs_u64)ties << 32) | strict, lscratch);
    if (threadIdx.x == 0u) {
        counts[2u * blockIdx.x] = (unsigned)both;
        counts[2u * blockIdx.x + 1u] = (unsigned)(both >> 32);
    }
}

// One block: scans the chunk counts into the chunk table, each chunk's
// descriptor (count, tie quota, index-section offset, first entry, bitmap
// flag, length) and the header; zeroes the checksum field and the last values
// word (padding). info = {total bytes, count, values offset}.
extern "C" __global__ void cs_pack_layout(const unsigned* __restrict__ counts, unsigned nchunks, cs_u64 n,
                                          unsigned dtype, unsigned* __restrict__ sel,
                                          unsigned* __restrict__ desc, unsigned* __restrict__ out,
                                          cs_u64* __restrict__ info) {
    __shared__ unsigned uscan[CS_WARPS + 1];
    __shared__ cs_u64 lscan[CS_WARPS + 1];
    if (sel[CS_SEL_SKIP] != 0u) return;
    const unsigned quota_all = sel[CS_SEL_MODE] == 1u ? sel[CS_SEL_QUOTA] : 0u;
    unsigned ties_carry = 0u, count_carry = 0u;
    cs_u64 bytes_carry = 32ull + 4ull * nchunks;
    for (unsigned base = 0u; base < nchunks; base += CS_BLOCK) {
        const unsigned c = base + threadIdx.x;
        const bool valid = c < nchunks;
        const unsigned strict = valid ? counts[2u * c] : 0u;
        const unsigned ties = valid ? counts[2u * c + 1u] : 0u;
        unsigned total;
        const unsigned ties_before = ties_carry + cs_block_exclusive_scan<unsigned>(ties, uscan, &total);
        ties_carry += total;
        unsigned quota = 0u;
        if (ties_before < quota_all) quota = min(ties, quota_all - ties_before);
        const unsigned cnt = strict + quota;
        const unsigned len = valid ? cs_chunk_len(n, c) : 0u;
        const cs_u64 list_bytes = ((cs_u64)cnt + 1ull) / 2ull * 4ull;
        const cs_u64 bitmap_bytes = ((cs_u64)len + 31ull) / 32ull * 4ull;
        const bool bitmap = list_bytes > bitmap_bytes;
        const cs_u64 idx_bytes = bitmap ? bitmap_bytes : list_bytes;
        const unsigned entry = count_carry + cs_block_exclusive_scan<unsigned>(cnt, uscan, &total);
        count_carry += total;
        cs_u64 ltotal;
        const cs_u64 off = bytes_carry + cs_block_exclusive_scan<cs_u64>(idx_bytes, lscan, &ltotal);
        bytes_carry += ltotal;
        if (valid) {
            unsigned* d = desc + (cs_u64)c * CS_DESC_WORDS;
            d[0] = cnt;
            d[1] = quota;
            d[2] = (unsigned)off;
            d[3] = (unsigned)(off >> 32);
            d[4] = entry;
            d[5] = bitmap ? 1u : 0u;
            d[6] = len;
            d[7] = 0u;
            out[8u + c] = cnt;
        }
    }
    if (threadIdx.x == 0u) {
        const cs_u64 count = count_carry;
        const cs_u64 size = dtype == 0u ? 4ull : 2ull;
        const cs_u64 values_off = bytes_carry;
        const cs_u64 total = values_off + (count * size + 3ull) / 4ull * 4ull;
        out[0] = 0x44505343u;  // "CSPD"
        out[1] = 1u | (dtype << 16);
        out[2] = (unsigned)n;
        out[3] = (unsigned)(n >> 32);
        out[4] = (unsigned)count;
        out[5] = (unsigned)(count >> 32);
        out[6] = 0u;
        out[7] = 0u;
        if (total > values_off) out[total / 4ull - 1ull] = 0u;
        info[0] = total;
        info[1] = count;
        info[2] = values_off;
        sel[CS_SEL_COUNT] = (unsigned)count;
    }
}

#define CS_ITEMS 16
#define CS_TILES (CS_CHUNK / (CS_BLOCK * CS_ITEMS))

// Loads the CS_ITEMS elements a thread owns in a tile (128-bit loads when
// the group lies inside the chunk) and classifies them: strictly selected,
// and ties (mode 1).
__device__ __forceinline__ void cs_classify(const float* base, unsigned j0, unsigned len, unsigned mode,
                                            unsigned cut, float* v, unsigned* strict_mask,
                                            unsigned* tie_mask) {
    if (j0 + CS_ITEMS <= len) {
        const float4* b4 = reinterpret_cast<const float4*>(base + j0);
#pragma unroll
        for (int q = 0; q < CS_ITEMS / 4; ++q) {
            const float4 a = b4[q];
            v[4 * q] = a.x;
            v[4 * q + 1] = a.y;
            v[4 * q + 2] = a.z;
            v[4 * q + 3] = a.w;
        }
    } else {
#pragma unroll
        for (int e = 0; e < CS_ITEMS; ++e) v[e] = (j0 + e < len) ? base[j0 + e] : 0.0f;
    }
    unsigned sm = 0u, tm = 0u;
#pragma unroll
    for (int e = 0; e < CS_ITEMS; ++e) {
        const unsigned key = cs_key(v[e]);
        const bool in = j0 + e < len;
        if (in && (mode == 0u ? key >= cut : key > cut)) sm |= 1u << e;
        if (in && mode == 1u && key == cut) tm |= 1u << e;
    }
    *strict_mask = sm;
    *tie_mask = tm;
}

// One block per chunk: order-preserving compaction. Phase 1 counts, per tile
// of CS_BLOCK * CS_ITEMS elements and per thread, the strictly selected
// entries and the ties (coalesced 128-bit reads); one block scan over those
// counts (in element order) gives every thread its output position and its
// tie rank. Phase 2 re-reads the chunk (L2-resident) and writes the selected
// entries — u16 list entries or bitmap bits, and their quantized values at
// the chunk's entry offset. Ties (mode 1) are kept while their rank in the
// chunk is below `quota`, so ties go to the lower index.
extern "C" __global__ void cs_pack_chunk(const float* __restrict__ acc, const unsigned* __restrict__ sel,
                                         const unsigned* __restrict__ desc, const cs_u64* __restrict__ info,
                                         unsigned dtype, unsigned char* __restrict__ out) {
    __shared__ unsigned strict_at[CS_TILES * CS_BLOCK];
    __shared__ unsigned ties_at[CS_TILES * CS_BLOCK];
    __shared__ cs_u64 lscan[CS_WARPS + 1];
    if (sel[CS_SEL_SKIP] != 0u) return;
    const unsigned* d = desc + (cs_u64)blockIdx.x * CS_DESC_WORDS;
    const unsigned cnt = d[0];
    if (cnt == 0u) return;
    const unsigned quota = d[1];
    const cs_u64 off = (cs_u64)d[2] | ((cs_u64)d[3] << 32);
    const unsigned entry = d[4];
    const bool bitmap = d[5] != 0u;
    const unsigned len = d[6];
    const cs_u64 values_off = info[2];
    const unsigned mode = sel[CS_SEL_MODE], cut = sel[CS_SEL_CUT];
    unsigned* words = reinterpret_cast<unsigned*>(out + off);
    unsigned short* list = reinterpret_cast<unsigned short*>(out + off);
    if (bitmap) {
        for (unsigned w = threadIdx.x; w < (len + 31u) / 32u; w += CS_BLOCK) words[w] = 0u;
    } else if (threadIdx.x == 0u && (cnt & 1u)) {
        list[cnt] = 0u;
    }
    const float* base = acc + (cs_u64)blockIdx.x * CS_CHUNK;
    float v[CS_ITEMS];

    // Phase 1: counts per (tile, thread), slot = tile * CS_BLOCK + thread,
    // which is element order.
    for (unsigned tile = 0u; tile < CS_TILES; ++tile) {
        const unsigned j0 = tile * (CS_BLOCK * CS_ITEMS) + threadIdx.x * CS_ITEMS;
        unsigned sm = 0u, tm = 0u;
        if (j0 < len) cs_classify(base, j0, len, mode, cut, v, &sm, &tm);
        strict_at[tile * CS_BLOCK + threadIdx.x] = __popc(sm);
        ties_at[tile * CS_BLOCK + threadIdx.x] = __popc(tm);
    }
    __syncthreads();
    // One block scan: thread u owns slots [u * CS_TILES, (u + 1) * CS_TILES);
    // both counts travel in one 64-bit value (ties high, strict low).
    const unsigned first = threadIdx.x * CS_TILES;
    cs_u64 mine = 0ull;
    for (unsigned s = first; s < first + CS_TILES; ++s) mine += ((cs_u64)ties_at[s] << 32) | strict_at[s];
    cs_u64 total;
    cs_u64 run = cs_block_exclusive_scan<cs_u64>(mine, lscan, &total);
    for (unsigned s = first; s < first + CS_TILES; ++s) {
        const cs_u64 here = ((cs_u64)ties_at[s] << 32) | strict_at[s];
        strict_at[s] = (unsigned)run;
        ties_at[s] = (unsigned)(run >> 32);
        run += here;
    }
    __syncthreads();

    // Phase 2: write.
    for (unsigned tile = 0u; tile < CS_TILES; ++tile) {
        const unsigned j0 = tile * (CS_BLOCK * CS_ITEMS) + threadIdx.x * CS_ITEMS;
        if (j0 >= len) break;
        unsigned sm, tm;
        cs_classify(base, j0, len, mode, cut, v, &sm, &tm);
        if ((sm | tm) == 0u) continue;
        unsigned tie_rank = ties_at[tile * CS_BLOCK + threadIdx.x];
        // Entries selected before this thread's first element: the strict
        // ones plus the ties among the chunk's first `quota`.
        unsigned pos = strict_at[tile * CS_BLOCK + threadIdx.x] + min(tie_rank, quota);
        unsigned sel_mask = sm;
#pragma unroll
        for (int e = 0; e < CS_ITEMS; ++e) {
            if (tm & (1u << e)) {
                if (tie_rank < quota) sel_mask |= 1u << e;
                ++tie_rank;
            }
        }
        if (bitmap && sel_mask != 0u) atomicOr(&words[j0 >> 5], sel_mask << (j0 & 31u));
#pragma unroll
        for (int e = 0; e < CS_ITEMS; ++e) {
            if (sel_mask & (1u << e)) {
                if (!bitmap) list[pos] = (unsigned short)(j0 + e);
                const unsigned q = cs_quantize(v[e], dtype);
                const cs_u64 at = values_off + (cs_u64)(entry + pos) * (dtype == 0u ? 4ull : 2ull);
                if (dtype == 0u) {
                    *reinterpret_cast<unsigned*>(out + at) = q;
                } else {
                    *reinterpret_cast<unsigned short*>(out + at) = (unsigned short)q;
                }
                ++pos;
            }
        }
    }
}

// The checksum (docs/wire-format.md): a wrapping sum of per-word hashes, so
// blocks add their partial sums into the header field with integer atomics.
extern "C" __global__ void cs_checksum(unsigned* __restrict__ out, const cs_u64* __restrict__ info,
                                       const unsigned* __restrict__ sel) {
    __shared__ unsigned uscratch[CS_WARPS];
    if (sel[CS_SEL_SKIP] != 0u) return;
    const cs_u64 words = info[0] / 4ull;
    const cs_u64 stride = (cs_u64)gridDim.x * CS_BLOCK;
    unsigned sum = 0u;
    for (cs_u64 i = (cs_u64)blockIdx.x * CS_BLOCK + threadIdx.x; i < words; i += stride) {
        if (i != 6ull) sum += cs_word_term((unsigned)i, out[i]);
    }
    sum = cs_block_sum_u32(sum, uscratch);
    if (threadIdx.x == 0u && sum != 0u) atomicAdd(&out[6], sum);
}
