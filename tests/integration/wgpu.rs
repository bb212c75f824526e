//! The WGSL backend on a real adapter (lavapipe in CI), held to host
//! references built from the crate's own contracts: `wire::layout`,
//! `wire::checksum`, `wire::quantize`, docs/selection.md and the `Backend`
//! trait's arithmetic. Without an adapter the tests print why and pass,
//! except under `CI=true`, where a missing adapter fails them.

use chronos_sync::backend::wgpu::WgpuBuffer;
use chronos_sync::wire::checksum::checksum;
use chronos_sync::wire::layout::{self, Layout};
use chronos_sync::wire::quantize::{quantize, round_trip};
use chronos_sync::{Backend, Error, Gathered, Selection, SyncConfig, WgpuBackend, WgpuOptions, WireDtype};
use std::borrow::{Borrow, BorrowMut};

/// The backend under test, or `None` (printed) when this machine has no
/// adapter. Under `CI=true` a missing adapter is a test failure.
pub fn make_wgpu() -> Option<WgpuBackend> {
    make_with(WgpuOptions::default())
}

fn make_with(options: WgpuOptions) -> Option<WgpuBackend> {
    match WgpuBackend::with_options(options) {
        Ok(b) => {
            eprintln!("wgpu adapter: {}", b.name());
            Some(b)
        }
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but the wgpu backend is unavailable: {e}");
            }
            eprintln!("skipping wgpu test: {e}");
            None
        }
    }
}

/// xorshift64*: deterministic test data without extra dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * scale).collect()
    }
}

fn key(x: f32) -> u32 {
    x.to_bits() & 0x7FFF_FFFF
}

/// Indices selected by `rule` (ascending), by definition rather than by the
/// radix procedure where the definition is unique.
fn ref_select(acc: &[f32], rule: Selection, acc_sq: f32) -> Vec<usize> {
    let n = acc.len();
    match rule {
        Selection::TopK { .. } => {
            let k = rule.k(n).unwrap();
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| key(acc[b]).cmp(&key(acc[a])).then(a.cmp(&b)));
            let mut s = order[..k].to_vec();
            s.sort_unstable();
            s
        }
        Selection::TopKApprox { slack, .. } => {
            let k = rule.k(n).unwrap();
            let kmax = ((k as f64) * (1.0 + slack)).floor() as usize;
            radix_select(acc, k, kmax)
        }
        Selection::Threshold { rel } => {
            let c = (rel as f32) * (acc_sq / n as f32).sqrt();
            (0..n).filter(|&i| key(acc[i]) >= c.to_bits()).collect()
        }
        _ => (0..n).collect(),
    }
}

/// docs/selection.md, written out on the host.
fn radix_select(acc: &[f32], k: usize, kmax: usize) -> Vec<usize> {
    let levels = [(20u32, 2048usize, 32u32), (9, 2048, 20), (0, 512, 9)];
    let (mut above, mut prefix) = (0usize, 0u32);
    for (li, &(shift, bins, hi)) in levels.iter().enumerate() {
        let mut hist = vec![0usize; bins];
        for &x in acc {
            let kx = key(x);
            if li == 0 || (kx >> hi) == (prefix >> hi) {
                hist[((kx >> shift) as usize) & (bins - 1)] += 1;
            }
        }
        let mut run = above;
        let mut b = bins - 1;
        while run + hist[b] < k {
            run += hist[b];
            b -= 1;
        }
        let ge = run + hist[b];
        let cut = prefix | ((b as u32) << shift);
        if ge <= kmax {
            return (0..acc.len()).filter(|&i| key(acc[i]) >= cut).collect();
        }
        above = run;
        prefix = cut;
    }
    let mut take = k - above;
    (0..acc.len())
        .filter(|&i| {
            let kx = key(acc[i]);
            kx > prefix
                || (kx == prefix && take > 0 && {
                    take -= 1;
                    true
                })
        })
        .collect()
}

