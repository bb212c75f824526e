// Validation of the gathered peer buffers on the device (issue 15 item 2),
// the WGSL twin of kernels/validate.cu: the checks of src/wire/table.rs and
// src/wire/decode.rs in their order, so that a rank's first error here is
// the host validator's. Workgroup g checks rank g's buffer, bytes
// spans[2g] .. spans[2g] + spans[2g + 1] of `bytes`, and writes its verdict
// (src/wire/verdict.rs: a code, then three u64 fields as lo/hi words) to
// verdicts[8g .. 8g + 8]; code 0 means valid.
//
// Phases: the header; the chunk table (first overfull chunk, the count, the
// exact length); each chunk's index section in order (a list's first
// misordered or out-of-range entry, then its pad; a bitmap's stray tail
// bits, then its population count); the values (the first non-finite one,
// then the pad); the checksum; `n` and the dtype against the backend's.
//
// Until the length check, the header's u64 fields are carried as lo/hi
// pairs; after it the buffer is known to be `have` < 2^32 bytes long, so
// every offset fits a u32. Values that steer loops with barriers are either
// read from read-only storage at uniform addresses or come out of a
// workgroupUniformLoad, so every branch around a barrier is uniform.

struct ValidateParams {
    grid_x: u32,
    groups: u32,
    // The backend's n (below 2^32) and wire dtype code.
    n: u32,
    dtype: u32,
    pad: array<vec4<u32>, 3>,
}

@group(0) @binding(0) var<uniform> p: ValidateParams;
@group(0) @binding(1) var<storage, read> bytes: array<u32>;
@group(0) @binding(2) var<storage, read> spans: array<u32>;
@group(0) @binding(3) var<storage, read_write> verdicts: array<u32>;

const NONE: u32 = 0xFFFFFFFFu;
const CHUNK: u32 = 65536u;

var<workgroup> red: array<u32, 256>;
var<workgroup> red_out: u32;

// Rank buffer base (byte offset in `bytes`); set once per workgroup.
var<private> base: u32;

// Byte-wise loads: an invalid buffer before this rank's may have any
// length, so this rank's first byte has no alignment.
fn ld8(at: u32) -> u32 {
    let a = base + at;
    return (bytes[a >> 2u] >> ((a & 3u) * 8u)) & 0xFFu;
}
fn ld16(at: u32) -> u32 {
    return ld8(at) | (ld8(at + 1u) << 8u);
}
fn ld32(at: u32) -> u32 {
    return ld16(at) | (ld16(at + 2u) << 16u);
}

// Workgroup minimum or sum (wrapping) of one u32 per invocation, uniform.
fn wg_reduce(lid: u32, v: u32, take_min: bool) -> u32 {
    red[lid] = v;
    workgroupBarrier();
    for (var off = WG / 2u; off > 0u; off = off >> 1u) {
        if (lid < off) {
            let o = red[lid + off];
            red[lid] = select(red[lid] + o, min(red[lid], o), take_min);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        red_out = red[0];
    }
    return workgroupUniformLoad(&red_out);
}

fn fail(g: u32, lid: u32, code: u32, a: vec2<u32>, b: vec2<u32>, c: vec2<u32>) {
    if (lid == 0u) {
        let o = 8u * g;
        verdicts[o] = code;
        verdicts[o + 1u] = a.x;
        verdicts[o + 2u] = a.y;
        verdicts[o + 3u] = b.x;
        verdicts[o + 4u] = b.y;
        verdicts[o + 5u] = c.x;
        verdicts[o + 6u] = c.y;
        verdicts[o + 7u] = 0u;
    }
}

fn w(x: u32) -> vec2<u32> {
    return vec2<u32>(x, 0u);
}

// u64 as (lo, hi).
fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}
fn gt64(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.y > b.y || (a.y == b.y && a.x > b.x);
}

