//! Zero heap allocations per step after warm-up.
//!
//! A separate test binary because it installs a counting
//! `#[global_allocator]`, and without libtest's harness (`harness = false`)
//! because the count is process-wide (the work runs on rayon's threads and on
//! rank threads) and libtest's own threads allocate while tests run.
//!
//! For 1 and 2 in-process ranks (`LocalCollective`) and every selection rule,
//! each `SparseSync<CpuBackend, LocalCollective>` (and, at 2 ranks, a
//! `SyncGroup` of three buckets that are slices of the same caller-owned
//! vectors) runs warm-up steps that
//! include syncs, then more steps with the counter armed: syncs forced every
//! third step (non-triggering and syncing steps), and a configuration that
//! triggers every step. Any allocation on the step's path fails the test
//! (rayon's injector blocks are counted apart and only bounded, see
//! `is_rayon_injector`), and the failure prints the
//! distinct allocation sites with their counts (the innermost frames below
//! the allocator). `CHRONOS_ALLOC_FULL_TRACES=1` prints each site's whole
//! backtrace; `CHRONOS_ALLOC_TRACES=0` turns the site search off.

use chronos_sync::{
    BucketStep, Collective, CpuBackend, LocalCollective, Selection, SparseSync, SyncConfig, SyncGroup, WireDtype,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

/// Elements per vector: several wire chunks and several rayon tasks per thread.
const N: usize = 1 << 18;
const WARMUP_STEPS: usize = 9;
const MEASURED_STEPS: usize = 12;
/// Distinct allocation sites kept for the report.
const MAX_SITES: usize = 16;
/// Allocations per window whose backtrace is taken (symbolizing is slow).
const MAX_CLASSIFIED: u64 = 200;
/// Frames shown per site.
const SITE_FRAMES: usize = 6;

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Allocations made by rayon's global injector queue (see `is_rayon_injector`).
static RAYON_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Allocations made inside wgpu's own code (see `is_inside_wgpu`).
static DRIVER_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Allocations per window whose backtrace is taken (symbolizing is slow);
/// every one when a wgpu engine is measured, whose driver allocates.
static CLASSIFY_LIMIT: AtomicU64 = AtomicU64::new(MAX_CLASSIFIED);
/// `(site, count, first backtrace)` per distinct allocation site.
static SITES: Mutex<Vec<(String, u64, String)>> = Mutex::new(Vec::new());
static WANT_TRACES: AtomicBool = AtomicBool::new(true);

thread_local! {
    /// Set while this thread is inside the hook, so that the hook's own
    /// allocations (the backtrace) are neither counted nor traced.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

fn note_alloc() {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let reentered = IN_HOOK.try_with(|h| h.replace(true)).unwrap_or(true);
    if reentered {
        return;
    }
    let seen =
        ALLOCS.load(Ordering::Relaxed) + RAYON_ALLOCS.load(Ordering::Relaxed) + DRIVER_ALLOCS.load(Ordering::Relaxed);
    let classified = seen < CLASSIFY_LIMIT.load(Ordering::Relaxed);
    if classified && WANT_TRACES.load(Ordering::Relaxed) {
        let trace = std::backtrace::Backtrace::force_capture().to_string();
        let site = allocation_site(&trace);
        if is_rayon_injector(&site) {
            RAYON_ALLOCS.fetch_add(1, Ordering::Relaxed);
        } else if is_inside_wgpu(&trace) {
            DRIVER_ALLOCS.fetch_add(1, Ordering::Relaxed);
            let _ = IN_HOOK.try_with(|h| h.set(false));
            return;
        } else {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        let mut sites = SITES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, count, _)) = sites.iter_mut().find(|(s, _, _)| *s == site) {
            *count += 1;
        } else if sites.len() < MAX_SITES {
            sites.push((site, 1, trace));
        }
    } else {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
    let _ = IN_HOOK.try_with(|h| h.set(false));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// hook only counts and never touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The first `SITE_FRAMES` frames of `trace` below the allocator itself
/// (function names only), which tell where an allocation comes from.
fn allocation_site(trace: &str) -> String {
    let frames = trace
        .lines()
        .map(str::trim)
        .filter(|l| l.split_once(": ").is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit())))
        .map(|l| l.split_once(": ").map(|(_, f)| f).unwrap_or(l))
        .skip_while(|f| {
            ["std::backtrace", "alloc::", "core::", "<alloc::", "alloc_test", "__rust", "<alloc::Counting"]
                .iter()
                .any(|p| f.starts_with(p))
                || f.contains("note_alloc")
                || f.contains("GlobalAlloc")
        });
    frames.take(SITE_FRAMES).collect::<Vec<_>>().join(" <- ")
}

/// Rayon's global pool takes jobs from threads outside it through a
/// crossbeam `Injector`, which allocates one block per 63 jobs pushed (and
/// frees it once drained): an amortized cost of rayon itself, not of a
/// step's code path, counted apart and bounded in `main`.
fn is_rayon_injector(site: &str) -> bool {
    site.starts_with("crossbeam_deque::deque::Block<T>::new") && site.contains("rayon_core::registry::Registry::inject")
}

/// Whether the allocation happened inside a call into wgpu (its API crate,
/// wgpu-core, wgpu-hal or naga): command encoders, submissions, queue
/// writes and buffer mappings allocate there on every call, which no caller
/// can avoid; they are counted apart and reported. Frames of this crate's
/// own wgpu backend start with `chronos_sync`, so they never match.
fn is_inside_wgpu(trace: &str) -> bool {
    trace.lines().filter_map(|l| l.trim().split_once(": ").map(|(_, f)| f)).any(|f| {
        ["wgpu::", "wgpu_core::", "wgpu_hal::", "wgpu_types::", "naga::", "<wgpu", "<naga"]
            .iter()
            .any(|p| f.starts_with(p))
    })
}

fn arm() {
    ALLOCS.store(0, Ordering::SeqCst);
    RAYON_ALLOCS.store(0, Ordering::SeqCst);
    DRIVER_ALLOCS.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
}

/// Stops counting; returns `(allocations, rayon injector allocations)`.
fn disarm() -> (u64, u64) {
    ARMED.store(false, Ordering::SeqCst);
    (ALLOCS.load(Ordering::SeqCst), RAYON_ALLOCS.load(Ordering::SeqCst))
}

/// Fills `buf` with uniform values in `[-scale/2, scale/2)` from `seed` (an LCG, no allocation).
fn fill(buf: &mut [f32], seed: u64, scale: f32) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for x in buf {
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        *x = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale;
    }
}

