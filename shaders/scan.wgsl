// Compaction, step 2, in a single workgroup: resolves which ties are taken
// (the first `take` in index order), gives every tile its offset inside its
// wire chunk, lays out the chunks exactly as src/wire/layout.rs does, and
// writes the header (checksum still zero) and the chunk table.

struct ScanParams {
    grid_x: u32,
    groups: u32,
    n: u32,
    num_tiles: u32,
    num_chunks: u32,
    dtype_code: u32,
    pad0: u32,
    pad1: u32,
    pad: array<vec4<u32>, 2>,
}

const TILE: u32 = 1024u;
const CHUNK: u32 = 65536u;
const TILES_PER_CHUNK: u32 = 64u;

@group(0) @binding(0) var<uniform> p: ScanParams;
@group(0) @binding(1) var<storage, read> sel: array<u32, 8>;
@group(0) @binding(2) var<storage, read> tiles: array<vec2<u32>>;
// Per tile: (entries of this chunk before the tile, ties before the tile).
@group(0) @binding(3) var<storage, read_write> tile_info: array<vec2<u32>>;
// Per chunk: (count, byte offset of its index section, entries before it, 1 if bitmap);
// one more entry after the last chunk: (values offset, values bytes, 0, 0).
@group(0) @binding(4) var<storage, read_write> chunk_info: array<vec4<u32>>;
// Header and chunk table of the packed buffer.
@group(0) @binding(5) var<storage, read_write> head: array<u32>;

fn chunk_len(c: u32) -> u32 {
    return min(CHUNK, p.n - c * CHUNK);
}

fn list_bytes(count: u32) -> u32 {
    return ((count + 1u) / 2u) * 4u;
}

fn bitmap_bytes(len: u32) -> u32 {
    return ((len + 31u) / 32u) * 4u;
}

@compute @workgroup_size(256)
fn scan(@builtin(local_invocation_index) lid: u32) {
    let take = sel[7];
    // Each invocation owns a contiguous run of chunks (and their tiles).
    let per = (p.num_chunks + WG - 1u) / WG;
    let c0 = min(lid * per, p.num_chunks);
    let c1 = min(c0 + per, p.num_chunks);
    let t0 = c0 * TILES_PER_CHUNK;
    let t1 = min(c1 * TILES_PER_CHUNK, p.num_tiles);

    var my_ties = 0u;
    for (var t = t0; t < t1; t++) {
        my_ties += tiles[t].y;
    }
    var ties_before = wg_exclusive_scan(lid, my_ties).x;

    var my_count = 0u;
    var my_bytes = 0u;
    for (var c = c0; c < c1; c++) {
        var in_chunk = 0u;
        let tend = min((c + 1u) * TILES_PER_CHUNK, p.num_tiles);
        for (var t = c * TILES_PER_CHUNK; t < tend; t++) {
            let q = tiles[t];
            tile_info[t] = vec2<u32>(in_chunk, ties_before);
            let avail = take - min(take, ties_before);
            in_chunk += q.x + min(q.y, avail);
            ties_before += q.y;
        }
        let len = chunk_len(c);
        let bitmap = list_bytes(in_chunk) > bitmap_bytes(len);
        var bytes = list_bytes(in_chunk);
        if (bitmap) {
            bytes = bitmap_bytes(len);
        }
        chunk_info[c] = vec4<u32>(in_chunk, bytes, 0u, u32(bitmap));
        my_count += in_chunk;
        my_bytes += bytes;
    }
    let count_scan = wg_exclusive_scan(lid, my_count);
    let bytes_scan = wg_exclusive_scan(lid, my_bytes);

    var entries = count_scan.x;
    var at = 32u + 4u * p.num_chunks + bytes_scan.x;
    for (var c = c0; c < c1; c++) {
        let ci = chunk_info[c];
        chunk_info[c] = vec4<u32>(ci.x, at, entries, ci.w);
        head[8u + c] = ci.x;
        entries += ci.x;
        at += ci.y;
    }
    // After the last chunk's entry: (values offset, values bytes), which
    // the bounded pack's checksum reads on the device (checksum.wgsl).
    if (c0 < c1 && c1 == p.num_chunks) {
        var value_size = 2u;
        if (p.dtype_code == 0u) {
            value_size = 4u;
        }
        chunk_info[p.num_chunks] = vec4<u32>(at, ((entries * value_size + 3u) / 4u) * 4u, 0u, 0u);
    }
    if (lid == 0u) {
        head[0] = 0x44505343u; // "CSPD" little-endian
        head[1] = 1u | (p.dtype_code << 16u); // version 1, dtype, reserved 0
        head[2] = p.n;
        head[3] = 0u;
        head[4] = count_scan.y;
        head[5] = 0u;
        head[6] = 0u; // checksum, filled in after the payload is written
        head[7] = 0u;
    }
}
