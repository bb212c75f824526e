//! Corrupt peer buffers: every backend's `validate_peers` (the host
//! validator by default, `kernels/validate.cu` on the CUDA backends) must
//! return exactly the host validator's error for the same bytes, naming the
//! first failing rank; and a buffer corrupted in transit fails the step on
//! every rank with that error, leaving the parameters as they were.

use crate::common::{SplitMix64, Synthetic, assert_bitwise_eq, initial_params};
use chronos_sync::backend::HostPeerCheck;
use chronos_sync::collective::{Collective, DeviceBytes, DeviceMemory, Gathered};
use chronos_sync::wire::{PackedDelta, Validator, checksum::checksum, layout::Layout};
use chronos_sync::{Backend, Error, LocalCollective, SparseSync, SyncConfig, WireDtype, WireError};
use std::borrow::{Borrow, BorrowMut};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const CHUNK: u64 = 65_536;
/// Three chunks, the last of 40 elements (stray bitmap bits are possible).
const N: u64 = 2 * CHUNK + 40;

/// A valid buffer for `N` elements: chunk 0 a list of 5 (with a pad),
/// chunk 1 a bitmap of 5000 entries, chunk 2 a bitmap of 10 entries or, with
/// `tail_list`, a list of 3 (with a pad).
fn shape(dtype: WireDtype, tail_list: bool) -> (Layout, Vec<u8>) {
    let mut indices = vec![3, 9, 100, 40_000, 65_535];
    indices.extend((0..5000).map(|i| CHUNK + 13 * i));
    if tail_list {
        indices.extend([2 * CHUNK + 1, 2 * CHUNK + 17, 2 * CHUNK + 39]);
    } else {
        indices.extend((0..10).map(|i| 2 * CHUNK + 3 * i + 1));
    }
    let values = (0..indices.len()).map(|i| (i as f32) * 0.37 - 900.0).collect();
    let d = PackedDelta::new(N, dtype, indices, values).expect("a valid delta");
    (d.layout(), d.encode().expect("encodes"))
}

/// Rewrites the checksum, so that a corruption is judged on its structure.
fn reseal(b: &mut [u8]) {
    if let Some(sum) = checksum(b) {
        b[24..28].copy_from_slice(&sum.to_le_bytes());
    }
}

fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The host validator's verdict on `ranks`, as the engine reports it.
fn host_verdict(ranks: &[Vec<u8>], dtype: WireDtype) -> Result<(), (usize, WireError)> {
    let mut v = Validator::for_len(N);
    for (r, b) in ranks.iter().enumerate() {
        v.validate(b, N, dtype).map_err(|e| (r, e))?;
    }
    Ok(())
}

fn backend_verdict<B: Backend>(
    backend: &B,
    state: &mut B::State,
    ranks: &[Vec<u8>],
    dtype: WireDtype,
) -> Result<(), (usize, WireError)> {
    let mut g = Gathered::new();
    for b in ranks {
        g.push_rank(b);
    }
    let mut v = Validator::for_len(N);
    match backend.validate_peers(state, &g, HostPeerCheck::new(&mut v, N, dtype)) {
        Ok(()) => Ok(()),
        Err(Error::InvalidPeerBuffer { rank, source }) => Err((rank, source)),
        Err(other) => panic!("validate_peers failed outside validation: {other}"),
    }
}

type Edit = fn(&Layout, &mut Vec<u8>);

