//! The `.cu` kernels executed on the CPU (feature `cuda-emu`), checked bit for
//! bit against the host model in `reference`.

use super::reference::{self, Rng, key};
use chronos_sync::backend::cuda::kernels::Kernel;
use chronos_sync::backend::cuda::{CudaEmuBackend, emulated_kernel_name};
use chronos_sync::wire::quantize::round_trip;
use chronos_sync::{Backend, Error, Gathered, Selection, StepStatus, SyncConfig, WireDtype};

type Buf = <CudaEmuBackend as Backend>::Buffer;
type State = <CudaEmuBackend as Backend>::State;

fn config(selection: Selection, wire_dtype: WireDtype, error_feedback: bool) -> SyncConfig {
    SyncConfig { selection, wire_dtype, error_feedback, ..SyncConfig::default() }
}

fn buffer(b: &CudaEmuBackend, data: &[f32]) -> Buf {
    let mut buf = b.alloc(data.len()).unwrap();
    b.upload(data, &mut buf).unwrap();
    buf
}

fn read_acc(b: &CudaEmuBackend, st: &State, n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    b.read_accumulator(st, &mut out).unwrap();
    out
}

/// Accumulates `delta` (with `theta`) and commits; returns the status.
fn accumulate(b: &CudaEmuBackend, st: &mut State, delta: &[f32], theta: &[f32], tau: f32) -> StepStatus {
    let status = b.accumulate(st, &buffer(b, delta), &buffer(b, theta), tau).unwrap();
    b.commit_accumulate(st).unwrap();
    status
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Magnitudes from a few levels so that many keys tie (exercises the
/// level-3 tie rule), with random signs.
fn tied_values(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let level = (rng.next_u64() % 40) as f32 * 0.25;
            if rng.next_u64() % 2 == 0 { level } else { -level }
        })
        .collect()
}

#[test]
fn kernel_tables_agree() {
    for k in Kernel::ALL {
        assert_eq!(emulated_kernel_name(k as u32).as_deref(), Some(k.name()), "kernel id {}", k as u32);
    }
    assert_eq!(emulated_kernel_name(Kernel::ALL.len() as u32), None);
}

#[test]
fn fused_pass_matches_reference_and_is_deterministic() {
    let b = CudaEmuBackend::new();
    let n = 70_001; // two chunks, not a multiple of 4: vector body and scalar tail
    let mut rng = Rng(7);
    let (d1, d2, theta) = (rng.vec(n, 1.0), rng.vec(n, 0.5), rng.vec(n, 2.0));
    let mut st = b.create_state(n, &config(Selection::TopK { ratio: 0.01 }, WireDtype::Bf16, true)).unwrap();
    accumulate(&b, &mut st, &d1, &theta, 0.1);
    let acc1 = read_acc(&b, &st, n);
    assert_eq!(bits(&acc1), bits(&d1), "0 + delta is delta");

    let (db, tb) = (buffer(&b, &d2), buffer(&b, &theta));
    let s1 = b.accumulate(&mut st, &db, &tb, 0.1).unwrap();
    assert_eq!(bits(&read_acc(&b, &st, n)), bits(&acc1), "uncommitted accumulate leaves the accumulator");
    let s2 = b.accumulate(&mut st, &db, &tb, 0.1).unwrap();
    assert_eq!(bytemuck::bytes_of(&s1), bytemuck::bytes_of(&s2), "status bits differ between runs");
    b.commit_accumulate(&mut st).unwrap();

    let expect: Vec<f32> = acc1.iter().zip(&d2).map(|(a, d)| a + d).collect();
    assert_eq!(bits(&read_acc(&b, &st, n)), bits(&expect));
    let a64: f64 = expect.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    let t64: f64 = theta.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    assert!((f64::from(s1.acc_sq) - a64).abs() <= 1e-5 * a64, "acc_sq {} vs {a64}", s1.acc_sq);
    assert!((f64::from(s1.theta_sq) - t64).abs() <= 1e-5 * t64, "theta_sq {} vs {t64}", s1.theta_sq);
    let host = StepStatus::from_sums(s1.acc_sq, s1.theta_sq, 0, 0.1);
    assert_eq!(bytemuck::bytes_of(&s1), bytemuck::bytes_of(&host), "device formula differs from the host twin");
    println!(
        "fused pass n={n}: acc_sq={} (f64 {a64:.6}), s={}, triggered={}",
        s1.acc_sq, s1.significance, s1.triggered
    );
    assert_eq!(s1.triggered, u32::from(s1.significance > 0.1));
}