/// docs/wire-format.md, written out on the host.
fn ref_pack(acc: &[f32], sel: &[usize], dtype: WireDtype) -> Vec<u8> {
    let n = acc.len() as u64;
    let chunks = layout::num_chunks(n) as usize;
    let mut counts = vec![0u32; chunks];
    for &i in sel {
        counts[i / layout::CHUNK_ELEMS] += 1;
    }
    let lay = Layout::new(n, dtype, &counts);
    let mut out = vec![0u8; lay.total_bytes as usize];
    out[0..4].copy_from_slice(&layout::MAGIC);
    out[4..6].copy_from_slice(&layout::FORMAT_VERSION.to_le_bytes());
    out[6] = dtype.code();
    out[8..16].copy_from_slice(&n.to_le_bytes());
    out[16..24].copy_from_slice(&lay.count.to_le_bytes());
    for (c, &k) in counts.iter().enumerate() {
        out[32 + 4 * c..36 + 4 * c].copy_from_slice(&k.to_le_bytes());
    }
    let mut pos = vec![0usize; chunks];
    let vo = lay.values_offset() as usize;
    for (e, &i) in sel.iter().enumerate() {
        let c = i / layout::CHUNK_ELEMS;
        let local = (i % layout::CHUNK_ELEMS) as u32;
        let at = lay.index_offsets[c] as usize;
        if layout::uses_bitmap(counts[c], layout::chunk_len(n, c as u64)) {
            let w = at + 4 * (local as usize / 32);
            let v = u32::from_le_bytes(out[w..w + 4].try_into().unwrap()) | (1 << (local % 32));
            out[w..w + 4].copy_from_slice(&v.to_le_bytes());
        } else {
            let b = at + 2 * pos[c];
            out[b..b + 2].copy_from_slice(&(local as u16).to_le_bytes());
        }
        pos[c] += 1;
        let q = quantize(acc[i], dtype);
        let s = dtype.size();
        out[vo + e * s..vo + (e + 1) * s].copy_from_slice(&q.to_le_bytes()[..s]);
    }
    let ck = checksum(&out).unwrap();
    out[24..28].copy_from_slice(&ck.to_le_bytes());
    out
}

fn config(selection: Selection, dtype: WireDtype) -> SyncConfig {
    SyncConfig::builder().selection(selection).wire_dtype(dtype).build().unwrap()
}

fn buffer(b: &WgpuBackend, data: &[f32]) -> WgpuBuffer {
    let mut buf = b.alloc(data.len()).unwrap();
    b.upload(data, &mut buf).unwrap();
    buf
}

/// Commits `values` as the accumulator of a fresh state (0 + values is exact).
fn state_with(b: &WgpuBackend, values: &[f32], cfg: &SyncConfig) -> chronos_sync::backend::wgpu::WgpuState {
    let mut st = b.create_state(values.len(), cfg).unwrap();
    let delta = buffer(b, values);
    let theta = buffer(b, &vec![1.0; values.len()]);
    b.accumulate(&mut st, &delta, &theta, 0.0).unwrap();
    b.commit_accumulate(&mut st).unwrap();
    st
}

fn sq_sum(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x) * f64::from(x)).sum()
}

