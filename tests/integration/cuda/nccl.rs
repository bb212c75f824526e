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
