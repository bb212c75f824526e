// Operation 3, final step: theta_i += weight * sum_i for every index some
// rank sent, as one f32 multiply and one f32 add. The product goes through an
// opaque bit operation (xor with a runtime zero) so that no compiler can
// contract the two into a fused multiply-add.
//
// It also restores the scratch to zero as it goes: `sum[i]` is reset at
// every marked index (unmarked ones were never written) and each workgroup
// clears the mark words of its own tile once all its invocations have read
// them, so the next apply needs no dense clear of either buffer.

struct ThetaParams {
    grid_x: u32,
    groups: u32,
    seg_len: u32,
    weight_bits: u32,
    // Always 0; read at run time so the product stays a separate rounding.
    zero: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
    pad: array<vec4<u32>, 2>,
}

const ITEMS: u32 = 16u;

@group(0) @binding(0) var<uniform> p: ThetaParams;
@group(0) @binding(1) var<storage, read_write> sum: array<f32>;
@group(0) @binding(2) var<storage, read_write> mark: array<u32>;
@group(0) @binding(3) var<storage, read_write> theta: array<f32>;

@compute @workgroup_size(256)
fn apply_theta(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, p.grid_x);
    if (g >= p.groups) {
        return;
    }
    let w = bitcast<f32>(p.weight_bits);
    let base = g * (WG * ITEMS);
    for (var j = 0u; j < ITEMS; j++) {
        let i = base + j * WG + lid;
        if (i < p.seg_len && ((mark[i >> 5u] >> (i & 31u)) & 1u) != 0u) {
            let product = bitcast<f32>(bitcast<u32>(w * sum[i]) ^ p.zero);
            theta[i] = theta[i] + product;
            sum[i] = 0.0;
        }
    }
    // This tile's mark words (WG * ITEMS / 32 = 128), once every invocation
    // of the workgroup has read its bits.
    workgroupBarrier();
    let word = (base >> 5u) + lid;
    if (lid < (WG * ITEMS) / 32u && word * 32u < p.seg_len) {
        mark[word] = 0u;
    }
}
