// Final reduction of the fused pass: sums the per-workgroup partials in a
// fixed order and applies the threshold test on the device, writing the
// 32-byte StepStatus the host reads back.

var<workgroup> red_acc: array<f32, 256>;
var<workgroup> red_theta: array<f32, 256>;
var<workgroup> red_bad: array<u32, 256>;

struct FinishParams {
    grid_x: u32,
    groups: u32,
    // Number of partials written by `fused` over all segments.
    count: u32,
    // Bits of the threshold tau.
    tau_bits: u32,
    pad: array<vec4<u32>, 3>,
}

@group(0) @binding(0) var<uniform> fp: FinishParams;
@group(0) @binding(1) var<storage, read> all_partials: array<vec4<u32>>;
// StepStatus: acc_sq, theta_sq, significance, tau, nonfinite, triggered, 0, 0.
@group(0) @binding(2) var<storage, read_write> status: array<u32, 8>;

@compute @workgroup_size(256)
fn fused_finish(@builtin(local_invocation_index) lid: u32) {
    // Each invocation sums a contiguous run of partials in order, then a
    // fixed pairwise tree combines the 256 runs.
    let per = (fp.count + WG - 1u) / WG;
    let start = lid * per;
    let end = min(start + per, fp.count);
    var sum_acc = 0.0;
    var sum_theta = 0.0;
    var bad = 0u;
    for (var i = start; i < end; i++) {
        let q = all_partials[i];
        sum_acc += bitcast<f32>(q.x);
        sum_theta += bitcast<f32>(q.y);
        bad += q.z;
    }
    red_acc[lid] = sum_acc;
    red_theta[lid] = sum_theta;
    red_bad[lid] = bad;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red_acc[lid] = red_acc[lid] + red_acc[lid + s];
            red_theta[lid] = red_theta[lid] + red_theta[lid + s];
            red_bad[lid] = red_bad[lid] + red_bad[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let a = red_acc[0];
        let t = red_theta[0];
        let tau = bitcast<f32>(fp.tau_bits);
        let s = sqrt(a) / max(sqrt(t), 1e-8);
        status[0] = bitcast<u32>(a);
        status[1] = bitcast<u32>(t);
        status[2] = bitcast<u32>(s);
        status[3] = fp.tau_bits;
        status[4] = red_bad[0];
        status[5] = u32(red_bad[0] == 0u && s > tau);
        status[6] = 0u;
        status[7] = 0u;
    }
}