struct Case {
    name: &'static str,
    config: SyncConfig,
}

fn cases() -> Vec<Case> {
    let forced = |sel| {
        SyncConfig::builder()
            .adaptive(false)
            .threshold(1e30)
            .max_threshold(1e30)
            .max_accumulation_steps(3)
            .selection(sel)
            .wire_dtype(WireDtype::Bf16)
            .build()
            .expect("valid config")
    };
    vec![
        Case { name: "TopK 1%, sync every 3rd step", config: forced(Selection::TopK { ratio: 0.01 }) },
        Case {
            name: "TopKApprox 5%, sync every 3rd step",
            config: forced(Selection::TopKApprox { ratio: 0.05, slack: 0.5 }),
        },
        Case { name: "Threshold 2 rms, sync every 3rd step", config: forced(Selection::Threshold { rel: 2.0 }) },
        Case {
            name: "Dense f32, sync every 3rd step",
            config: {
                let mut c = forced(Selection::Dense);
                c.wire_dtype = WireDtype::F32;
                c
            },
        },
        Case {
            name: "default config, threshold 0 (triggers every step)",
            config: SyncConfig::builder()
                .adaptive(false)
                .threshold(0.0)
                .min_threshold(0.0)
                .build()
                .expect("valid config"),
        },
    ]
}

/// Bucket boundaries of the grouped engine inside the N-element arena:
/// three buckets of unequal lengths, each a slice of the caller's vectors.
const SPLITS: [usize; 2] = [N / 2, N / 2 + N / 4 + 3];