#[test]
fn wgpu_fused_pass_matches_f64_reference() {
    let Some(b) = make_wgpu() else { return };
    let n = 300_001;
    let mut rng = Rng(7);
    let acc0 = rng.vec(n, 2.0);
    let delta = rng.vec(n, 0.5);
    let theta = rng.vec(n, 3.0);
    let cfg = config(Selection::TopK { ratio: 0.01 }, WireDtype::Bf16);
    let mut st = state_with(&b, &acc0, &cfg);
    let (db, tb) = (buffer(&b, &delta), buffer(&b, &theta));
    let s1 = b.accumulate(&mut st, &db, &tb, 0.5).unwrap();
    let s2 = b.accumulate(&mut st, &db, &tb, 0.5).unwrap();
    assert_eq!(bytemuck::bytes_of(&s1), bytemuck::bytes_of(&s2), "status must be deterministic");
    // Not committed yet: the accumulator is unchanged.
    let mut host = vec![0.0; n];
    b.read_accumulator(&st, &mut host).unwrap();
    assert!(host.iter().zip(&acc0).all(|(a, b)| a.to_bits() == b.to_bits()));
    b.commit_accumulate(&mut st).unwrap();
    b.read_accumulator(&st, &mut host).unwrap();
    let expect: Vec<f32> = acc0.iter().zip(&delta).map(|(a, d)| a + d).collect();
    assert!(host.iter().zip(&expect).all(|(a, b)| a.to_bits() == b.to_bits()), "acc' = acc + delta, bit for bit");
    let a = sq_sum(&expect);
    let p = sq_sum(&theta);
    let s = a.sqrt() / p.sqrt();
    for (got, want, what) in
        [(s1.acc_sq as f64, a, "A"), (s1.theta_sq as f64, p, "P"), (s1.significance as f64, s, "s")]
    {
        assert!((got - want).abs() <= 1e-5 * want, "{what}: {got} vs {want}");
    }
    assert_eq!((s1.nonfinite, s1.triggered, s1.tau), (0, u32::from(s > 0.5), 0.5));
    let s3 = b.accumulate(&mut st, &db, &tb, (s * 2.0) as f32).unwrap();
    assert_eq!(s3.triggered, 0);

    // Non-finite inputs are counted in delta and theta, and never trigger.
    let mut bad_d = delta.clone();
    let mut bad_t = theta.clone();
    bad_d[5] = f32::NAN;
    bad_d[n - 1] = f32::INFINITY;
    bad_t[70_000] = f32::NEG_INFINITY;
    let s4 = b.accumulate(&mut st, &buffer(&b, &bad_d), &buffer(&b, &bad_t), 0.0).unwrap();
    assert_eq!((s4.nonfinite, s4.triggered), (3, 0));
}

fn check_pack(b: &WgpuBackend, values: &[f32], rule: Selection, dtype: WireDtype) {
    let cfg = config(rule, dtype);
    let mut st = state_with(b, values, &cfg);
    // The committed accumulator is 0.0 + values (which turns -0.0 into +0.0).
    let acc: Vec<f32> = values.iter().map(|&v| 0.0 + v).collect();
    let acc = &acc[..];
    let status =
        b.accumulate(&mut st, &buffer(b, &vec![0.0; acc.len()]), &buffer(b, &vec![1.0; acc.len()]), 0.0).unwrap();
    b.commit_accumulate(&mut st).unwrap();
    let sel = ref_select(acc, rule, status.acc_sq);
    let want = ref_pack(acc, &sel, dtype);
    let got = b.select_pack(&mut st).unwrap().to_vec();
    assert_eq!(got.len(), want.len(), "{rule:?} {dtype:?}: length");
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        let body = got.iter().zip(&want).skip(28).position(|(a, b)| a != b).map(|j| {
            let at = (28 + j) & !1;
            (at, &got[at..at + 2], &want[at..at + 2])
        });
        panic!("{rule:?} {dtype:?}: first differing byte at {i} of {}; past the header: {body:?}", want.len());
    }
    // select_pack leaves the accumulator alone.
    let mut host = vec![0.0; acc.len()];
    b.read_accumulator(&st, &mut host).unwrap();
    assert!(host.iter().zip(acc).all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn wgpu_packed_bytes_match_reference() {
    let Some(b) = make_wgpu() else { return };
    let n = 200_000; // four chunks, the last one partial
    let mut rng = Rng(11);
    let smooth = rng.vec(n, 1.0);
    // Few distinct magnitudes: ties everywhere, straddling every cut.
    let ties: Vec<f32> = (0..n).map(|_| ((rng.next() % 7) as f32 - 3.0) * 0.25).collect();
    let rules = [
        Selection::TopK { ratio: 0.01 },
        Selection::TopK { ratio: 0.3 },
        Selection::TopKApprox { ratio: 0.01, slack: 0.2 },
        Selection::Threshold { rel: 2.0 },
        Selection::Dense,
    ];
    for dtype in [WireDtype::F32, WireDtype::F16, WireDtype::Bf16] {
        for rule in rules {
            check_pack(&b, &smooth, rule, dtype);
        }
        check_pack(&b, &ties, Selection::TopK { ratio: 0.05 }, dtype);
        check_pack(&b, &ties, Selection::TopKApprox { ratio: 0.05, slack: 0.1 }, dtype);
    }
}

#[test]
fn wgpu_quantization_matches_half_bit_for_bit() {
    let Some(b) = make_wgpu() else { return };
    let mut v: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        65504.0,
        65519.99,
        65520.0,
        -65520.0,
        1e10,
        -3.4e38,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        1e-40,
        -1e-45,
        5.960_464_5e-8,
        2.980_232_2e-8,
        2.980_233e-8,
        8.940_697e-8,
        6.1e-5,
        6.097_555e-5,
        3.051_757_8e-5,
    ];
    // f16 and bf16 rounding ties and near-ties at many exponents.
    for e in [-24i32, -20, -15, -14, -10, 0, 5, 15, 100, 127] {
        let base = 2f32.powi(e.clamp(-126, 127));
        for m in [0x0000u32, 0x0FFF, 0x1000, 0x1001, 0x3000, 0x7FFF, 0x8000, 0x8001, 0x18000, 0x2000] {
            let x = f32::from_bits(base.to_bits() | m);
            v.push(x);
            v.push(-x);
        }
    }
    let mut rng = Rng(3);
    v.extend((0..5000).map(|_| f32::from_bits((rng.next() as u32) & 0xFF7F_FFFF)).filter(|x| x.is_finite()));
    for dtype in [WireDtype::F16, WireDtype::Bf16] {
        check_pack(&b, &v, Selection::Dense, dtype);
    }
}