#[test]
fn fused_pass_counts_non_finite_input() {
    let b = CudaEmuBackend::new();
    let n = 1_027;
    let mut rng = Rng(11);
    let (mut delta, mut theta) = (rng.vec(n, 1.0), rng.vec(n, 1.0));
    delta[3] = f32::NAN;
    delta[1_026] = f32::INFINITY; // scalar tail
    theta[500] = f32::NEG_INFINITY;
    let mut st = b.create_state(n, &SyncConfig::default()).unwrap();
    let status = b.accumulate(&mut st, &buffer(&b, &delta), &buffer(&b, &theta), 0.0).unwrap();
    assert_eq!(status.nonfinite, 3);
    assert_eq!(status.triggered, 0);
    assert!(read_acc(&b, &st, n).iter().all(|&x| x == 0.0), "accumulator changed without commit");
}

/// Runs select_pack after one accumulate of `acc` and compares with `expected`.
fn check_pack(
    n: usize,
    acc: &[f32],
    selection: Selection,
    dtype: WireDtype,
    expected_sel: impl Fn(&StepStatus) -> Vec<usize>,
) {
    let b = CudaEmuBackend::new();
    let mut st = b.create_state(n, &config(selection, dtype, true)).unwrap();
    let status = accumulate(&b, &mut st, acc, &vec![1.0; n], 0.0);
    // The committed accumulator is 0 + acc (so -0.0 becomes +0.0).
    let acc: Vec<f32> = acc.iter().map(|&x| 0.0 + x).collect();
    let sel = expected_sel(&status);
    let expect = reference::pack(&acc, &sel, dtype);
    let got = b.select_pack(&mut st).unwrap().to_vec();
    assert_eq!(got.len(), expect.len(), "{selection:?} {dtype:?}: length (count {})", sel.len());
    // The checksum (bytes 24..28) differs whenever anything else does, so
    // report the first other difference: it locates the offending entry.
    let first = got.iter().zip(&expect).enumerate().position(|(i, (a, b))| a != b && !(24..28).contains(&i));
    assert!(first.is_none(), "{selection:?} {dtype:?}: bytes differ at {first:?} of {}", got.len());
    assert_eq!(got, expect, "{selection:?} {dtype:?}: checksum differs");
    println!("{selection:?} {dtype:?} n={n}: {} entries, {} bytes, identical", sel.len(), got.len());
}

#[test]
fn top_k_packs_the_reference_bytes() {
    let mut rng = Rng(3);
    for (n, ratio, dtype, tied) in [
        (70_001, 0.01, WireDtype::Bf16, false),
        (70_001, 0.02, WireDtype::F16, true),
        (70_001, 0.3, WireDtype::Bf16, true), // dense chunks: bitmaps
        (4_099, 1.0, WireDtype::F32, false),
        (1_000, 0.000_1, WireDtype::F32, true), // k = 1
    ] {
        let acc = if tied { tied_values(&mut rng, n) } else { rng.vec(n, 3.0) };
        let k = Selection::TopK { ratio }.k(n).unwrap();
        let exact = reference::top_k(&acc, k);
        assert_eq!(reference::radix_select(&acc, k, k), exact, "host radix model disagrees with a sort");
        check_pack(n, &acc, Selection::TopK { ratio }, dtype, |_| exact.clone());
    }
}

#[test]
fn top_k_approx_stays_within_slack() {
    let mut rng = Rng(5);
    let n = 70_001;
    let acc = rng.vec(n, 1.0);
    let (ratio, slack) = (0.01, 0.25);
    let k = Selection::TopK { ratio }.k(n).unwrap();
    let kmax = ((k as f64) * (1.0 + slack)).floor() as usize;
    let sel = reference::radix_select(&acc, k, kmax);
    assert!(sel.len() >= k && sel.len() <= kmax);
    let min_sel = sel.iter().map(|&i| key(acc[i])).min().unwrap();
    assert!((0..n).filter(|i| sel.binary_search(i).is_err()).all(|i| key(acc[i]) < min_sel));
    check_pack(n, &acc, Selection::TopKApprox { ratio, slack }, WireDtype::Bf16, |_| sel.clone());
}