/// The engine under test: one `SparseSync` over the whole vector, or a
/// `SyncGroup` of three buckets stepping slices of the same vectors.
enum Engine {
    Single(SparseSync<CpuBackend, LocalCollective>),
    Grouped(SyncGroup<CpuBackend, LocalCollective>),
}

impl Engine {
    fn new(grouped: bool, c: LocalCollective, config: &SyncConfig) -> Engine {
        if !grouped {
            return Engine::Single(SparseSync::new(CpuBackend::new(), c, N, config.clone()).expect("new"));
        }
        let mut group = SyncGroup::new(CpuBackend::new(), c).expect("group");
        let mut start = 0;
        for end in SPLITS.into_iter().chain([N]) {
            group.add_bucket(end - start, config.clone()).expect("bucket");
            start = end;
        }
        Engine::Grouped(group)
    }

    /// One step; whether it (bucket 0, for a group) synced.
    fn step(&mut self, delta: &[f32], theta: &mut [f32]) -> bool {
        match self {
            Engine::Single(sync) => sync.step(delta, theta).expect("step").synced,
            Engine::Grouped(group) => {
                let (d0, d_rest) = delta.split_at(SPLITS[0]);
                let (d1, d2) = d_rest.split_at(SPLITS[1] - SPLITS[0]);
                let (t0, t_rest) = theta.split_at_mut(SPLITS[0]);
                let (t1, t2) = t_rest.split_at_mut(SPLITS[1] - SPLITS[0]);
                let mut steps = [
                    BucketStep { delta: d0, params: t0 },
                    BucketStep { delta: d1, params: t1 },
                    BucketStep { delta: d2, params: t2 },
                ];
                group.step(&mut steps).expect("grouped step");
                group.reports()[0].synced
            }
        }
    }
}

/// The measured window the rank threads and the counting thread share.
struct Window {
    barrier: Barrier,
    synced: AtomicU64,
}

impl Window {
    /// Every rank calls this after its warm-up; it returns once the counter is armed.
    fn open(&self) {
        self.barrier.wait();
        self.barrier.wait();
    }

    /// Every rank calls this after its measured steps, before dropping its
    /// engine (a drop may allocate); it returns once the counter is disarmed.
    fn close(&self) {
        self.barrier.wait();
        self.barrier.wait();
    }

