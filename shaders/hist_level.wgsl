// Level-2/3 selection histogram (docs/selection.md): counts the digit of the
// current level over the keys whose higher digits equal the prefix chosen so
// far. Does nothing once the cut search has finished.

struct HistParams {
    grid_x: u32,
    groups: u32,
    seg_len: u32,
    // Keys match when (key >> match_shift) == (prefix >> match_shift).
    match_shift: u32,
    // This level's digit is (key >> digit_shift) & digit_mask.
    digit_shift: u32,
    digit_mask: u32,
    pad0: u32,
    pad1: u32,
    pad: array<vec4<u32>, 2>,
}

const ITEMS: u32 = 16u;

@group(0) @binding(0) var<uniform> p: HistParams;
@group(0) @binding(1) var<storage, read> acc: array<f32>;
// Selection state: done, prefix, above, k, kmax, lo, tie, take.
@group(0) @binding(2) var<storage, read> sel: array<u32, 8>;
@group(0) @binding(3) var<storage, read_write> hist_out: array<atomic<u32>>;

var<workgroup> hist: array<atomic<u32>, 2048>;
var<workgroup> done_flag: u32;

@compute @workgroup_size(256)
fn hist_level(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, p.grid_x);
    if (g >= p.groups) {
        return;
    }
    if (lid == 0u) {
        done_flag = sel[0];
    }
    if (workgroupUniformLoad(&done_flag) != 0u) {
        return;
    }
    for (var b = lid; b < 2048u; b += WG) {
        atomicStore(&hist[b], 0u);
    }
    workgroupBarrier();
    let want = sel[1] >> p.match_shift;
    let base = g * (WG * ITEMS);
    for (var j = 0u; j < ITEMS; j++) {
        let i = base + j * WG + lid;
        if (i < p.seg_len) {
            let key = key_of(acc[i]);
            if ((key >> p.match_shift) == want) {
                atomicAdd(&hist[(key >> p.digit_shift) & p.digit_mask], 1u);
            }
        }
    }
    workgroupBarrier();
    for (var b = lid; b < 2048u; b += WG) {
        let c = atomicLoad(&hist[b]);
        if (c != 0u) {
            atomicAdd(&hist_out[b], c);
        }
    }
}
