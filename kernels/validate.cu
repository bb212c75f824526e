// Validation of the gathered peer buffers on the device (issue 15 item 2):
// the checks of src/wire/table.rs and src/wire/decode.rs, in their order, so
// that a rank's first error here is the host validator's first error.
//
// One block per rank (blockIdx.x = r) walks rank r's buffer, which starts at
// byte spans[2r] of `g` and is spans[2r + 1] bytes long, phase by phase:
//   1. header: length >= 32, magic, version, dtype code, reserved bytes 7 and
//      28..32, then the chunk table inside the buffer;
//   2. chunk table: the first chunk claiming more entries than elements,
//      then the entry count against the header, then the exact length;
//   3. index sections, chunk by chunk: a list's first misordered or
//      out-of-range entry (in position order), then its pad; a bitmap's stray
//      tail bits, then its population count;
//   4. values: the first non-finite one, then the pad after them;
//   5. the checksum; 6. `n` and the dtype against the backend's.
// The first failure ends the walk. Its verdict (8 words, read by
// src/wire/verdict.rs: code, then three u64 fields as lo/hi pairs) goes to
// verdicts[8r..8r+8]; code 0 means valid. While walking a buffer of the
// expected `n` and dtype, the block also writes the apply kernel's chunk
// descriptors for rank r (desc + r * chunks(n) * CS_DESC_WORDS), so no
// descriptor is built or uploaded by the host.
//
// Every branch a barrier depends on reads shared memory after a barrier, so
// the whole block takes it. Loads are byte-wise: an invalid buffer before
// rank r's can have any length, so rank r's first byte has no alignment.
#ifndef CS_COMMON_CUH
#include "common.cuh"
#endif

// Verdict codes (src/wire/verdict.rs).
#define CS_V_TRUNCATED 1u
#define CS_V_OVERSIZED 2u
#define CS_V_MAGIC 3u
#define CS_V_VERSION 4u
#define CS_V_DTYPE 5u
#define CS_V_RESERVED 6u
#define CS_V_OVERFULL 7u
#define CS_V_COUNT 8u
#define CS_V_MISORDERED 9u
#define CS_V_RANGE 10u
#define CS_V_BITMAP 11u
#define CS_V_NONFINITE 12u
#define CS_V_CHECKSUM 13u
#define CS_V_MISMATCH 14u
#define CS_V_NONE 0xffffffffffffffffull

__device__ __forceinline__ unsigned cs_ld16(const unsigned char* b, cs_u64 at) {
    return (unsigned)b[at] | ((unsigned)b[at + 1] << 8);
}
__device__ __forceinline__ unsigned cs_ld32(const unsigned char* b, cs_u64 at) {
    return (unsigned)b[at] | ((unsigned)b[at + 1] << 8) | ((unsigned)b[at + 2] << 16) | ((unsigned)b[at + 3] << 24);
}
__device__ __forceinline__ cs_u64 cs_ld64(const unsigned char* b, cs_u64 at) {
    return (cs_u64)cs_ld32(b, at) | ((cs_u64)cs_ld32(b, at + 4) << 32);
}

// The layout rules of src/wire/layout.rs (c < 2^48 always: the table of a
// buffer that reaches phase 2 fits in its bytes).
__device__ __forceinline__ unsigned cs_chunk_len(cs_u64 n, cs_u64 c) {
    const cs_u64 start = c * (cs_u64)CS_CHUNK;
    const cs_u64 rest = n > start ? n - start : 0ull;
    return rest < (cs_u64)CS_CHUNK ? (unsigned)rest : CS_CHUNK;
}
__device__ __forceinline__ cs_u64 cs_bitmap_bytes(unsigned len) { return ((cs_u64)len + 31ull) / 32ull * 4ull; }
__device__ __forceinline__ cs_u64 cs_list_bytes(unsigned k) { return ((cs_u64)k + 1ull) / 2ull * 4ull; }
__device__ __forceinline__ bool cs_uses_bitmap(unsigned k, unsigned len) {
    return cs_list_bytes(k) > cs_bitmap_bytes(len);
}
__device__ __forceinline__ cs_u64 cs_section_bytes(unsigned k, unsigned len) {
    return cs_uses_bitmap(k, len) ? cs_bitmap_bytes(len) : cs_list_bytes(k);
}

