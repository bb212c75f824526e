//! The cudarc backend on a real GPU. Skips (with a message) when no GPU is
//! visible — the only CUDA test allowed to, since CI has no GPU.

use chronos_sync::backend::cuda::{CudaBackend, gpu_present};
use chronos_sync::{Backend, SyncConfig};

#[test]
fn cuda_backend_reports_a_typed_error_or_runs() {
    if !gpu_present() {
        // Without a GPU the constructor must fail cleanly, never panic.
        let err = CudaBackend::new(0).err().expect("no GPU, yet CudaBackend::new succeeded");
        println!("no GPU: CudaBackend::new(0) -> {err}");
        return;
    }
    let b = CudaBackend::new(0).expect("GPU present");
    println!("GPU backend: {}", b.name());
    let n = 1 << 20;
    let mut st = b.create_state(n, &SyncConfig::default()).unwrap();
    let delta = vec![0.5f32; n];
    let mut d = b.alloc(n).unwrap();
    b.upload(&delta, &mut d).unwrap();
    let t = b.alloc(n).unwrap();
    let status = b.accumulate(&mut st, &d, &t, 0.1).unwrap();
    assert_eq!(status.acc_sq, 0.25 * n as f32);
}

/// On the framework's own stream, the backend steps the framework's own
/// device memory, wrapped by address: neither tensor is uploaded or
/// downloaded by a step, and the parameters reach the CPU backend's bits.
/// Wrapping a misaligned address, a range past the allocation or host
/// memory is a typed error. Without a GPU there is no stream to build on.
#[test]
fn cuda_backend_on_callers_stream_steps_callers_memory() {
    use chronos_sync::cudarc::driver::{CudaContext, DevicePtr};
    if !gpu_present() {
        println!("no GPU: the caller's-stream test needs one");
        return;
    }
    let ctx = CudaContext::new(0).expect("context");
    let stream = ctx.new_stream().expect("the framework's stream");
    let backend = CudaBackend::on_stream(stream.clone(), std::time::Duration::from_secs(60)).expect("backend");
    let cpu = chronos_sync::CpuBackend::new();
    let n = 1_000_003;
    let theta0: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3).collect();
    let theta_mem = stream.clone_htod(&theta0).expect("the framework's parameters");
    let mut delta_mem = stream.alloc_zeros::<f32>(n).expect("the framework's gradient");
    let address = |mem: &chronos_sync::cudarc::driver::CudaSlice<f32>| {
        let (p, _sync) = mem.device_ptr(&stream);
        p
    };
    let cfg = SyncConfig::builder().adaptive(false).threshold(0.0).build().unwrap();
    let one = || chronos_sync::LocalCollective::group(1, std::time::Duration::from_secs(60)).unwrap().remove(0);
    // SAFETY (both wraps): the slices outlive the engine, and every access
    // to them below is on `stream`, the backend's own.
    let mut theta = unsafe { backend.wrap_device_memory(address(&theta_mem), n) }.expect("wrap theta");
    let delta = unsafe { backend.wrap_device_memory(address(&delta_mem), n) }.expect("wrap delta");
    let mut sync = chronos_sync::SparseSync::new(&backend, one(), n, cfg.clone()).expect("engine");
    let mut want = theta0.clone();
    let mut reference = chronos_sync::SparseSync::new(&cpu, one(), n, cfg).expect("reference engine");
    for step in 0..4u32 {
        let update: Vec<f32> = (0..n).map(|i| (((i as u32 ^ step) * 2654435761) >> 20) as f32 * 1e-6 - 2e-3).collect();
        // The framework writes its gradient on its stream.
        stream.memcpy_htod(&update, &mut delta_mem).expect("the framework's write");
        let before = backend.transfer_counts();
        let report = sync.step(&delta, &mut theta).expect("step");
        let spent = backend.transfer_counts().since(&before);
        assert!(spent.h2d_bytes < n as u64, "step {step}: {} bytes uploaded for n = {n}", spent.h2d_bytes);
        assert!(spent.d2h_bytes < n as u64, "step {step}: {} bytes read back for n = {n}", spent.d2h_bytes);
        let want_report = reference.step(&update, &mut want).expect("reference step");
        assert_eq!(report.synced, want_report.synced, "step {step}");
        let got = stream.clone_dtoh(&theta_mem).expect("the framework's read");
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "step {step}: theta");
    }
    drop(sync);
    drop(theta);
    let unsupported = |r: chronos_sync::Result<<CudaBackend as Backend>::Buffer>| {
        matches!(r, Err(chronos_sync::Error::Backend(chronos_sync::BackendError::Unsupported { .. })))
    };
    let base = address(&delta_mem);
    let host = vec![0.0f32; 64];
    // SAFETY (every call below): each is refused before memory is touched.
    unsafe {
        assert!(unsupported(backend.wrap_device_memory(base + 4, 8)), "misaligned");
        assert!(unsupported(backend.wrap_device_memory(base, n + 1)), "past the allocation");
        assert!(unsupported(backend.wrap_device_memory(host.as_ptr() as u64 & !15, 8)), "host memory");
    }
}