    /// Counts a measured step that synced (call it on one rank).
    fn record_sync(&self) {
        self.synced.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `rank_body` on one thread per rank of a `world`-rank group, arming
/// the counter between the ranks' [`Window::open`] and [`Window::close`];
/// returns the allocations counted (step path, rayon injector) and the
/// measured steps recorded as synced.
fn measure_ranks(world: usize, rank_body: impl Fn(LocalCollective, &Window) + Sync) -> ((u64, u64), usize) {
    let collectives = LocalCollective::group(world, Duration::from_secs(60)).expect("group");
    let window = Window { barrier: Barrier::new(world + 1), synced: AtomicU64::new(0) };
    let mut count = (0, 0);
    std::thread::scope(|s| {
        for c in collectives {
            let (window, rank_body) = (&window, &rank_body);
            std::thread::Builder::new()
                .name(format!("rank-{}", c.rank()))
                .spawn_scoped(s, move || rank_body(c, window))
                .expect("spawn rank");
        }
        window.barrier.wait(); // warm-up done on every rank
        arm();
        window.barrier.wait();
        window.barrier.wait(); // measured steps done
        count = disarm();
        window.barrier.wait();
    });
    (count, window.synced.load(Ordering::Relaxed) as usize)
}

/// Runs `case` on `world` ranks; returns the allocations counted during the
/// measured steps (step path, rayon injector) and how many of them synced.
fn run_case(case: &Case, world: usize, grouped: bool) -> ((u64, u64), usize) {
    measure_ranks(world, |c, window| {
        let rank = c.rank() as u64;
        let mut engine = Engine::new(grouped, c, &case.config);
        let mut theta = vec![0.0f32; N];
        fill(&mut theta, 1, 2.0);
        let mut delta = vec![0.0f32; N];
        for t in 0..WARMUP_STEPS + MEASURED_STEPS {
            fill(&mut delta, 100 * rank + t as u64 % 4, 1e-3);
            if t == WARMUP_STEPS {
                window.open();
            }
            let synced_now = engine.step(&delta, &mut theta);
            if t >= WARMUP_STEPS && synced_now && rank == 0 {
                window.record_sync();
            }
        }
        window.close();
    })
}

/// Runs `case` on `world` ranks of a device backend (one backend per rank,
/// made by `make`), with the updates uploaded to the device during warm-up
/// so that the measured window holds the engine's steps only. Returns the
/// allocations counted (step path, rayon injector, inside wgpu) and how
/// many of the measured steps synced.
#[cfg(any(feature = "cuda-emu", feature = "wgpu"))]
fn run_device_case<B: chronos_sync::Backend + 'static>(
    make: &(dyn Fn() -> B + Sync),
    case: &Case,
    world: usize,
) -> ((u64, u64, u64), usize) {
    use std::borrow::{Borrow, BorrowMut};
    use std::sync::Arc;
    let ((allocs, rayon), synced) = measure_ranks(world, |c, window| {
        let rank = c.rank() as u64;
        let b = Arc::new(make());
        let mut host = vec![0.0f32; N];
        fill(&mut host, 1, 2.0);
        let mut theta = b.alloc(N).expect("alloc");
        b.upload(&host, theta.borrow_mut()).expect("upload");
        let deltas: Vec<B::Buffer> = (0..4)
            .map(|v| {
                fill(&mut host, 100 * rank + v, 1e-3);
                let mut d = b.alloc(N).expect("alloc");
                b.upload(&host, d.borrow_mut()).expect("upload");
                d
            })
            .collect();
        let mut sync = SparseSync::new(Arc::clone(&b), c, N, case.config.clone()).expect("engine");
        for t in 0..WARMUP_STEPS + MEASURED_STEPS {
            if t == WARMUP_STEPS {
                window.open();
            }
            let report = sync.step(deltas[t % 4].borrow(), theta.borrow_mut()).expect("step");
            if t >= WARMUP_STEPS && report.synced && rank == 0 {
                window.record_sync();
            }
        }
        window.close();
    });
    // Counted only while armed: the value the window left.
    ((allocs, rayon, DRIVER_ALLOCS.load(Ordering::SeqCst)), synced)
}

/// The device engines: the CUDA kernels' CPU emulation and wgpu (lavapipe
/// without a GPU), 1 and 2 ranks, every case. Zero allocations on the step
/// path; wgpu's own allocations inside its API calls are counted apart and
/// printed. Returns the failures.
#[cfg(any(feature = "cuda-emu", feature = "wgpu"))]
fn device_cases() -> Vec<String> {
    let mut failures = Vec::new();
    #[allow(clippy::type_complexity)]
    let mut engines: Vec<(&str, Box<dyn Fn(&Case, usize) -> ((u64, u64, u64), usize)>)> = Vec::new();
    #[cfg(feature = "cuda-emu")]
    engines
        .push(("cuda-emu", Box::new(|case, world| run_device_case(&chronos_sync::CudaEmuBackend::new, case, world))));
    #[cfg(feature = "wgpu")]
    match chronos_sync::WgpuBackend::new() {
        Ok(probe) => {
            println!("alloc: wgpu on {}", probe.adapter_name());
            drop(probe);
            let make = || chronos_sync::WgpuBackend::new().expect("wgpu backend");
            engines.push(("wgpu", Box::new(move |case, world| run_device_case(&make, case, world))));
        }
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            failures.push(format!("wgpu unavailable under CI: {e}"))
        }
        Err(e) => println!("alloc: SKIP wgpu: {e}"),
    }
    for (label, run) in &engines {
        CLASSIFY_LIMIT.store(if *label == "wgpu" { u64::MAX } else { MAX_CLASSIFIED }, Ordering::SeqCst);
        for world in [1, 2] {
            for case in cases() {
                let ((allocs, rayon, driver), synced) = run(&case, world);
                let verdict = if allocs == 0 { "ok" } else { "FAILED" };
                println!(
                    "alloc: W={world} {label:<9} {:<52} {MEASURED_STEPS} steps ({synced:>2} synced): {allocs} \
                     allocations (+{rayon} rayon, +{driver} inside wgpu) ... {verdict}",
                    case.name
                );
                if allocs != 0 {
                    failures.push(format!(
                        "W={world} {label} {}: {allocs} allocations in {MEASURED_STEPS} steps",
                        case.name
                    ));
                }
                print_and_clear_sites(allocs != 0);
            }
        }
    }
    CLASSIFY_LIMIT.store(MAX_CLASSIFIED, Ordering::SeqCst);
    failures
}

