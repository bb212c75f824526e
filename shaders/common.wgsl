// Helpers shared by every kernel; the host prepends this file to each module.

// Invocations per workgroup (every kernel uses one 256-wide dimension).
const WG: u32 = 256u;

// Selection key: the f32 bit pattern of |x| (docs/selection.md).
fn key_of(x: f32) -> u32 {
    return bitcast<u32>(x) & 0x7FFFFFFFu;
}

// True for NaN and +-inf (all exponent bits set).
fn is_nonfinite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7F800000u) == 0x7F800000u;
}

// Linear index of this workgroup in a grid that may spill into the y
// dimension (65,535 workgroups per dimension at most).
fn group_index(wid: vec3<u32>, grid_x: u32) -> u32 {
    return wid.x + wid.y * grid_x;
}

// MurmurHash3's 32-bit finalizer: the checksum's per-word mixing
// (src/wire/checksum.rs).
fn fmix32(x: u32) -> u32 {
    var h = x;
    h ^= h >> 16u;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13u;
    h *= 0xC2B2AE35u;
    h ^= h >> 16u;
    return h;
}

var<workgroup> scan_buf: array<u32, 256>;

// Exclusive prefix sum of `v` over the workgroup, in invocation order.
// Returns (exclusive prefix, workgroup total). Integer sums: any order gives
// the same bits. Must be called from uniform control flow.
fn wg_exclusive_scan(lid: u32, v: u32) -> vec2<u32> {
    scan_buf[lid] = v;
    workgroupBarrier();
    for (var off = 1u; off < WG; off = off << 1u) {
        var add = 0u;
        if (lid >= off) {
            add = scan_buf[lid - off];
        }
        workgroupBarrier();
        scan_buf[lid] = scan_buf[lid] + add;
        workgroupBarrier();
    }
    let inclusive = scan_buf[lid];
    let total = scan_buf[WG - 1u];
    workgroupBarrier();
    return vec2<u32>(inclusive - v, total);
}