#[test]
fn threshold_and_dense_pack_the_reference_bytes() {
    let mut rng = Rng(9);
    let n = 66_000;
    let acc = rng.vec(n, 1.0);
    let rel = 1.5;
    check_pack(n, &acc, Selection::Threshold { rel }, WireDtype::F16, |status| {
        let cut = (rel as f32) * (status.acc_sq / n as f32).sqrt();
        (0..n).filter(|&i| key(acc[i]) >= cut.to_bits()).collect()
    });
    check_pack(n, &acc, Selection::Dense, WireDtype::Bf16, |_| (0..n).collect());
}

#[test]
fn quantization_edges_match_the_host() {
    let specials = [
        65_504.0f32,
        65_519.996,
        65_520.0,
        -1.0e6,
        3.0e38,
        -3.4e38,
        1.0e-7,
        5.960_464_5e-8,
        2.980_232_2e-8,
        2.980_233e-8,
        6.103_515_6e-5,
        6.1e-5,
        1.000_976_6,
        1.001_953_1,
        1.003_906_3,
        -0.0,
        0.0,
        1.0e-40,
        f32::MAX,
        -f32::MIN_POSITIVE,
    ];
    let mut rng = Rng(13);
    let mut acc: Vec<f32> = specials.to_vec();
    acc.extend(rng.vec(4_000, 70_000.0));
    acc.extend((0..2_000).map(|_| f32::from_bits((rng.next_u64() as u32) & 0x807f_ffff))); // subnormals
    let n = acc.len();
    for dtype in [WireDtype::F16, WireDtype::Bf16, WireDtype::F32] {
        check_pack(n, &acc, Selection::Dense, dtype, |_| (0..n).collect());
    }
}

/// Rank buffers for `apply`: indices, their (wire-exact) values and bytes.
fn rank_buffer(acc: &[f32], sel: Vec<usize>, dtype: WireDtype) -> (Vec<usize>, Vec<f32>, Vec<u8>) {
    let bytes = reference::pack(acc, &sel, dtype);
    let vals = sel.iter().map(|&i| round_trip(acc[i], dtype)).collect();
    (sel, vals, bytes)
}

#[test]
fn apply_sums_ranks_in_order_with_error_feedback() {
    let mut rng = Rng(17);
    let n = 70_001;
    for (dtype, error_feedback) in [(WireDtype::Bf16, true), (WireDtype::F32, false)] {
        let b = CudaEmuBackend::new();
        let mut st = b.create_state(n, &config(Selection::TopK { ratio: 0.05 }, dtype, error_feedback)).unwrap();
        let own_acc = rng.vec(n, 1.0);
        accumulate(&b, &mut st, &own_acc, &vec![0.5; n], 0.0);
        let others = [rng.vec(n, 1.0), tied_values(&mut rng, n)];
        let ranks = [
            rank_buffer(&others[0], reference::top_k(&others[0], 3_000), dtype),
            rank_buffer(&own_acc, reference::top_k(&own_acc, 3_500), dtype),
            rank_buffer(&others[1], reference::top_k(&others[1], 30_000), dtype), // bitmaps
        ];
        let mut gathered = Gathered::new();
        gathered.reset(&ranks.iter().map(|r| r.2.len() as u64).collect::<Vec<_>>()).expect("lengths of real buffers");
        ranks.iter().for_each(|r| gathered.push_rank(&r.2));
        let theta0 = rng.vec(n, 1.0);
        let mut theta = buffer(&b, &theta0);
        b.apply(&mut st, &mut theta, &gathered, 1, 1.0 / 3.0).unwrap();

        let (mut theta_ref, mut acc_ref) = (theta0.clone(), own_acc.clone());
        let model: Vec<(Vec<usize>, Vec<f32>)> = ranks.iter().map(|r| (r.0.clone(), r.1.clone())).collect();
        reference::apply(&mut theta_ref, &mut acc_ref, &model, 1, 1.0 / 3.0, error_feedback);
        let mut got = vec![0.0; n];
        b.download(&theta, &mut got).unwrap();
        assert_eq!(bits(&got), bits(&theta_ref), "{dtype:?}: theta differs");
        assert_eq!(bits(&read_acc(&b, &st, n)), bits(&acc_ref), "{dtype:?}: accumulator differs");

        // The workspaces were reset: a second apply of the same exchange
        // adds the same update again.
        b.apply(&mut st, &mut theta, &gathered, 1, 1.0 / 3.0).unwrap();
        reference::apply(&mut theta_ref, &mut acc_ref, &model, 1, 1.0 / 3.0, error_feedback);
        b.download(&theta, &mut got).unwrap();
        assert_eq!(bits(&got), bits(&theta_ref), "{dtype:?}: second apply differs");
    }
}

