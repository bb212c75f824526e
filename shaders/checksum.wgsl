// Payload checksum (src/wire/checksum.rs): the wrapping sum of
// fmix32(w_i ^ (i * 0x9E3779B9)) over every word but the checksum field.
// A wrapping u32 sum is order-independent, so atomics give exact bits.

struct ChecksumParams {
    grid_x: u32,
    groups: u32,
    // Words in this binding (mode 0).
    words: u32,
    // Position in the packed buffer of this binding's first word (mode 0).
    word_base: u32,
    // Where `words` and `word_base` come from. 0: as given above. 1 and 2
    // (the bounded pack, whose layout stays on the device): from
    // `info[slot]` = (values offset, values bytes); 1 when the binding is the
    // header and index sections, 2 when it is the values section.
    mode: u32,
    slot: u32,
    pad0: u32,
    pad1: u32,
    pad: array<vec4<u32>, 2>,
}

const ITEMS: u32 = 16u;
// Word 6 (byte 24) holds the checksum itself.
const SKIP_WORD: u32 = 6u;

@group(0) @binding(0) var<uniform> p: ChecksumParams;
@group(0) @binding(1) var<storage, read> words: array<u32>;
// The scan's chunk_info (read in modes 1 and 2 only).
@group(0) @binding(2) var<storage, read> info: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> total: array<atomic<u32>, 1>;

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
    var count = p.words;
    var base = p.word_base;
    if (p.mode != 0u) {
        let sections = info[p.slot];
        if (p.mode == 1u) {
            count = sections.x / 4u;
            base = 0u;
        } else {
            count = sections.y / 4u;
            base = sections.x / 4u;
        }
        // Never past the binding, whatever the device wrote.
        count = min(count, arrayLength(&words));
    }
    var s = 0u;
    for (var j = 0u; j < ITEMS; j++) {
        let w = g * (WG * ITEMS) + j * WG + lid;
        let at = base + w;
        if (w < count && at != SKIP_WORD) {
            s += fmix32(words[w] ^ (at * 0x9E3779B9u));
        }
    }
    atomicAdd(&part, s);
    workgroupBarrier();
    if (lid == 0u) {
        atomicAdd(&total[0], atomicLoad(&part));
    }
}
