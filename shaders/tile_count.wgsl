// Compaction, step 1: per tile of 1024 elements, the number of keys above
// the cut (key >= lo) and of ties (key == tie).

struct TileParams {
    grid_x: u32,
    groups: u32,
    seg_len: u32,
    // Index of this segment's first tile among all tiles.
    tile_base: u32,
    pad: array<vec4<u32>, 3>,
}

// Elements per invocation, contiguous so that ranks follow index order.
const ITEMS: u32 = 4u;

@group(0) @binding(0) var<uniform> p: TileParams;
@group(0) @binding(1) var<storage, read> acc: array<f32>;
@group(0) @binding(2) var<storage, read> sel: array<u32, 8>;
// Per tile: (keys >= lo, keys == tie).
@group(0) @binding(3) var<storage, read_write> tiles: array<vec2<u32>>;

var<workgroup> n_above: atomic<u32>;
var<workgroup> n_tie: atomic<u32>;

@compute @workgroup_size(256)
fn tile_count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, p.grid_x);
    if (g >= p.groups) {
        return;
    }
    if (lid == 0u) {
        atomicStore(&n_above, 0u);
        atomicStore(&n_tie, 0u);
    }
    workgroupBarrier();
    let lo = sel[5];
    let tie = sel[6];
    var above = 0u;
    var ties = 0u;
    for (var j = 0u; j < ITEMS; j++) {
        let i = g * (WG * ITEMS) + lid * ITEMS + j;
        if (i < p.seg_len) {
            let key = key_of(acc[i]);
            above += u32(key >= lo);
            ties += u32(key == tie);
        }
    }
    atomicAdd(&n_above, above);
    atomicAdd(&n_tie, ties);
    workgroupBarrier();
    if (lid == 0u) {
        tiles[p.tile_base + g] = vec2<u32>(atomicLoad(&n_above), atomicLoad(&n_tie));
    }
}
