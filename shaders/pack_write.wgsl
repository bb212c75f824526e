// Compaction, step 3: every selected element writes its index (list entry
// or bitmap bit) and its quantized value at the position given by the scan,
// so the output is in index order whatever the execution order. Sub-word
// writes use atomicOr into a zeroed buffer: the result is order-independent.

struct PackParams {
    grid_x: u32,
    groups: u32,
    seg_len: u32,
    // Global index of this segment's first element.
    seg_base: u32,
    // Index of this segment's first tile among all tiles.
    tile_base: u32,
    // Word offset, in the index/header buffer, of the `idx` binding.
    idx_word_base: u32,
    // Word offset, in the values buffer, of the `val` binding.
    val_word_base: u32,
    // 0 = f32, 1 = f16, 2 = bf16.
    dtype_code: u32,
    pad: array<vec4<u32>, 2>,
}

const ITEMS: u32 = 4u;

@group(0) @binding(0) var<uniform> p: PackParams;
@group(0) @binding(1) var<storage, read> acc: array<f32>;
@group(0) @binding(2) var<storage, read> sel: array<u32, 8>;
@group(0) @binding(3) var<storage, read> tile_info: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> chunk_info: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> idx: array<atomic<u32>>;
@group(0) @binding(6) var<storage, read_write> val: array<atomic<u32>>;

@compute @workgroup_size(256)
fn pack_write(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, p.grid_x);
    if (g >= p.groups) {
        return;
    }
    let lo = sel[5];
    let tie = sel[6];
    let take = sel[7];
    let info = tile_info[p.tile_base + g];
    // Ties still available to this tile, in index order.
    let avail = take - min(take, info.y);

    var keys: array<u32, 4>;
    var valid: array<bool, 4>;
    var ties = 0u;
    for (var j = 0u; j < ITEMS; j++) {
        let i = g * (WG * ITEMS) + lid * ITEMS + j;
        valid[j] = i < p.seg_len;
        keys[j] = 0u;
        if (valid[j]) {
            keys[j] = key_of(acc[i]);
            ties += u32(keys[j] == tie);
        }
    }
    var tie_rank = wg_exclusive_scan(lid, ties).x;
    var chosen: array<bool, 4>;
    var picked = 0u;
    for (var j = 0u; j < ITEMS; j++) {
        var take_it = valid[j] && keys[j] >= lo;
        if (valid[j] && keys[j] == tie) {
            take_it = tie_rank < avail;
            tie_rank += 1u;
        }
        chosen[j] = take_it;
        picked += u32(take_it);
    }
    var rank = wg_exclusive_scan(lid, picked).x;
    for (var j = 0u; j < ITEMS; j++) {
        if (!chosen[j]) {
            continue;
        }
        let local_i = g * (WG * ITEMS) + lid * ITEMS + j;
        let gi = p.seg_base + local_i;
        let ci = chunk_info[gi >> 16u];
        let in_chunk = gi & 0xFFFFu;
        let pos = info.x + rank;
        rank += 1u;
        if (ci.w != 0u) {
            atomicOr(&idx[ci.y / 4u + in_chunk / 32u - p.idx_word_base], 1u << (in_chunk & 31u));
        } else {
            let byte = ci.y + 2u * pos;
            atomicOr(&idx[byte / 4u - p.idx_word_base], in_chunk << ((byte & 2u) * 8u));
        }
        let entry = ci.z + pos;
        let x = acc[local_i];
        if (p.dtype_code == 0u) {
            atomicStore(&val[entry - p.val_word_base], bitcast<u32>(x));
        } else {
            let q = quantize16(x, p.dtype_code);
            atomicOr(&val[entry / 2u - p.val_word_base], q << ((entry & 1u) * 16u));
        }
    }
}