#[test]
fn apply_rejects_a_malformed_peer_buffer_untouched() {
    let b = CudaEmuBackend::new();
    let n = 5_000;
    let mut rng = Rng(19);
    let mut st = b.create_state(n, &config(Selection::TopK { ratio: 0.1 }, WireDtype::Bf16, true)).unwrap();
    let acc = rng.vec(n, 1.0);
    accumulate(&b, &mut st, &acc, &vec![1.0; n], 0.0);
    let good = reference::pack(&acc, &reference::top_k(&acc, 500), WireDtype::Bf16);
    let theta0 = rng.vec(n, 1.0);
    let mut theta = buffer(&b, &theta0);
    let truncated = &good[..good.len() - 4];
    let mut wrong_n = good.clone();
    wrong_n[8] ^= 1;
    for (bad, what) in [(truncated.to_vec(), "truncated"), (wrong_n, "wrong n"), (vec![0u8; 8], "short")] {
        let mut gathered = Gathered::new();
        gathered.reset(&[good.len() as u64, bad.len() as u64]).expect("lengths of real buffers");
        gathered.push_rank(&good);
        gathered.push_rank(&bad);
        let err = b.apply(&mut st, &mut theta, &gathered, 0, 0.5).unwrap_err();
        assert!(matches!(err, Error::InvalidPeerBuffer { rank: 1, .. }), "{what}: {err}");
    }
    let mut got = vec![0.0; n];
    b.download(&theta, &mut got).unwrap();
    assert_eq!(bits(&got), bits(&theta0));
    assert_eq!(bits(&read_acc(&b, &st, n)), bits(&acc));
}

#[test]
fn steps_follow_the_reference_model() {
    // accumulate -> commit -> select_pack -> apply, W = 1, five steps.
    let b = CudaEmuBackend::new();
    let n = 20_003;
    let ratio = 0.05;
    let dtype = WireDtype::Bf16;
    let mut st = b.create_state(n, &config(Selection::TopK { ratio }, dtype, true)).unwrap();
    let mut rng = Rng(23);
    let mut theta_ref = rng.vec(n, 1.0);
    let mut theta = buffer(&b, &theta_ref);
    let mut acc_ref = vec![0.0f32; n];
    let k = Selection::TopK { ratio }.k(n).unwrap();
    for step in 0..5 {
        let delta = rng.vec(n, 0.1);
        b.accumulate(&mut st, &buffer(&b, &delta), &theta, 0.0).unwrap();
        b.commit_accumulate(&mut st).unwrap();
        acc_ref.iter_mut().zip(&delta).for_each(|(a, d)| *a += d);
        let (sel, vals, bytes) = rank_buffer(&acc_ref, reference::top_k(&acc_ref, k), dtype);
        let packed = b.select_pack(&mut st).unwrap().to_vec();
        assert_eq!(packed, bytes, "step {step}: packed bytes");
        let mut gathered = Gathered::new();
        gathered.reset(&[packed.len() as u64]).expect("lengths of real buffers");
        gathered.push_rank(&packed);
        b.apply(&mut st, &mut theta, &gathered, 0, 1.0).unwrap();
        reference::apply(&mut theta_ref, &mut acc_ref, &[(sel, vals)], 0, 1.0, true);
        assert_eq!(bits(&read_acc(&b, &st, n)), bits(&acc_ref), "step {step}: accumulator");
    }
    let mut got = vec![0.0; n];
    b.download(&theta, &mut got).unwrap();
    assert_eq!(bits(&got), bits(&theta_ref));
}