// What the block knows of its buffer between phases (shared memory).
struct CsPeerWalk {
    unsigned verdict[8];
    cs_u64 red[CS_WARPS + 1];
    cs_u64 have, n, count, chunks, values_at, total;
    cs_u64 carry_at, carry_entries;
    unsigned dtype, describe;
    // One tile of chunks: index-section offset, first entry, entry count.
    cs_u64 tile_at[CS_BLOCK];
    cs_u64 tile_first[CS_BLOCK];
    unsigned tile_k[CS_BLOCK];
};

// Records a failure (one thread calls it).
__device__ __forceinline__ void cs_fail(CsPeerWalk& w, unsigned code, cs_u64 a, cs_u64 b, cs_u64 c) {
    w.verdict[0] = code;
    w.verdict[1] = (unsigned)a;
    w.verdict[2] = (unsigned)(a >> 32);
    w.verdict[3] = (unsigned)b;
    w.verdict[4] = (unsigned)(b >> 32);
    w.verdict[5] = (unsigned)c;
    w.verdict[6] = (unsigned)(c >> 32);
    w.verdict[7] = 0u;
}

// Block-wide minimum and sum of one u64 per thread, returned to every thread
// (the order of a wrapping sum does not change it).
__device__ cs_u64 cs_block_min_all(cs_u64 v, CsPeerWalk& w) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        const cs_u64 u = __shfl_down_sync(0xffffffffu, v, o);
        v = u < v ? u : v;
    }
    if (lane == 0u) w.red[warp] = v;
    __syncthreads();
    if (threadIdx.x == 0u) {
        cs_u64 m = w.red[0];
        for (unsigned i = 1; i < CS_WARPS; ++i) m = w.red[i] < m ? w.red[i] : m;
        w.red[CS_WARPS] = m;
    }
    __syncthreads();
    const cs_u64 out = w.red[CS_WARPS];
    __syncthreads();
    return out;
}
__device__ cs_u64 cs_block_sum_all(cs_u64 v, CsPeerWalk& w) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    v = cs_warp_sum_u64(v);
    if (lane == 0u) w.red[warp] = v;
    __syncthreads();
    if (threadIdx.x == 0u) {
        cs_u64 s = 0ull;
        for (unsigned i = 0; i < CS_WARPS; ++i) s += w.red[i];
        w.red[CS_WARPS] = s;
    }
    __syncthreads();
    const cs_u64 out = w.red[CS_WARPS];
    __syncthreads();
    return out;
}

// Phase 1 (thread 0): the header. Returns whether the buffer failed.
__device__ bool cs_walk_header(const unsigned char* b, CsPeerWalk& w) {
    if (threadIdx.x == 0u) {
        for (unsigned i = 0; i < 8u; ++i) w.verdict[i] = 0u;
        const cs_u64 have = w.have;
        if (have < 32ull) {
            cs_fail(w, CS_V_TRUNCATED, 32ull, have, 0ull);
        } else if (b[0] != 'C' || b[1] != 'S' || b[2] != 'P' || b[3] != 'D') {
            cs_fail(w, CS_V_MAGIC, cs_ld32(b, 0), 0ull, 0ull);
        } else if (cs_ld16(b, 4) != 1u) {
            cs_fail(w, CS_V_VERSION, cs_ld16(b, 4), 0ull, 0ull);
        } else if (b[6] > 2u) {
            cs_fail(w, CS_V_DTYPE, b[6], 0ull, 0ull);
        } else if (b[7] != 0u) {
            cs_fail(w, CS_V_RESERVED, 7ull, 0ull, 0ull);
        } else {
            unsigned i = 28u;
            while (i < 32u && b[i] == 0u) ++i;
            if (i < 32u) {
                cs_fail(w, CS_V_RESERVED, i, 0ull, 0ull);
            } else {
                w.dtype = b[6];
                w.n = cs_ld64(b, 8);
                w.count = cs_ld64(b, 16);
                w.chunks = w.n / (cs_u64)CS_CHUNK + (w.n % (cs_u64)CS_CHUNK != 0ull ? 1ull : 0ull);
                const cs_u64 table_end = 32ull + 4ull * w.chunks;
                if (have < table_end) cs_fail(w, CS_V_TRUNCATED, table_end, have, 0ull);
            }
        }
        w.carry_at = 0ull;
        w.carry_entries = 0ull;
    }
    __syncthreads();
    return w.verdict[0] != 0u;
}