fn chunk_len(n: vec2<u32>, chunks: u32, c: u32) -> u32 {
    if (c + 1u < chunks) {
        return CHUNK;
    }
    let tail = n.x & 0xFFFFu;
    return select(tail, CHUNK, tail == 0u);
}
fn bitmap_bytes(len: u32) -> u32 {
    return (len + 31u) / 32u * 4u;
}
fn list_bytes(k: u32) -> u32 {
    return (k + 1u) / 2u * 4u;
}
fn uses_bitmap(k: u32, len: u32) -> bool {
    return list_bytes(k) > bitmap_bytes(len);
}

@compute @workgroup_size(256)
fn validate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, p.grid_x);
    if (g >= p.groups) {
        return;
    }
    base = spans[2u * g];
    let have = spans[2u * g + 1u];

    // 1. The header.
    if (have < 32u) {
        fail(g, lid, 1u, w(32u), w(have), w(0u));
        return;
    }
    if (ld32(0u) != 0x44505343u) {
        fail(g, lid, 3u, w(ld32(0u)), w(0u), w(0u));
        return;
    }
    if (ld16(4u) != 1u) {
        fail(g, lid, 4u, w(ld16(4u)), w(0u), w(0u));
        return;
    }
    let dtype = ld8(6u);
    if (dtype > 2u) {
        fail(g, lid, 5u, w(dtype), w(0u), w(0u));
        return;
    }
    if (ld8(7u) != 0u) {
        fail(g, lid, 6u, w(7u), w(0u), w(0u));
        return;
    }
    for (var i = 28u; i < 32u; i++) {
        if (ld8(i) != 0u) {
            fail(g, lid, 6u, w(i), w(0u), w(0u));
            return;
        }
    }
    let n = vec2<u32>(ld32(8u), ld32(12u));
    let count = vec2<u32>(ld32(16u), ld32(20u));
    // chunks = ceil(n / 65536), table end = 32 + 4 * chunks, in u64.
    let chunks64 = add64(vec2<u32>((n.x >> 16u) | (n.y << 16u), n.y >> 16u), w(select(0u, 1u, (n.x & 0xFFFFu) != 0u)));
    let table_end64 = add64(vec2<u32>(chunks64.x << 2u, (chunks64.y << 2u) | (chunks64.x >> 30u)), w(32u));
    if (gt64(table_end64, w(have))) {
        fail(g, lid, 1u, table_end64, w(have), w(0u));
        return;
    }
    // The table fits in the buffer: chunks < 2^30.
    let chunks = chunks64.x;
    let table_end = table_end64.x;

    // 2. The chunk table.
    var sections = vec2<u32>(0u, 0u);
    var entries = vec2<u32>(0u, 0u);
    for (var t0 = 0u; t0 < chunks; t0 += WG) {
        let c = t0 + lid;
        var k = 0u;
        var sec = 0u;
        var over = NONE;
        if (c < chunks) {
            k = ld32(32u + 4u * c);
            let len = chunk_len(n, chunks, c);
            if (k > len) {
                over = c;
            } else {
                sec = select(list_bytes(k), bitmap_bytes(len), uses_bitmap(k, len));
            }
        }
        let first_over = wg_reduce(lid, over, true);
        if (first_over != NONE) {
            let kc = ld32(32u + 4u * first_over);
            fail(g, lid, 7u, w(first_over), w(kc), w(chunk_len(n, chunks, first_over)));
            return;
        }
        // Per tile at most 256 * 65,536 entries and 256 * 8,192 bytes.
        sections = add64(sections, w(wg_reduce(lid, sec, false)));
        entries = add64(entries, w(wg_reduce(lid, k, false)));
    }
    if (any(entries != count)) {
        fail(g, lid, 8u, count, entries, n);
        return;
    }
    let values_at64 = add64(w(table_end), sections);
    // count = entries < 2^46: count * size + 3 cannot overflow.
    let shift = select(1u, 2u, dtype == 0u);
    let vbytes = add64(vec2<u32>(count.x << shift, (count.y << shift) | (count.x >> (32u - shift))), w(3u));
    let total64 = add64(values_at64, vec2<u32>(vbytes.x & ~3u, vbytes.y));
    if (gt64(total64, w(have))) {
        fail(g, lid, 1u, total64, w(have), w(0u));
        return;
    }
    if (total64.x < have) {
        fail(g, lid, 2u, total64, w(have), w(0u));
        return;
    }
    // From here the buffer is exactly `have` < 2^32 bytes.
    let values_at = values_at64.x;
    let total = total64.x;
    let nvals = count.x;
    let vsize = select(2u, 4u, dtype == 0u);

    // 3. The index sections, chunk by chunk.
    var at = table_end;
    for (var c = 0u; c < chunks; c++) {
        let k = ld32(32u + 4u * c);
        let len = chunk_len(n, chunks, c);
        if (!uses_bitmap(k, len)) {
            // Key 2q: entry q is not above entry q - 1; 2q + 1: it is past
            // the chunk. The smallest key is the host's first error.
            var key = NONE;
            for (var q = lid; q < k; q += WG) {
                let idx = ld16(at + 2u * q);
                if (q > 0u && idx <= ld16(at + 2u * q - 2u)) {
                    key = 2u * q;
                    break;
                }
                if (idx >= len) {
                    key = 2u * q + 1u;
                    break;
                }
            }
            key = wg_reduce(lid, key, true);
            if (key != NONE) {
                let q = key / 2u;
                if ((key & 1u) == 0u) {
                    fail(g, lid, 9u, w(c), w(q), w(0u));
                } else {
                    fail(g, lid, 10u, w(c), w(ld16(at + 2u * q)), w(len));
                }
                return;
            }
            for (var i = 2u * k; i < list_bytes(k); i++) {
                if (ld8(at + i) != 0u) {
                    fail(g, lid, 6u, w(at + i), w(0u), w(0u));
                    return;
                }
            }
            at += list_bytes(k);
        } else {
            let words = (len + 31u) / 32u;
            var bits = 0u;
            for (var i = lid; i < words; i += WG) {
                bits += countOneBits(ld32(at + 4u * i));
            }
            bits = wg_reduce(lid, bits, false);
            let tail = len % 32u;
            let last = 4u * (words - 1u);
            var stray = 0u;
            if (tail != 0u) {
                stray = ld32(at + last) >> tail;
            }
            if (stray != 0u) {
                let bit = tail + firstTrailingBit(stray);
                fail(g, lid, 6u, w(at + last + bit / 8u), w(0u), w(0u));
                return;
            }
            if (bits != k) {
                fail(g, lid, 11u, w(c), w(bits), w(k));
                return;
            }
            at += bitmap_bytes(len);
        }
    }

    // 4. The values, then their pad.
    let mask = select(select(0x7F80u, 0x7C00u, dtype == 1u), 0x7F800000u, dtype == 0u);
    var first = NONE;
    for (var j = lid; j < nvals; j += WG) {
        var bits: u32;
        if (vsize == 4u) {
            bits = ld32(values_at + 4u * j);
        } else {
            bits = ld16(values_at + 2u * j);
        }
        if ((bits & mask) == mask) {
            first = j;
            break;
        }
    }
    first = wg_reduce(lid, first, true);
    if (first != NONE) {
        fail(g, lid, 12u, w(first), w(0u), w(0u));
        return;
    }
    for (var i = values_at + nvals * vsize; i < total; i++) {
        if (ld8(i) != 0u) {
            fail(g, lid, 6u, w(i), w(0u), w(0u));
            return;
        }
    }

    // 5. The checksum over every word but word 6 (src/wire/checksum.rs).
    var sum = 0u;
    for (var i = lid; i < total / 4u; i += WG) {
        if (i != 6u) {
            sum += fmix32(ld32(4u * i) ^ (i * 0x9E3779B9u));
        }
    }
    sum = wg_reduce(lid, sum, false);
    let expected = ld32(24u);
    if (sum != expected) {
        fail(g, lid, 13u, w(expected), w(sum), w(0u));
        return;
    }

    // 6. Well formed: for this backend's n and dtype?
    if (n.y != 0u || n.x != p.n || dtype != p.dtype) {
        fail(g, lid, 14u, n, w(dtype), w(0u));
        return;
    }
    fail(g, lid, 0u, w(0u), w(0u), w(0u));
}