/// The trait's apply arithmetic on the host: per index, the rank values in
/// rank order from +0.0, one multiply, one add; then error feedback.
fn ref_apply(theta: &mut [f32], acc: &mut [f32], ranks: &[Vec<(usize, f32)>], own: usize, w: f32, feedback: bool) {
    let n = theta.len();
    let mut sum = vec![0.0f32; n];
    let mut seen = vec![false; n];
    for r in ranks {
        for &(i, v) in r {
            sum[i] += v;
            seen[i] = true;
        }
    }
    for i in 0..n {
        if seen[i] {
            let prod = w * sum[i];
            theta[i] += prod;
        }
    }
    if feedback {
        for &(i, v) in &ranks[own] {
            acc[i] -= v;
        }
    } else {
        acc.iter_mut().for_each(|a| *a = 0.0);
    }
}

#[test]
fn wgpu_apply_matches_reference_in_rank_order() {
    let Some(b) = make_wgpu() else { return };
    let n = 140_000;
    let mut rng = Rng(5);
    for (dtype, feedback) in [(WireDtype::F32, true), (WireDtype::Bf16, true), (WireDtype::F16, false)] {
        let rank_acc: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(n, 1.0)).collect();
        let rules = [Selection::TopK { ratio: 0.02 }, Selection::Dense, Selection::TopK { ratio: 0.2 }];
        let mut gathered = Gathered::new();
        let mut ranks = Vec::new();
        for (acc, rule) in rank_acc.iter().zip(rules) {
            let sel = ref_select(acc, rule, 0.0);
            gathered.push_rank(&ref_pack(acc, &sel, dtype));
            ranks.push(sel.iter().map(|&i| (i, round_trip(acc[i], dtype))).collect::<Vec<_>>());
        }
        let own = 2;
        let cfg =
            SyncConfig::builder().selection(rules[own]).wire_dtype(dtype).error_feedback(feedback).build().unwrap();
        let mut st = state_with(&b, &rank_acc[own], &cfg);
        let theta0 = rng.vec(n, 4.0);
        let mut theta = buffer(&b, &theta0);
        let w = 1.0 / 3.0;
        b.apply(&mut st, &mut theta, &gathered, own, w).unwrap();
        let (mut want_theta, mut want_acc) = (theta0.clone(), rank_acc[own].clone());
        ref_apply(&mut want_theta, &mut want_acc, &ranks, own, w, feedback);
        let mut got = vec![0.0; n];
        b.download(&theta, &mut got).unwrap();
        assert!(got.iter().zip(&want_theta).all(|(a, b)| a.to_bits() == b.to_bits()), "{dtype:?}: theta");
        b.read_accumulator(&st, &mut got).unwrap();
        assert!(got.iter().zip(&want_acc).all(|(a, b)| a.to_bits() == b.to_bits()), "{dtype:?}: accumulator");
    }
}