/// One targeted corruption per check, in the validator's order.
fn edits() -> Vec<(&'static str, Edit, bool)> {
    // (name, edit, reseal afterwards)
    vec![
        ("short header", |_, b| b.truncate(20), false),
        ("one word short", |_, b| b.truncate(b.len() - 4), true),
        ("one word long", |_, b| b.extend([0; 4]), true),
        ("magic", |_, b| b[0] = b'X', true),
        ("version", |_, b| b[4] = 2, true),
        ("dtype code", |_, b| b[6] = 3, true),
        ("reserved byte 7", |_, b| b[7] = 1, true),
        ("reserved byte 30", |_, b| b[30] = 4, true),
        ("table past the end", |_, b| b[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes()), true),
        ("chunk 2 overfull", |_, b| set_u32(b, 40, 41), true),
        ("chunk 0 overfull", |_, b| set_u32(b, 32, 65_537), true),
        ("header count", |_, b| b[16] ^= 1, true),
        ("table count", |_, b| set_u32(b, 32, 4), true),
        ("list misordered", |l, b| b[l.index_offsets[0] as usize + 2] = 3, true),
        (
            "list repeated",
            |l, b| {
                b[l.index_offsets[0] as usize + 8..l.index_offsets[0] as usize + 10]
                    .copy_from_slice(&100u16.to_le_bytes())
            },
            true,
        ),
        ("list pad", |l, b| b[l.index_offsets[0] as usize + 11] = 1, true),
        (
            "chunk 2 list out of range",
            |l, b| {
                let at = l.index_offsets[2] as usize + 4;
                b[at..at + 2].copy_from_slice(&40u16.to_le_bytes());
            },
            true,
        ),
        ("chunk 2 list pad", |l, b| b[l.index_offsets[2] as usize + 6] = 9, true),
        ("bitmap bit set", |l, b| b[l.index_offsets[1] as usize + 1] ^= 0x10, true),
        ("bitmap bit cleared", |l, b| b[l.index_offsets[1] as usize] ^= 1 << 0, true),
        ("chunk 2 stray bit", |l, b| b[l.index_offsets[2] as usize + 5] |= 2, true),
        (
            "first value non-finite",
            |l, b| {
                let at = l.values_offset() as usize;
                let bits: &[u8] = match l.dtype {
                    WireDtype::F32 => &[0, 0, 0x80, 0x7f],
                    WireDtype::F16 => &[0, 0x7c],
                    _ => &[0x80, 0x7f],
                };
                b[at..at + bits.len()].copy_from_slice(bits);
            },
            true,
        ),
        (
            "later value NaN",
            |l, b| {
                let size = l.dtype.size();
                let at = l.values_offset() as usize + 4321 * size;
                b[at + size - 1] = 0xff;
                b[at + size - 2] = 0xff;
            },
            true,
        ),
        (
            "values pad",
            |_, b| {
                let last = b.len() - 1;
                b[last] = 7;
            },
            true,
        ),
        ("checksum", |l, b| b[l.values_offset() as usize] ^= 1, false),
        ("checksum field", |_, b| b[25] ^= 0x40, false),
    ]
}

/// Every targeted corruption, on every dtype and both shapes, in the second
/// of two ranks and then in both (the first rank is named): the backend's
/// verdict is the host validator's. Then 150 random mutations per dtype
/// (byte writes with and without a new checksum, cuts, extensions): the same.
pub fn corrupt_peer_buffers_get_the_host_validators_errors<B: Backend>(backend: &Arc<B>) {
    let mut kinds = HashSet::new();
    for dtype in [WireDtype::F32, WireDtype::F16, WireDtype::Bf16] {
        let config = SyncConfig::builder().wire_dtype(dtype).build().unwrap();
        let mut state = backend.create_state(N as usize, &config).unwrap();
        for tail_list in [false, true] {
            let (layout, good) = shape(dtype, tail_list);
            assert_eq!(backend_verdict(&**backend, &mut state, &[good.clone(), good.clone()], dtype), Ok(()));
            for (name, edit, seal) in edits() {
                let mut bad = good.clone();
                edit(&layout, &mut bad);
                if seal {
                    reseal(&mut bad);
                }
                for ranks in [vec![good.clone(), bad.clone()], vec![bad.clone(), bad.clone(), good.clone()]] {
                    let want = host_verdict(&ranks, dtype);
                    let got = backend_verdict(&**backend, &mut state, &ranks, dtype);
                    assert_eq!(got, want, "{dtype:?}, tail list {tail_list}: {name}");
                    if let Err((_, e)) = &want {
                        kinds.insert(std::mem::discriminant(e));
                    }
                }
            }
        }
        // Well formed, but for another n or dtype: the last check.
        let other_n = PackedDelta::new(N - 1, dtype, vec![7], vec![1.0]).unwrap().encode().unwrap();
        let other_dtype = if dtype == WireDtype::F32 { WireDtype::Bf16 } else { WireDtype::F32 };
        let other_d = PackedDelta::new(N, other_dtype, vec![7], vec![1.0]).unwrap().encode().unwrap();
        for bad in [other_n, other_d] {
            let ranks = [shape(dtype, false).1, bad];
            let want = host_verdict(&ranks, dtype);
            assert!(matches!(want, Err((1, WireError::Mismatch { .. }))), "{want:?}");
            kinds.insert(std::mem::discriminant(&want.clone().unwrap_err().1));
            assert_eq!(backend_verdict(&**backend, &mut state, &ranks, dtype), want);
        }
        let mut rng = SplitMix64::new(0xC0FF_EE00 ^ u64::from(dtype.code()));
        for case in 0..150 {
            let (_, mut bad) = shape(dtype, rng.below(2) == 1);
            let what = rng.below(4);
            match what {
                0 | 1 => {
                    for _ in 0..=rng.below(3) {
                        let at = rng.below(bad.len() as u64) as usize;
                        bad[at] = rng.next_u64() as u8;
                    }
                    if what == 0 {
                        reseal(&mut bad);
                    }
                }
                2 => bad.truncate(rng.below(bad.len() as u64) as usize),
                _ => {
                    let extra = rng.below(9) as usize;
                    bad.extend((0..extra).map(|_| rng.next_u64() as u8));
                    reseal(&mut bad);
                }
            }
            let ranks = [shape(dtype, false).1, bad];
            let want = host_verdict(&ranks, dtype);
            assert_eq!(backend_verdict(&**backend, &mut state, &ranks, dtype), want, "{dtype:?}, random case {case}");
        }
    }
    assert!(kinds.len() >= 14, "the corruptions reach only {} kinds of error", kinds.len());
}