#[test]
fn bad_lengths_are_typed_errors() {
    let b = CudaEmuBackend::new();
    let mut st = b.create_state(100, &SyncConfig::default()).unwrap();
    let short = b.alloc(99).unwrap();
    let ok = b.alloc(100).unwrap();
    assert!(matches!(b.accumulate(&mut st, &short, &ok, 0.1), Err(Error::LengthMismatch { .. })));
    let mut buf = b.alloc(10).unwrap();
    assert!(matches!(b.upload(&[0.0; 11], &mut buf), Err(Error::LengthMismatch { .. })));
    assert!(b.create_state(0, &SyncConfig::default()).is_err());
}

/// Runs the same two steps on the CPU backend and the emulated kernels and
/// demands identical packed bytes, accumulators and parameters for `TopK`
/// (and identical selections for the other rules whose cut does not depend
/// on a backend-specific rounding).
#[test]
fn matches_the_cpu_backend() {
    use chronos_sync::CpuBackend;
    let n = 70_001;
    for (selection, dtype) in [
        (Selection::TopK { ratio: 0.01 }, WireDtype::Bf16),
        (Selection::TopK { ratio: 0.2 }, WireDtype::F16),
        (Selection::TopKApprox { ratio: 0.01, slack: 0.5 }, WireDtype::F32),
        (Selection::Dense, WireDtype::Bf16),
    ] {
        let config = config(selection, dtype, true);
        let (cpu, emu) = (CpuBackend::new(), CudaEmuBackend::new());
        let mut cs = cpu.create_state(n, &config).unwrap();
        let mut es = emu.create_state(n, &config).unwrap();
        let mut rng = Rng(29);
        let theta0 = rng.vec(n, 1.0);
        let (mut ct, mut et) = (cpu.alloc(n).unwrap(), buffer(&emu, &theta0));
        cpu.upload(&theta0, &mut ct).unwrap();
        for step in 0..2 {
            let delta = if step == 1 { tied_values(&mut rng, n) } else { rng.vec(n, 0.1) };
            let mut cd = cpu.alloc(n).unwrap();
            cpu.upload(&delta, &mut cd).unwrap();
            let s_cpu = cpu.accumulate(&mut cs, &cd, &ct, 0.0).unwrap();
            let s_emu = emu.accumulate(&mut es, &buffer(&emu, &delta), &et, 0.0).unwrap();
            assert_eq!(s_cpu.nonfinite, s_emu.nonfinite);
            assert!((s_cpu.acc_sq - s_emu.acc_sq).abs() <= 1e-5 * s_cpu.acc_sq.max(1e-30));
            cpu.commit_accumulate(&mut cs).unwrap();
            emu.commit_accumulate(&mut es).unwrap();
            let p_cpu = cpu.select_pack(&mut cs).unwrap().to_vec();
            let p_emu = emu.select_pack(&mut es).unwrap().to_vec();
            assert_eq!(p_cpu.len(), p_emu.len(), "{selection:?} step {step}: packed length");
            assert!(p_cpu == p_emu, "{selection:?} {dtype:?} step {step}: packed bytes differ from CpuBackend");
            let mut g = Gathered::new();
            g.reset(&[p_cpu.len() as u64, p_cpu.len() as u64]).expect("lengths of real buffers");
            g.push_rank(&p_cpu);
            g.push_rank(&p_emu);
            cpu.apply(&mut cs, &mut ct, &g, 1, 0.5).unwrap();
            emu.apply(&mut es, &mut et, &g, 1, 0.5).unwrap();
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            cpu.read_accumulator(&cs, &mut a).unwrap();
            emu.read_accumulator(&es, &mut b).unwrap();
            assert_eq!(bits(&a), bits(&b), "{selection:?} step {step}: accumulators differ");
            cpu.download(&ct, &mut a).unwrap();
            emu.download(&et, &mut b).unwrap();
            assert_eq!(bits(&a), bits(&b), "{selection:?} step {step}: parameters differ");
        }
        println!("{selection:?} {dtype:?}: 2 steps identical to CpuBackend");
    }
}

