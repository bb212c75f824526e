// Operation 1, fused: acc' = acc + delta into the spare accumulator, with the
// per-workgroup partial sums of acc'^2 and theta^2, the non-finite count and
// the level-1 selection histogram, all from one read of delta/acc/theta.
// `fused_finish` then reduces the partials in a fixed tree and applies the
// threshold test, so the host reads back one 32-byte status.

struct FusedParams {
    grid_x: u32,
    groups: u32,
    // Elements in this segment (bindings start at the segment's first element).
    seg_len: u32,
    // Index of this segment's first workgroup among all partials.
    partial_base: u32,
    pad: array<vec4<u32>, 3>,
}

// Elements per invocation; a workgroup covers WG * ITEMS elements.
const ITEMS: u32 = 16u;

@group(0) @binding(0) var<uniform> p: FusedParams;
@group(0) @binding(1) var<storage, read> delta: array<f32>;
@group(0) @binding(2) var<storage, read> theta: array<f32>;
@group(0) @binding(3) var<storage, read> acc_in: array<f32>;
@group(0) @binding(4) var<storage, read_write> acc_out: array<f32>;
// Per workgroup: (bits of sum acc'^2, bits of sum theta^2, non-finite count, 0).
@group(0) @binding(5) var<storage, read_write> partials: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read_write> hist1: array<atomic<u32>>;

var<workgroup> red_acc: array<f32, 256>;
var<workgroup> red_theta: array<f32, 256>;
var<workgroup> red_bad: array<u32, 256>;
// Integer counts: atomics give the same totals in any order.
var<workgroup> hist: array<atomic<u32>, 2048>;

@compute @workgroup_size(256)
fn fused(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, p.grid_x);
    if (g >= p.groups) {
        return;
    }
    for (var b = lid; b < 2048u; b += WG) {
        atomicStore(&hist[b], 0u);
    }
    workgroupBarrier();

    var sum_acc = 0.0;
    var sum_theta = 0.0;
    var bad = 0u;
    let base = g * (WG * ITEMS);
    for (var j = 0u; j < ITEMS; j++) {
        let i = base + j * WG + lid;
        if (i < p.seg_len) {
            let d = delta[i];
            let t = theta[i];
            let a = acc_in[i] + d;
            acc_out[i] = a;
            sum_acc += a * a;
            sum_theta += t * t;
            bad += u32(is_nonfinite(a)) + u32(is_nonfinite(t));
            atomicAdd(&hist[key_of(a) >> 20u], 1u);
        }
    }
    red_acc[lid] = sum_acc;
    red_theta[lid] = sum_theta;
    red_bad[lid] = bad;
    workgroupBarrier();
    // Fixed-shape pairwise tree: the same inputs give the same bits.
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red_acc[lid] = red_acc[lid] + red_acc[lid + s];
            red_theta[lid] = red_theta[lid] + red_theta[lid + s];
            red_bad[lid] = red_bad[lid] + red_bad[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        partials[p.partial_base + g] = vec4<u32>(bitcast<u32>(red_acc[0]), bitcast<u32>(red_theta[0]), red_bad[0], 0u);
    }
    for (var b = lid; b < 2048u; b += WG) {
        let c = atomicLoad(&hist[b]);
        if (c != 0u) {
            atomicAdd(&hist1[b], c);
        }
    }
}
