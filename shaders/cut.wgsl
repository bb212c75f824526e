// One level of the cut search of docs/selection.md, in a single workgroup:
// finds the bin b, from the highest down, at which the running count first
// reaches k, then either stops (ge <= kmax: select every key >= the bin's
// lower edge) or narrows the prefix to that bin. After level 3 the prefix is
// an exact key T and the first (k - above) ties are taken in index order.

struct CutParams {
    grid_x: u32,
    groups: u32,
    // 1, 2 or 3.
    level: u32,
    digit_shift: u32,
    bins: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
    pad: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: CutParams;
@group(0) @binding(1) var<storage, read> hist: array<u32>;
// Selection state: done, prefix, above, k, kmax, lo, tie, take.
@group(0) @binding(2) var<storage, read_write> sel: array<u32, 8>;

var<workgroup> part: array<u32, 256>;
var<workgroup> done_flag: u32;

@compute @workgroup_size(256)
fn cut(@builtin(local_invocation_index) lid: u32) {
    if (lid == 0u) {
        done_flag = sel[0];
    }
    if (workgroupUniformLoad(&done_flag) != 0u) {
        return;
    }
    let per = p.bins / WG;
    var s = 0u;
    for (var b = lid * per; b < (lid + 1u) * per; b++) {
        s += hist[b];
    }
    part[lid] = s;
    workgroupBarrier();
    if (lid != 0u) {
        return;
    }
    let k = sel[3];
    let kmax = sel[4];
    let prefix = sel[1];
    // Entries already known to lie above the current prefix's range.
    var run = sel[2];
    var t = WG - 1u;
    loop {
        if (run + part[t] >= k || t == 0u) {
            break;
        }
        run += part[t];
        t -= 1u;
    }
    var b = (t + 1u) * per - 1u;
    loop {
        if (run + hist[b] >= k || b == t * per) {
            break;
        }
        run += hist[b];
        b -= 1u;
    }
    let ge = run + hist[b];
    let with_digit = prefix | (b << p.digit_shift);
    if (ge <= kmax) {
        sel[0] = 1u;
        sel[5] = with_digit;
        sel[6] = 0xFFFFFFFFu;
        sel[7] = 0u;
        return;
    }
    sel[1] = with_digit;
    sel[2] = run;
    if (p.level == 3u) {
        // Exact key T = with_digit; ties straddle the boundary.
        sel[0] = 1u;
        sel[5] = with_digit + 1u;
        sel[6] = with_digit;
        sel[7] = k - run;
    }
}
