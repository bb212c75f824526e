// Payload checksum (src/wire/checksum.rs): the wrapping sum of
// fmix32(w_i ^ (i * 0x9E3779B9)) over every word but the checksum field.
// A wrapping u32 sum is order-independent, so atomics give exact bits.

struct ChecksumParams {
    grid_x: u32,
    groups: u32,
    // Words in this binding.
    words: u32,
    // Position in the packed buffer of this binding's first word.
    word_base: u32,
    pad: array<vec4<u32>, 3>,
}

const ITEMS: u32 = 16u;
// Word 6 (byte 24) holds the checksum itself.
const SKIP_WORD: u32 = 6u;

@group(0) @binding(0) var<uniform> p: ChecksumParams;
@group(0) @binding(1) var<storage, read> words: array<u32>;
@group(0) @binding(2) var<storage, read_write> total: array<atomic<u32>, 1>;

var<workgroup> part: atomic<u32>;

@compute @workgroup_size(256)
fn checksum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, p.grid_x);
    if (g >= p.groups) {
        return;
    }
    if (lid == 0u) {
        atomicStore(&part, 0u);
    }
    workgroupBarrier();
    var s = 0u;
    for (var j = 0u; j < ITEMS; j++) {
        let w = g * (WG * ITEMS) + j * WG + lid;
        let at = p.word_base + w;
        if (w < p.words && at != SKIP_WORD) {
            s += fmix32(words[w] ^ (at * 0x9E3779B9u));
        }
    }
    atomicAdd(&part, s);
    workgroupBarrier();
    if (lid == 0u) {
        atomicAdd(&total[0], atomicLoad(&part));
    }
}
