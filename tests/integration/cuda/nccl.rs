//! The NCCL collective with one rank per visible GPU (threads of this
//! process). Needs a GPU and libnccl; skips with a message otherwise (no CI
//! runner has a GPU). Run on a GPU machine with
//! `cargo test --features cuda,nccl --test integration cuda::nccl -- --nocapture`.

use chronos_sync::backend::cuda::gpu_present;
use chronos_sync::collective::nccl::{NcclCollective, NcclId};
use chronos_sync::{Collective, Error, Gathered};
use cudarc::driver::CudaContext;
use std::time::Duration;

fn world() -> Option<usize> {
    if !gpu_present() {
        println!("SKIPPED: no GPU visible for the NCCL test");
        return None;
    }
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::nccl::sys::is_culib_present() } {
        println!("SKIPPED: libnccl not found");
        return None;
    }
    Some(CudaContext::device_count().ok()?.max(1) as usize)
}

fn join(rank: usize, world: usize, id: NcclId, timeout: Duration) -> NcclCollective {
    let ctx = CudaContext::new(rank).expect("context");
    NcclCollective::new(ctx.default_stream(), id, rank, world, timeout).expect("join")
}

#[test]
fn nccl_ranks_vote_count_and_exchange() {
    let Some(world) = world() else { return };
    let id = NcclId::new().unwrap();
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            std::thread::spawn(move || {
                let mut c = join(rank, world, id, Duration::from_secs(60));
                let mut vote = vec![0u32; 1 + world];
                vote[0] = rank as u32 * 3;
                vote[1 + rank] = 1;
                c.all_reduce_max(&mut vote).unwrap();
                assert_eq!(vote[0], (world as u32 - 1) * 3);
                assert!(vote[1..].iter().all(|&v| v == 1));
                for limit in [usize::MAX, 0] {
                    // Broadcast path, then padded all-gather path.
                    c.set_broadcast_limit(limit);
                    let mine: Vec<u8> = (0..(100 + 37 * rank)).map(|i| (i * 7 + rank) as u8).collect();
                    let mut lens = Vec::new();
                    c.all_gather_u64(mine.len() as u64, &mut lens).unwrap();
                    assert_eq!(lens, (0..world).map(|r| 100 + 37 * r as u64).collect::<Vec<_>>());
                    let mut out = Gathered::new();
                    c.all_gather_bytes(&mine, &lens, &mut out).unwrap();
                    for r in 0..world {
                        let want: Vec<u8> = (0..(100 + 37 * r)).map(|i| (i * 7 + r) as u8).collect();
                        assert_eq!(out.rank_bytes(r), &want[..], "rank {rank} sees rank {r}");
                    }
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    println!("NCCL exchange passed with {world} rank(s)");
}

#[test]
fn nccl_watchdog_aborts_a_missing_rank() {
    let Some(world) = world() else { return };
    if world < 2 {
        println!("SKIPPED: the watchdog test needs two GPUs");
        return;
    }
    let id = NcclId::new().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let idle = std::thread::spawn(move || {
        let _c = join(1, 2, id, Duration::from_secs(60));
        // Never enters the collective; waits until rank 0 has timed out.
        let _ = rx.recv_timeout(Duration::from_secs(60));
    });
    let mut c = join(0, 2, id, Duration::from_secs(2));
    let mut vote = vec![1u32; 3];
    let err = c.all_reduce_max(&mut vote).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(c.all_reduce_max(&mut vote).is_err(), "a broken group must stay broken");
    tx.send(()).unwrap();
    idle.join().unwrap();
}

/// One rank per GPU, the CUDA backend on each NCCL collective's own stream:
/// the engine exchanges in device memory (no packed byte crosses to the
/// host, counted) and every rank's parameters match the CPU backend's over
/// the in-process collective, bit for bit, after six syncing steps.
#[test]
fn nccl_device_exchange_matches_the_cpu_backend() {
    use chronos_sync::{CpuBackend, CudaBackend, LocalCollective, SparseSync, SyncConfig};
    let Some(world) = world() else { return };
    const N: usize = 300_007;
    let n = N;
    let cfg = SyncConfig::builder().adaptive(false).threshold(0.0).build().unwrap();
    let theta0: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3).collect();
    let update = |rank: usize, step: u32| -> Vec<f32> {
        (0..N)
            .map(|i| ((((i as u32) ^ step ^ (rank as u32 * 977)).wrapping_mul(2654435761)) >> 20) as f32 * 1e-6 - 2e-3)
            .collect()
    };
    // The reference: the CPU backend, `world` threads over LocalCollective.
    let want: Vec<Vec<f32>> = {
        let groups = LocalCollective::group(world, Duration::from_secs(60)).unwrap();
        let handles: Vec<_> = groups
            .into_iter()
            .enumerate()
            .map(|(rank, c)| {
                let (cfg, theta0) = (cfg.clone(), theta0.clone());
                std::thread::spawn(move || {
                    let mut sync = SparseSync::new(CpuBackend::with_threads(1).unwrap(), c, n, cfg).unwrap();
                    let mut theta = theta0;
                    for step in 0..6 {
                        sync.step(&update(rank, step), &mut theta).unwrap();
                    }
                    theta
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    };
    let id = NcclId::new().unwrap();
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let (cfg, theta0) = (cfg.clone(), theta0.clone());
            std::thread::spawn(move || {
                let nccl = join(rank, world, id, Duration::from_secs(60));
                let backend = CudaBackend::on_stream(nccl.stream().clone(), Duration::from_secs(60)).unwrap();
                assert_eq!(chronos_sync::Backend::device_memory(&backend), nccl.device_memory());
                let mut sync = SparseSync::new(&backend, nccl, n, cfg).unwrap();
                let mut theta = chronos_sync::Backend::alloc(&backend, n).unwrap();
                chronos_sync::Backend::upload(&backend, &theta0, &mut theta).unwrap();
                let mut delta = chronos_sync::Backend::alloc(&backend, n).unwrap();
                for step in 0..6 {
                    chronos_sync::Backend::upload(&backend, &update(rank, step), &mut delta).unwrap();
                    let before = backend.transfer_counts();
                    let report = sync.step(&delta, &mut theta).unwrap();
                    let spent = backend.transfer_counts().since(&before);
                    assert!(report.synced, "step {step}");
                    // One readback: the control block with the status, the
                    // pack info, the vote and every rank's length reduced
                    // and gathered on the device, and the last sync's
                    // verdicts; uploads: the spans. No packed byte.
                    let w = world as u64;
                    assert_eq!(spent.d2h_copies, 1, "step {step}: {spent:?}");
                    assert!(spent.d2h_bytes <= 64 + 4 * (1 + w) + 4 + 8 * w + 32 * w, "step {step}: {spent:?}");
                    assert!(spent.h2d_bytes <= 16 * world as u64, "step {step}: {spent:?}");
                }
                let mut got = vec![0.0f32; n];
                chronos_sync::Backend::download(&backend, &theta, &mut got).unwrap();
                got
            })
        })
        .collect();
    for (rank, h) in handles.into_iter().enumerate() {
        let got = h.join().unwrap();
        assert!(got.iter().zip(&want[rank]).all(|(a, b)| a.to_bits() == b.to_bits()), "rank {rank}: theta");
    }
    println!("NCCL device exchange matched the CPU backend with {world} rank(s)");
}