/// 16-byte aligned host memory standing in for a framework's device tensor
/// on the emulation (whose device memory is host memory).
#[repr(C, align(16))]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Lane([f32; 4]);

fn callers_tensor(data: &[f32]) -> Vec<Lane> {
    let mut lanes = vec![Lane([0.0; 4]); data.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<Lane, f32>(&mut lanes)[..data.len()].copy_from_slice(data);
    lanes
}

/// The backend steps the caller's own memory, wrapped by address: the
/// caller writes its gradient in place and reads its parameters in place,
/// a step uploads neither tensor (only the exchange crosses), and the
/// results are the CPU backend's bits; bad wraps are typed errors.
#[test]
fn steps_callers_memory_without_copies() {
    let emu = CudaEmuBackend::new();
    let cpu = chronos_sync::CpuBackend::new();
    let n = 70_001; // not a multiple of 4: the kernels' scalar tail reads the caller's last element
    let mut rng = Rng(0xc0ffee);
    let theta0 = rng.vec(n, 1.0);
    let cfg = SyncConfig::builder().adaptive(false).threshold(0.0).wire_dtype(WireDtype::Bf16).build().unwrap();
    let mut theta_mem = callers_tensor(&theta0);
    let mut delta_mem = callers_tensor(&vec![0.0; n]);
    let one = || chronos_sync::LocalCollective::group(1, std::time::Duration::from_secs(60)).unwrap().remove(0);
    // SAFETY (both wraps): the Vecs outlive the engine's use of them below
    // and are only touched between steps, when no launch runs.
    let mut theta = unsafe { emu.wrap_device_memory(theta_mem.as_mut_ptr() as u64, n) }.expect("wrap theta");
    let delta = unsafe { emu.wrap_device_memory(delta_mem.as_mut_ptr() as u64, n) }.expect("wrap delta");
    assert_eq!(emu.buffer_len(&theta), n);
    let mut sync = chronos_sync::SparseSync::new(&emu, one(), n, cfg.clone()).expect("engine");
    let mut want = theta0.clone();
    let mut reference = chronos_sync::SparseSync::new(&cpu, one(), n, cfg).expect("reference engine");
    let mut synced = 0;
    for step in 0..5 {
        let update = rng.vec(n, 1e-2);
        // The framework writes its gradient into its own tensor.
        bytemuck::cast_slice_mut::<Lane, f32>(&mut delta_mem)[..n].copy_from_slice(&update);
        let before = emu.transfer_counts();
        let report = sync.step(&delta, &mut theta).expect("step");
        let spent = emu.transfer_counts().since(&before);
        // Only the exchange is uploaded (1% of bf16 entries plus tables),
        // never the 4n bytes of either tensor; after the first exchange
        // (which sizes the gathered staging) nothing is allocated.
        assert!(spent.h2d_bytes < n as u64, "step {step}: {} bytes uploaded for n = {n}", spent.h2d_bytes);
        if step > 0 {
            assert_eq!(spent.buffers_created, 0, "step {step}: device allocations");
        }
        let want_report = reference.step(&update, &mut want).expect("reference step");
        assert_eq!(report.synced, want_report.synced, "step {step}");
        synced += usize::from(report.synced);
        // The framework reads its parameters in place: no download.
        let got = &bytemuck::cast_slice::<Lane, f32>(&theta_mem)[..n];
        assert_eq!(bits(got), bits(&want), "step {step}: theta");
    }
    assert!(synced >= 4, "threshold 0 syncs (almost) every step, synced {synced}");
    drop(sync);
    drop(theta);

    let unsupported =
        |r: chronos_sync::Result<Buf>| matches!(r, Err(Error::Backend(chronos_sync::BackendError::Unsupported { .. })));
    let base = delta_mem.as_mut_ptr() as u64;
    // SAFETY (every call below): refused before any memory is touched.
    assert!(unsupported(unsafe { emu.wrap_device_memory(base + 4, 8) }), "misaligned for float4");
    assert!(unsupported(unsafe { emu.wrap_device_memory(base, 0) }), "zero elements");
    assert!(unsupported(unsafe { emu.wrap_device_memory(0, 8) }), "null");
    assert!(unsupported(unsafe { emu.wrap_device_memory(base, usize::MAX / 2) }), "4 * len overflows");
}