// Phase 2: the chunk table, then the count and the exact length.
__device__ bool cs_walk_table(const unsigned char* b, CsPeerWalk& w) {
    const cs_u64 n = w.n, chunks = w.chunks;
    for (cs_u64 t0 = 0; t0 < chunks; t0 += CS_BLOCK) {
        const cs_u64 c = t0 + threadIdx.x;
        const bool in = c < chunks;
        const unsigned k = in ? cs_ld32(b, 32ull + 4ull * c) : 0u;
        const unsigned len = in ? cs_chunk_len(n, c) : 0u;
        const bool over = in && k > len;
        const cs_u64 first_over = cs_block_min_all(over ? c : CS_V_NONE, w);
        if (first_over != CS_V_NONE) {
            if (c == first_over) cs_fail(w, CS_V_OVERFULL, c, k, len);
            __syncthreads();
            return true;
        }
        const cs_u64 at = cs_block_sum_all(in ? cs_section_bytes(k, len) : 0ull, w);
        const cs_u64 entries = cs_block_sum_all(in ? (cs_u64)k : 0ull, w);
        if (threadIdx.x == 0u) {
            w.carry_at += at;
            w.carry_entries += entries;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0u) {
        const cs_u64 entries = w.carry_entries, count = w.count;
        w.values_at = 32ull + 4ull * chunks + w.carry_at;
        if (entries != count) {
            cs_fail(w, CS_V_COUNT, count, entries, n);
        } else {
            // count <= n < 2^64 and section bytes <= a few per element: the
            // sums cannot overflow, as in src/wire/table.rs.
            const cs_u64 vbytes = (count * (w.dtype == 0u ? 4ull : 2ull) + 3ull) & ~3ull;
            w.total = w.values_at + vbytes;
            if (w.have < w.total) {
                cs_fail(w, CS_V_TRUNCATED, w.total, w.have, 0ull);
            } else if (w.have > w.total) {
                cs_fail(w, CS_V_OVERSIZED, w.total, w.have, 0ull);
            }
        }
        w.carry_at = 32ull + 4ull * chunks;
        w.carry_entries = 0ull;
    }
    __syncthreads();
    return w.verdict[0] != 0u;
}

// Phase 3 for one chunk, its index section at byte `at` (the block).
__device__ bool cs_walk_chunk(const unsigned char* b, CsPeerWalk& w, cs_u64 c, cs_u64 at, unsigned k) {
    const unsigned len = cs_chunk_len(w.n, c);
    if (!cs_uses_bitmap(k, len)) {
        // Key 2p: entry p is not above entry p - 1; 2p + 1: it is past the
        // chunk. The smallest key is the host's first error.
        cs_u64 key = CS_V_NONE;
        for (unsigned p = threadIdx.x; p < k; p += CS_BLOCK) {
            const unsigned idx = cs_ld16(b, at + 2ull * p);
            if (p > 0u && idx <= cs_ld16(b, at + 2ull * (p - 1u))) {
                key = 2ull * p;
                break;
            }
            if (idx >= len) {
                key = 2ull * p + 1ull;
                break;
            }
        }
        key = cs_block_min_all(key, w);
        if (threadIdx.x == 0u) {
            if (key != CS_V_NONE) {
                const unsigned p = (unsigned)(key / 2ull);
                if ((key & 1ull) == 0ull) {
                    cs_fail(w, CS_V_MISORDERED, c, p, 0ull);
                } else {
                    cs_fail(w, CS_V_RANGE, c, cs_ld16(b, at + 2ull * p), len);
                }
            } else {
                for (cs_u64 i = 2ull * k; i < cs_list_bytes(k); ++i) {
                    if (b[at + i] != 0u) {
                        cs_fail(w, CS_V_RESERVED, at + i, 0ull, 0ull);
                        break;
                    }
                }
            }
        }
        __syncthreads();
        return w.verdict[0] != 0u;
    }
    const unsigned nwords = (len + 31u) / 32u;
    cs_u64 bits = 0ull;
    for (unsigned i = threadIdx.x; i < nwords; i += CS_BLOCK) bits += (cs_u64)__popc(cs_ld32(b, at + 4ull * i));
    bits = cs_block_sum_all(bits, w);
    if (threadIdx.x == 0u) {
        const unsigned tail = len % 32u;
        const cs_u64 last = 4ull * (nwords - 1u);
        const unsigned stray = tail != 0u ? cs_ld32(b, at + last) >> tail : 0u;
        if (stray != 0u) {
            const unsigned bit = tail + (unsigned)(__ffs(stray) - 1);
            cs_fail(w, CS_V_RESERVED, at + last + bit / 8u, 0ull, 0ull);
        } else if (bits != (cs_u64)k) {
            cs_fail(w, CS_V_BITMAP, c, bits, k);
        }
    }
    __syncthreads();
    return w.verdict[0] != 0u;
}

// Phase 3: every chunk's index section, tile by tile, writing the apply
// descriptors on the way when the buffer is for the backend's n and dtype.
__device__ bool cs_walk_sections(const unsigned char* b, cs_u64 base, CsPeerWalk& w, unsigned* rank_desc) {
    const cs_u64 n = w.n, chunks = w.chunks;
    const cs_u64 vsize = w.dtype == 0u ? 4ull : 2ull;
    for (cs_u64 t0 = 0; t0 < chunks; t0 += CS_BLOCK) {
        const cs_u64 c = t0 + threadIdx.x;
        const bool in = c < chunks;
        const unsigned k = in ? cs_ld32(b, 32ull + 4ull * c) : 0u;
        const unsigned len = in ? cs_chunk_len(n, c) : 0u;
        cs_u64 total;
        const cs_u64 at = cs_block_exclusive_scan<cs_u64>(in ? cs_section_bytes(k, len) : 0ull, w.red, &total);
        cs_u64 k_total;
        const cs_u64 first = cs_block_exclusive_scan<cs_u64>((cs_u64)k, w.red, &k_total);
        w.tile_at[threadIdx.x] = w.carry_at + at;
        w.tile_first[threadIdx.x] = w.carry_entries + first;
        w.tile_k[threadIdx.x] = k;
        if (in && w.describe != 0u) {
            unsigned* d = rank_desc + c * CS_DESC_WORDS;
            const cs_u64 idx = base + w.carry_at + at;
            const cs_u64 val = base + w.values_at + (w.carry_entries + first) * vsize;
            d[0] = k;
            d[1] = cs_uses_bitmap(k, len) ? 1u : 0u;
            d[2] = (unsigned)idx;
            d[3] = (unsigned)(idx >> 32);
            d[4] = (unsigned)val;
            d[5] = (unsigned)(val >> 32);
            d[6] = len;
            d[7] = 0u;
        }
        __syncthreads();
        if (threadIdx.x == 0u) {
            w.carry_at += total;
            w.carry_entries += k_total;
        }
        const cs_u64 tile = chunks - t0 < (cs_u64)CS_BLOCK ? chunks - t0 : (cs_u64)CS_BLOCK;
        for (cs_u64 j = 0; j < tile; ++j) {
            if (cs_walk_chunk(b, w, t0 + j, w.tile_at[j], w.tile_k[j])) return true;
        }
    }
    return false;
}

// Phase 4: the values (the first non-finite one, then the pad).
__device__ bool cs_walk_values(const unsigned char* b, CsPeerWalk& w) {
    const unsigned dtype = w.dtype;
    const cs_u64 vsize = dtype == 0u ? 4ull : 2ull;
    const unsigned mask = dtype == 0u ? 0x7f800000u : (dtype == 1u ? 0x7c00u : 0x7f80u);
    const cs_u64 at = w.values_at, count = w.count;
    cs_u64 first = CS_V_NONE;
    for (cs_u64 j = threadIdx.x; j < count; j += CS_BLOCK) {
        const unsigned bits = vsize == 4ull ? cs_ld32(b, at + 4ull * j) : cs_ld16(b, at + 2ull * j);
        if ((bits & mask) == mask) {
            first = j;
            break;
        }
    }
    first = cs_block_min_all(first, w);
    if (threadIdx.x == 0u) {
        if (first != CS_V_NONE) {
            cs_fail(w, CS_V_NONFINITE, first, 0ull, 0ull);
        } else {
            for (cs_u64 i = at + count * vsize; i < w.total; ++i) {
                if (b[i] != 0u) {
                    cs_fail(w, CS_V_RESERVED, i, 0ull, 0ull);
                    break;
                }
            }
        }
    }
    __syncthreads();
    return w.verdict[0] != 0u;
}

// Phase 5: the checksum over every word but word 6 (src/wire/checksum.rs).
__device__ bool cs_walk_checksum(const unsigned char* b, CsPeerWalk& w) {
    const cs_u64 words = w.total / 4ull;
    cs_u64 sum = 0ull;
    for (cs_u64 i = threadIdx.x; i < words; i += CS_BLOCK) {
        if (i != 6ull) sum += (cs_u64)cs_word_term((unsigned)i, cs_ld32(b, 4ull * i));
    }
    const unsigned actual = (unsigned)cs_block_sum_all(sum, w);
    if (threadIdx.x == 0u) {
        const unsigned expected = cs_ld32(b, 24);
        if (actual != expected) cs_fail(w, CS_V_CHECKSUM, expected, actual, 0ull);
    }
    __syncthreads();
    return w.verdict[0] != 0u;
}

extern "C" __global__ void cs_validate_peers(const unsigned char* __restrict__ g, const cs_u64* __restrict__ spans,
                                             cs_u64 n, unsigned dtype, unsigned* __restrict__ desc,
                                             unsigned* __restrict__ verdicts) {
    __shared__ CsPeerWalk w;
    const unsigned r = blockIdx.x;
    const cs_u64 base = spans[2u * r];
    const unsigned char* b = g + base;
    if (threadIdx.x == 0u) w.have = spans[2u * r + 1u];
    __syncthreads();
    const cs_u64 expected_chunks = n / (cs_u64)CS_CHUNK + (n % (cs_u64)CS_CHUNK != 0ull ? 1ull : 0ull);
    unsigned* rank_desc = desc + (cs_u64)r * expected_chunks * CS_DESC_WORDS;
    if (!cs_walk_header(b, w) && !cs_walk_table(b, w)) {
        if (threadIdx.x == 0u) w.describe = (w.n == n && w.dtype == dtype) ? 1u : 0u;
        __syncthreads();
        if (!cs_walk_sections(b, base, w, rank_desc) && !cs_walk_values(b, w) && !cs_walk_checksum(b, w)) {
            if (threadIdx.x == 0u && w.describe == 0u) cs_fail(w, CS_V_MISMATCH, w.n, w.dtype, 0ull);
        }
    }
    __syncthreads();
    if (threadIdx.x < 8u) verdicts[8u * r + threadIdx.x] = w.verdict[threadIdx.x];
}
