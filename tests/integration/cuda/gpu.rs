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
