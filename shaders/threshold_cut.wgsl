// `Threshold { rel }` cut (docs/selection.md): c = rel * sqrt(A / n) in f32,
// with A the fused pass's sum(acc^2) from the status; select key >= bits(c).

struct ThresholdParams {
    grid_x: u32,
    groups: u32,
    rel_bits: u32,
    n_bits: u32,
    pad: array<vec4<u32>, 3>,
}

@group(0) @binding(0) var<uniform> p: ThresholdParams;
@group(0) @binding(1) var<storage, read> status: array<u32, 8>;
@group(0) @binding(2) var<storage, read_write> sel: array<u32, 8>;

@compute @workgroup_size(1)
fn threshold_cut() {
    let a = bitcast<f32>(status[0]);
    let c = bitcast<f32>(p.rel_bits) * sqrt(a / bitcast<f32>(p.n_bits));
    sel[0] = 1u;
    sel[5] = bitcast<u32>(c) & 0x7FFFFFFFu;
    sel[6] = 0xFFFFFFFFu;
    sel[7] = 0u;
}
