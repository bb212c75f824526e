// Operation 3, per rank: decodes one rank's validated packed buffer, one
// workgroup per wire chunk, and either adds its values into the dense sum
// (marking the indices present) or subtracts them from the accumulator
// (error feedback on this rank's own entries). Ranks run as successive
// dispatches, so every index sees its contributions in rank order; within a
// rank indices are distinct, so no float atomics are needed.

struct ScatterParams {
    grid_x: u32,
    groups: u32,
    // Global index of this segment's first chunk (descriptors are per chunk).
    chunk_base: u32,
    // This rank's first descriptor.
    desc_base: u32,
    // Word offset, in the gathered buffer, of the `gidx` / `gval` bindings.
    idx_word_base: u32,
    val_word_base: u32,
    dtype_code: u32,
    // 0: dst += v and mark; 1: dst -= v.
    mode: u32,
    // Dense length.
    n: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
    pad: vec4<u32>,
}

const CHUNK: u32 = 65536u;
// Bitmap words per invocation (a chunk has at most 2048 words).
const WORDS_PER: u32 = 8u;

@group(0) @binding(0) var<uniform> p: ScatterParams;
// Per chunk: (byte offset of its index section, byte offset of its first
// value, count, 1 if bitmap), absolute in the gathered buffer.
@group(0) @binding(1) var<storage, read> desc: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> gidx: array<u32>;
@group(0) @binding(3) var<storage, read> gval: array<u32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
@group(0) @binding(5) var<storage, read_write> mark: array<atomic<u32>>;

var<workgroup> chunk_desc: vec4<u32>;

fn load_value(first_byte: u32, j: u32) -> f32 {
    if (p.dtype_code == 0u) {
        return bitcast<f32>(gval[(first_byte / 4u) + j - p.val_word_base]);
    }
    let byte = first_byte + 2u * j;
    let w = gval[byte / 4u - p.val_word_base];
    return dequantize16((w >> ((byte & 2u) * 8u)) & 0xFFFFu, p.dtype_code);
}

fn deliver(i: u32, v: f32) {
    if (p.mode == 0u) {
        dst[i] = dst[i] + v;
        atomicOr(&mark[i >> 5u], 1u << (i & 31u));
    } else {
        dst[i] = dst[i] - v;
    }
}

@compute @workgroup_size(256)
fn scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, p.grid_x);
    if (g >= p.groups) {
        return;
    }
    if (lid == 0u) {
        chunk_desc = desc[p.desc_base + p.chunk_base + g];
    }
    let d = workgroupUniformLoad(&chunk_desc);
    if (d.z == 0u) {
        return;
    }
    // Element index of this chunk's start, relative to the segment binding.
    let elem0 = g * CHUNK;
    if (d.w == 0u) {
        for (var j = lid; j < d.z; j += WG) {
            let byte = d.x + 2u * j;
            let local_i = (gidx[byte / 4u - p.idx_word_base] >> ((byte & 2u) * 8u)) & 0xFFFFu;
            deliver(elem0 + local_i, load_value(d.y, j));
        }
        return;
    }
    let len = min(CHUNK, p.n - (p.chunk_base + g) * CHUNK);
    let words = (len + 31u) / 32u;
    let w0 = lid * WORDS_PER;
    var bits = 0u;
    for (var w = w0; w < min(w0 + WORDS_PER, words); w++) {
        bits += countOneBits(gidx[d.x / 4u + w - p.idx_word_base]);
    }
    var rank = wg_exclusive_scan(lid, bits).x;
    for (var w = w0; w < min(w0 + WORDS_PER, words); w++) {
        var word = gidx[d.x / 4u + w - p.idx_word_base];
        while (word != 0u) {
            let b = firstTrailingBit(word);
            word &= word - 1u;
            deliver(elem0 + w * 32u + b, load_value(d.y, rank));
            rank += 1u;
        }
    }
}