#[test]
fn wgpu_segments_and_2d_grids_give_the_same_bytes() {
    let Some(wide) = make_wgpu() else { return };
    let opts = WgpuOptions { max_segment_elems: Some(65_536), max_groups_x: Some(3), ..WgpuOptions::default() };
    let Some(narrow) = make_with(opts) else { return };
    let n = 300_000;
    let mut rng = Rng(9);
    let deltas: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(n, 1.0)).collect();
    let theta0 = rng.vec(n, 2.0);
    let run = |b: &WgpuBackend, rule: Selection| {
        let cfg = config(rule, WireDtype::Bf16);
        let mut st = b.create_state(n, &cfg).unwrap();
        let mut theta = buffer(b, &theta0);
        let mut out = Vec::new();
        for d in &deltas {
            let s = b.accumulate(&mut st, &buffer(b, d), &theta, 0.0).unwrap();
            b.commit_accumulate(&mut st).unwrap();
            let packed = b.select_pack(&mut st).unwrap().to_vec();
            let mut g = Gathered::new();
            g.push_rank(&packed);
            b.apply(&mut st, &mut theta, &g, 0, 1.0).unwrap();
            out.push((bytemuck::bytes_of(&s).to_vec(), packed));
        }
        let mut t = vec![0.0; n];
        b.download(&theta, &mut t).unwrap();
        let mut a = vec![0.0; n];
        b.read_accumulator(&st, &mut a).unwrap();
        (out, t.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), a.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
    };
    for rule in [Selection::TopK { ratio: 0.01 }, Selection::Dense] {
        let (x, y) = (run(&wide, rule), run(&narrow, rule));
        assert_eq!(x.0.len(), y.0.len());
        for (step, (a, b)) in x.0.iter().zip(&y.0).enumerate() {
            assert_eq!(a.0, b.0, "{rule:?} step {step}: status bits");
            assert!(a.1 == b.1, "{rule:?} step {step}: packed bytes");
        }
        assert!(x.1 == y.1 && x.2 == y.2, "{rule:?}: theta/accumulator");
    }
}

#[test]
fn wgpu_bad_input_is_a_typed_error_and_changes_nothing() {
    let Some(b) = make_wgpu() else { return };
    let n = 70_000;
    let cfg = config(Selection::TopK { ratio: 0.01 }, WireDtype::Bf16);
    let acc = Rng(1).vec(n, 1.0);
    let mut st = state_with(&b, &acc, &cfg);
    let short = b.alloc(n - 1).unwrap();
    let ok = buffer(&b, &vec![0.5; n]);
    assert!(matches!(b.accumulate(&mut st, &short, &ok, 0.0), Err(Error::LengthMismatch { .. })));
    let mut host = vec![0.0; n - 1];
    assert!(matches!(b.download(&ok, &mut host), Err(Error::LengthMismatch { .. })));
    if let Some(other) = make_wgpu() {
        let foreign = buffer(&other, &vec![0.0; n]);
        assert!(matches!(b.accumulate(&mut st, &foreign, &ok, 0.0), Err(Error::Backend(_))));
    }
    // A truncated rank buffer is refused before anything is touched.
    let packed = b.select_pack(&mut st).unwrap().to_vec();
    let mut g = Gathered::new();
    g.push_rank(&packed);
    g.push_rank(&packed[..packed.len() - 4]);
    let mut theta = buffer(&b, &vec![0.5; n]);
    let err = b.apply(&mut st, &mut theta, &g, 0, 0.5).unwrap_err();
    assert!(matches!(err, Error::InvalidPeerBuffer { rank: 1, .. }), "{err}");
    let mut after = vec![0.0; n];
    b.download(&theta, &mut after).unwrap();
    assert!(after.iter().all(|&x| x == 0.5));
    b.read_accumulator(&st, &mut after).unwrap();
    assert!(after.iter().zip(&acc).all(|(a, b)| a.to_bits() == b.to_bits()));
}