/// Forgets the allocation sites the last case recorded, printing them
/// first when it failed (with full traces under `CHRONOS_ALLOC_FULL_TRACES`).
fn print_and_clear_sites(failed: bool) {
    let mut sites = SITES.lock().unwrap_or_else(|e| e.into_inner());
    for (site, n, trace) in sites.drain(..) {
        if failed {
            println!("    {n} x {site}");
            if std::env::var_os("CHRONOS_ALLOC_FULL_TRACES").is_some() {
                println!("{trace}");
            }
        }
    }
}

fn main() {
    // wgpu-core (debug builds) takes `Backtrace::capture()` while it holds
    // its locks; were that capture enabled, it would hold std's backtrace
    // lock while allocating, and this hook's own capture would deadlock on
    // it. Only `Backtrace::capture` reads this variable (panics and this
    // hook's `force_capture` do not).
    // SAFETY: set before any other thread exists.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    WANT_TRACES.store(std::env::var("CHRONOS_ALLOC_TRACES").map(|v| v != "0").unwrap_or(true), Ordering::Relaxed);

    // The counter itself must see an allocation, or a zero below means nothing.
    arm();
    let probe = std::hint::black_box(vec![1u8; 64]);
    let (seen, _) = disarm();
    drop(probe);
    assert!(seen >= 1, "the counting allocator did not see a Vec allocation");
    SITES.lock().unwrap_or_else(|e| e.into_inner()).clear();

    let mut failures = Vec::new();
    for (world, grouped) in [(1, false), (2, false), (2, true)] {
        let engine = if grouped { "3 buckets" } else { "1 vector" };
        for case in cases() {
            let ((allocs, rayon), synced) = run_case(&case, world, grouped);
            // At most one injector block per 4 rank-steps of each bucket (a
            // bucket's step injects a handful of jobs; a block holds 63).
            let buckets = if grouped { SPLITS.len() + 1 } else { 1 };
            let rayon_ok = rayon * 4 <= (MEASURED_STEPS * world * buckets) as u64;
            let verdict = if allocs == 0 && rayon_ok { "ok" } else { "FAILED" };
            println!(
                "alloc: W={world} {engine:<9} {:<52} {MEASURED_STEPS} steps ({synced:>2} synced): {allocs} \
                 allocations (+{rayon} rayon injector blocks) ... {verdict}",
                case.name
            );
            let mixed = synced > 0 && synced < MEASURED_STEPS;
            assert!(
                mixed || case.name.starts_with("default"),
                "{}: the measured steps must mix syncs and non-syncs",
                case.name
            );
            let failed = allocs != 0 || !rayon_ok;
            if failed {
                failures.push(format!(
                    "W={world} {engine} {}: {allocs} allocations (+{rayon} rayon) in {MEASURED_STEPS} steps",
                    case.name
                ));
            }
            print_and_clear_sites(failed);
        }
    }
    #[cfg(any(feature = "cuda-emu", feature = "wgpu"))]
    failures.extend(device_cases());
    if !failures.is_empty() {
        eprintln!("heap allocations after warm-up:\n  {}", failures.join("\n  "));
        std::process::exit(1);
    }
    println!("alloc: zero heap allocations per step after warm-up in every case");
}