/// Forwards to `inner`, but on its `at`-th byte exchange (from 1) hands the
/// engine rank `victim`'s bytes with one byte flipped (on every rank alike:
/// a buffer corrupted in transit), keeping a copy of what it handed over.
/// In the emulation's device memory too, so that path's validation is held
/// to the same verdict.
struct Corrupting<C> {
    inner: C,
    calls: u32,
    at: u32,
    victim: usize,
    seen: Arc<Mutex<Option<Vec<u8>>>>,
}

impl<C: Collective> Collective for Corrupting<C> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world_size(&self) -> usize {
        self.inner.world_size()
    }
    fn timeout(&self) -> Duration {
        self.inner.timeout()
    }
    fn all_reduce_max(&mut self, values: &mut [u32]) -> chronos_sync::Result<()> {
        self.inner.all_reduce_max(values)
    }
    fn all_gather_u64(&mut self, value: u64, out: &mut Vec<u64>) -> chronos_sync::Result<()> {
        self.inner.all_gather_u64(value, out)
    }
    fn all_gather_bytes(&mut self, send: &[u8], lens: &[u64], out: &mut Gathered) -> chronos_sync::Result<()> {
        self.inner.all_gather_bytes(send, lens, out)?;
        self.calls += 1;
        if self.calls == self.at {
            let mut ranks: Vec<Vec<u8>> = (0..out.ranks()).map(|r| out.rank_bytes(r).to_vec()).collect();
            // A value byte of the victim's first entry: a checksum failure,
            // or a non-finite value, whichever the bits make it.
            let v = &mut ranks[self.victim];
            let at = v.len() - 3;
            v[at] ^= 0x5a;
            out.clear();
            for r in &ranks {
                out.push_rank(r);
            }
            *self.seen.lock().unwrap() = Some(ranks[self.victim].clone());
        }
        Ok(())
    }
    fn device_memory(&self) -> Option<DeviceMemory> {
        // The emulation's device memory is this process's, so a corruption
        // in transit can be made there too; a GPU's stays host-staged.
        self.inner.device_memory().filter(|&m| m == DeviceMemory::Emulated)
    }
    unsafe fn all_gather_device(
        &mut self,
        send: DeviceBytes,
        lens: &[u64],
        recv: DeviceBytes,
    ) -> chronos_sync::Result<()> {
        // SAFETY: the caller's contract is the inner call's.
        unsafe { self.inner.all_gather_device(send, lens, recv) }?;
        self.calls += 1;
        if self.calls == self.at {
            let start: usize = lens[..self.victim].iter().map(|&l| l as usize).sum();
            let len = lens[self.victim] as usize;
            // SAFETY: emulated device memory is host memory; the victim's
            // bytes lie inside `recv` (the inner call checked the lengths),
            // which nothing else touches until this returns.
            let v = unsafe { std::slice::from_raw_parts_mut((recv.ptr as usize as *mut u8).add(start), len) };
            v[len - 3] ^= 0x5a;
            *self.seen.lock().unwrap() = Some(v.to_vec());
        }
        Ok(())
    }
    unsafe fn all_reduce_max_device(&mut self, words: DeviceBytes) -> chronos_sync::Result<()> {
        // SAFETY: the caller's contract is the inner call's.
        unsafe { self.inner.all_reduce_max_device(words) }
    }
    unsafe fn all_gather_u64_device(&mut self, send: DeviceBytes, recv: DeviceBytes) -> chronos_sync::Result<()> {
        // SAFETY: the caller's contract is the inner call's.
        unsafe { self.inner.all_gather_u64_device(send, recv) }
    }
}