/// Four ranks, each a thread with its own backend (for wgpu: its own device),
/// running `SparseSync` over a `LocalCollective`. Returns per rank the final
/// parameter and accumulator bits and the number of syncs.
fn four_rank_job<B: Backend + 'static>(make: fn() -> B) -> Vec<(Vec<u32>, Vec<u32>, u64)> {
    use chronos_sync::{LocalCollective, SparseSync};
    let n = 150_000;
    let steps = 6;
    let cfg = SyncConfig::builder()
        .selection(Selection::TopK { ratio: 0.01 })
        .wire_dtype(WireDtype::Bf16)
        .adaptive(false)
        .threshold(0.001)
        .build()
        .unwrap();
    let theta0 = Rng(21).vec(n, 1.0);
    let group = LocalCollective::group(4, std::time::Duration::from_secs(120)).unwrap();
    let handles: Vec<_> = group
        .into_iter()
        .enumerate()
        .map(|(rank, coll)| {
            let cfg = cfg.clone();
            let theta0 = theta0.clone();
            std::thread::spawn(move || {
                let backend = make();
                let mut params = backend.alloc(n).unwrap();
                backend.upload(&theta0, params.borrow_mut()).unwrap();
                let mut delta = backend.alloc(n).unwrap();
                let mut rng = Rng(100 + rank as u64);
                let mut sync = SparseSync::new(backend, coll, n, cfg).unwrap();
                let mut syncs = 0;
                for _ in 0..steps {
                    sync.backend().upload(&rng.vec(n, 0.01), delta.borrow_mut()).unwrap();
                    syncs += u64::from(sync.step(delta.borrow(), params.borrow_mut()).unwrap().synced);
                }
                let mut host = vec![0.0f32; n];
                sync.backend().download(params.borrow(), &mut host).unwrap();
                let p = host.iter().map(|x| x.to_bits()).collect();
                sync.read_accumulator(&mut host).unwrap();
                (p, host.iter().map(|x| x.to_bits()).collect(), syncs)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn own_device() -> WgpuBackend {
    make_wgpu().expect("adapter was found a moment ago")
}

#[test]
fn wgpu_sparse_sync_four_ranks_own_devices_identical_replicas() {
    if make_wgpu().is_none() {
        return;
    }
    let gpu = four_rank_job(own_device);
    assert!(gpu[0].2 >= 2, "threshold 0.001 must sync: {} syncs", gpu[0].2);
    for r in 1..4 {
        assert!(gpu[r].0 == gpu[0].0, "rank {r}: parameters differ from rank 0");
        assert_eq!(gpu[r].2, gpu[0].2);
    }
    // Same bytes as the CPU backend, so the same parameters and accumulators.
    let cpu = four_rank_job(chronos_sync::CpuBackend::new);
    for r in 0..4 {
        assert!(gpu[r].0 == cpu[r].0, "rank {r}: parameters differ from the CPU backend");
        assert!(gpu[r].1 == cpu[r].1, "rank {r}: accumulator differs from the CPU backend");
    }
}

/// A device and queue as a framework would open them itself.
fn callers_device() -> Option<(wgpu::Device, wgpu::Queue)> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).ok()?;
    let limits = adapter.limits();
    pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("framework"),
        required_limits: limits,
        ..Default::default()
    }))
    .ok()
}