/// Three ranks; at the second sync every rank receives rank 1's buffer with
/// one byte flipped. Every rank fails that step with `InvalidPeerBuffer`
/// naming rank 1 and the host validator's error for those bytes, its
/// parameters untouched and the step counted as taken without a sync; the
/// next step syncs and the replicas agree.
///
/// A backend that validates a device exchange asynchronously (the CUDA
/// emulation over `LocalCollective`) returns `Ok` from the corrupted step
/// and the error from the next call: run once with `settle` after the
/// corrupted step, and once without, where the next step must report it
/// before taking anything. All three runs end with the same parameters.
pub fn corrupted_in_transit_fails_every_rank_alike<B: Backend>(backend: &Arc<B>) {
    let settled = corrupted_in_transit_run(backend, true);
    let next_step = corrupted_in_transit_run(backend, false);
    for (r, (a, b)) in settled.iter().zip(&next_step).enumerate() {
        assert_bitwise_eq(&format!("rank {r}: reported by settle vs by the next step"), a, b);
    }
}

fn corrupted_in_transit_run<B: Backend>(backend: &Arc<B>, settle: bool) -> Vec<Vec<f32>> {
    let (world, n) = (3usize, 70_000usize);
    let config = SyncConfig::builder().adaptive(false).threshold(0.0).wire_dtype(WireDtype::Bf16).build().unwrap();
    let theta0 = initial_params(3, n, 1.0);
    let updates = Synthetic::new(4);
    let handles = LocalCollective::group(world, Duration::from_secs(60)).unwrap();
    let finals: Vec<Vec<f32>> = thread::scope(|s| {
        let joins: Vec<_> = handles
            .into_iter()
            .enumerate()
            .map(|(rank, c)| {
                let (backend, config, theta0, updates) = (Arc::clone(backend), config.clone(), &theta0, &updates);
                s.spawn(move || {
                    let seen = Arc::new(Mutex::new(None));
                    let wrap = Corrupting { inner: c, calls: 0, at: 2, victim: 1, seen: Arc::clone(&seen) };
                    let mut sync = SparseSync::new(Arc::clone(&backend), wrap, n, config).unwrap();
                    let mut theta = backend.alloc(n).unwrap();
                    backend.upload(theta0, theta.borrow_mut()).unwrap();
                    let mut delta = backend.alloc(n).unwrap();
                    let mut step = |sync: &mut SparseSync<Arc<B>, _>, t: u64, theta: &mut B::Buffer| {
                        backend.upload(&updates.delta(rank, t, n), delta.borrow_mut()).unwrap();
                        sync.step(delta.borrow(), theta.borrow_mut())
                    };
                    step(&mut sync, 1, &mut theta).unwrap();
                    let mut before = vec![0.0; n];
                    backend.download(theta.borrow(), &mut before).unwrap();
                    // The exchange is in device memory exactly when the
                    // backend's is the emulation's (see `Corrupting`), and
                    // the emulated CUDA backend validates it asynchronously.
                    let deferred = backend.device_memory() == Some(DeviceMemory::Emulated);
                    let err = match step(&mut sync, 2, &mut theta) {
                        Err(e) => {
                            assert!(!deferred, "rank {rank}: a device exchange is validated asynchronously");
                            e
                        }
                        // Validated asynchronously: reported by the next call.
                        Ok(report) => {
                            assert!(deferred, "rank {rank}: a host exchange is validated at once");
                            assert!(report.synced, "rank {rank}: the step synced as far as it knew");
                            // A checkpoint now already holds the counters the
                            // verdict will restore.
                            let early = sync.checkpoint().unwrap();
                            let next = if settle { sync.settle() } else { step(&mut sync, 3, &mut theta).map(|_| ()) };
                            let err = next.expect_err("a corrupted buffer must be reported");
                            assert!(sync.checkpoint().unwrap() == early, "rank {rank}: checkpoint before the verdict");
                            err
                        }
                    };
                    let bytes = seen.lock().unwrap().clone().expect("the exchange was corrupted");
                    let want = Validator::for_len(n as u64).validate(&bytes, n as u64, WireDtype::Bf16).unwrap_err();
                    match err {
                        Error::InvalidPeerBuffer { rank: 1, source } => assert_eq!(source, want, "rank {rank}"),
                        other => panic!("rank {rank}: expected InvalidPeerBuffer from rank 1, got {other:?}"),
                    }
                    assert_eq!((sync.steps(), sync.steps_since_sync()), (2, 1), "rank {rank}: step 2 taken, no sync");
                    sync.settle().expect("each sync is settled once");
                    let mut after = vec![0.0; n];
                    backend.download(theta.borrow(), &mut after).unwrap();
                    assert_bitwise_eq("params untouched by the failed step", &after, &before);
                    step(&mut sync, 3, &mut theta).unwrap();
                    sync.settle().expect("the retried exchange is valid");
                    backend.download(theta.borrow(), &mut after).unwrap();
                    after
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().expect("rank thread panicked")).collect()
    });
    for (r, t) in finals.iter().enumerate() {
        assert_bitwise_eq(&format!("rank {r} vs 0"), t, &finals[0]);
    }
    finals
}