fn callers_buffer(device: &wgpu::Device, queue: &wgpu::Queue, data: &[f32], usage: wgpu::BufferUsages) -> wgpu::Buffer {
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("framework tensor"),
        size: 4 * data.len() as u64,
        usage,
        mapped_at_creation: false,
    });
    queue.write_buffer(&buffer, 0, bytemuck::cast_slice(data));
    buffer
}

/// The backend on the caller's device steps the caller's own buffers (the
/// update written by the caller's queue, never uploaded by the engine) and
/// reaches the same bits as the backend on its own device with uploads;
/// wrapping refuses buffers of the wrong usage or too small with typed
/// errors.
#[test]
fn wgpu_backend_on_callers_device_steps_callers_buffers() {
    let Some(reference) = make_wgpu() else { return };
    let (device, queue) = callers_device().expect("an adapter is there (make_wgpu found one)");
    let backend = WgpuBackend::from_device(device.clone(), queue.clone(), WgpuOptions::default()).expect("backend");
    let n = 70_000;
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let mut rng = Rng(0x5eed);
    let theta0 = rng.vec(n, 1.0);
    let cfg = SyncConfig::builder().adaptive(false).threshold(0.0).build().unwrap();

    let theta_buf = callers_buffer(&device, &queue, &theta0, usage);
    let delta_buf = callers_buffer(&device, &queue, &vec![0.0; n], usage);
    // SAFETY (every wrap in this test): the buffers are created on `device`,
    // the one the backend runs on.
    let mut theta = unsafe { backend.wrap_buffer(theta_buf, n) }.expect("wrap theta");
    let delta = unsafe { backend.wrap_buffer(delta_buf.clone(), n) }.expect("wrap delta");
    let one = || chronos_sync::LocalCollective::group(1, std::time::Duration::from_secs(60)).unwrap().remove(0);
    let c1 = one();
    let mut sync = chronos_sync::SparseSync::new(&backend, c1, n, cfg.clone()).expect("engine");

    let mut ref_theta = buffer(&reference, &theta0);
    let mut ref_delta = reference.alloc(n).unwrap();
    let c2 = one();
    let mut ref_sync = chronos_sync::SparseSync::new(&reference, c2, n, cfg).expect("engine");

    let (mut got, mut want) = (vec![0.0f32; n], vec![0.0f32; n]);
    for step in 0..4 {
        let update = rng.vec(n, 1e-2);
        // The framework writes its gradient into its own buffer.
        queue.write_buffer(&delta_buf, 0, bytemuck::cast_slice(&update));
        let before = backend.transfer_counts();
        let report = sync.step(&delta, &mut theta).expect("step");
        // Only the 1% exchange is uploaded: neither tensor is copied in.
        let spent = backend.transfer_counts().since(&before);
        assert!(spent.h2d_bytes < n as u64, "step {step}: {} bytes uploaded for n = {n}", spent.h2d_bytes);
        reference.upload(&update, &mut ref_delta).unwrap();
        let ref_report = ref_sync.step(&ref_delta, &mut ref_theta).expect("reference step");
        assert_eq!(report.synced, ref_report.synced);
        backend.download(&theta, &mut got).unwrap();
        reference.download(&ref_theta, &mut want).unwrap();
        assert_eq!(
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "step {step}: theta"
        );
    }
    // The caller reads its tensor back through its own buffer.
    assert_eq!(theta.buffer().size(), 4 * n as u64);

    let unsupported = |r: chronos_sync::Result<WgpuBuffer>| {
        matches!(r, Err(Error::Backend(chronos_sync::BackendError::Unsupported { .. })))
    };
    let no_storage =
        callers_buffer(&device, &queue, &[0.0; 16], wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC);
    assert!(unsupported(unsafe { backend.wrap_buffer(no_storage, 16) }), "usage without STORAGE");
    let small = callers_buffer(&device, &queue, &[0.0; 16], usage);
    assert!(unsupported(unsafe { backend.wrap_buffer(small.clone(), 17) }), "too small");
    assert!(unsupported(unsafe { backend.wrap_buffer(small, 0) }), "zero elements");
}
