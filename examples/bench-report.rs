//! One compact table of the benchmark targets, in well under a minute:
//!
//! ```text
//! cargo run --release --example bench-report [-- --quick] [-- --log2 N]
//! ```
//!
//! Default n = 2^24 (the size the targets are set for); `--quick` uses
//! 2^22 and fewer repetitions; `--log2 N` picks n = 2^N. Every figure is
//! the median of several timed runs in this process, beside a STREAM triad
//! measured in the same process on the same rayon pool. Traffic models
//! are those of the criterion benches (`benches/*.rs`): fused pass 16 B/elem;
//! select + pack 4 B/elem + packed bytes; triad 12 B/elem. The targets are
//! against the plain triad (STREAM as compilers build it, whose stores also
//! read each line); the fused pass writes around the cache when its working
//! set exceeds it, so it is also shown against a triad that does the same.
//! Prints PASS/MISS per target and always exits 0 (a report, not a test).
//!
//! Two bases per figure: wall-clock time (what the targets are stated in),
//! and process CPU time divided by the thread count, which stays close to
//! the idle-machine time when other processes load the machine (the wall
//! figures and the triad then both stretch, by different amounts).

#[path = "../benches/support/mod.rs"]
mod support;

use chronos_sync::{Backend, CpuBackend, LocalCollective, Selection, SparseSync};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use support::config::size_label;
use support::data::normal_vec;
use support::dense::DenseAllReduce;
use support::fixture::{self, Trigger};
use support::ranks::{RankFn, Ranks};
use support::roofline::fmt_secs;
use support::stream::Stream;
use support::unfused::Unfused;

/// `TopKApprox` slack used for the select + pack target (as in benches/select_pack.rs).
const APPROX_SLACK: f64 = 0.5;
/// Ranks of the sparse-vs-dense comparison.
const DENSE_WORLD: usize = 2;
/// Separately allocated buffer sets the fused pass, the unfused baseline
/// and the step are each timed on (see `main`).
const PLACEMENTS: usize = 3;

struct Args {
    log2: u32,
    reps: usize,
}

fn parse_args() -> Args {
    let mut args = Args { log2: 24, reps: 9 };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => {
                args.log2 = 22;
                args.reps = 5;
            }
            "--log2" => match it.next().and_then(|v| v.parse::<u32>().ok()) {
                Some(l) if (10..=28).contains(&l) => args.log2 = l,
                _ => {
                    eprintln!("--log2 needs a number in 10..=28");
                    std::process::exit(2);
                }
            },
            "--bench" => {}
            other => {
                eprintln!("unknown argument {other:?}; usage: bench-report [--quick] [--log2 N]");
                std::process::exit(2);
            }
        }
    }
    args
}

/// One kernel's time: wall-clock, and the process's CPU time (all threads)
/// divided by the rayon thread count. On a machine shared with other busy
/// processes the wall time stretches with the load while the CPU time stays
/// close to what the kernel takes on an idle machine (memory stalls count as
/// CPU time), so the report prints ratios on both bases.
#[derive(Debug, Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: f64,
}

impl Timing {
    fn map(self, f: impl Fn(f64) -> f64) -> (f64, f64) {
        (f(self.wall), f(self.cpu))
    }
}

/// Nanoseconds this process's threads have run on a CPU, from the
/// scheduler's per-thread counters (`/proc/self/task/*/schedstat`).
fn process_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Shortest timed sample: the scheduler's per-thread CPU-time counters
/// advance in scheduler ticks (a few milliseconds), so a sample spans ten.
const MIN_SAMPLE_SECS: f64 = 0.04;

/// One kernel's samples, seconds per call, on both bases.
#[derive(Debug, Clone, Default)]
struct Samples {
    wall: Vec<f64>,
    cpu: Vec<f64>,
}

impl Samples {
    fn median(&self) -> Timing {
        Timing { wall: median(self.wall.clone()), cpu: median(self.cpu.clone()) }
    }

    /// Multiplies every sample by `factor` (per-call to per-pass times).
    fn scale(&mut self, factor: f64) {
        self.wall.iter_mut().chain(self.cpu.iter_mut()).for_each(|t| *t *= factor);
    }

    /// Median over rounds of `self / base`, each round's samples taken
    /// back to back: a machine whose bandwidth drifts during the report
    /// (a shared host) moves both alike, so the ratio holds.
    fn ratio(&self, base: &Samples) -> (f64, f64) {
        let paired = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(a, b)| a / b).collect());
        (paired(&self.wall, &base.wall), paired(&self.cpu, &base.cpu))
    }
}

/// Runs kernels `0..kernels` (`run(k)` runs kernel `k` once) in `reps`
/// rounds, each round sampling every kernel once, in order. One warm-up
/// call per kernel first, which also sets how many calls its samples make
/// (enough to last [`MIN_SAMPLE_SECS`]); times are per call.
fn interleave(reps: usize, kernels: usize, mut run: impl FnMut(usize)) -> Vec<Samples> {
    let calls: Vec<usize> = (0..kernels)
        .map(|k| {
            let s = Instant::now();
            run(k);
            (MIN_SAMPLE_SECS / s.elapsed().as_secs_f64().max(1e-9)).ceil().clamp(1.0, 10_000.0) as usize
        })
        .collect();
    let threads = rayon::current_num_threads() as f64;
    let mut out = vec![Samples::default(); kernels];
    for _ in 0..reps {
        for (k, samples) in out.iter_mut().enumerate() {
            let c0 = process_cpu_ns();
            let s = Instant::now();
            for _ in 0..calls[k] {
                run(k);
            }
            samples.wall.push(s.elapsed().as_secs_f64() / calls[k] as f64);
            samples.cpu.push((process_cpu_ns().saturating_sub(c0)) as f64 * 1e-9 / threads / calls[k] as f64);
        }
    }
    out
}

fn gbs(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

struct Row {
    metric: String,
    wall: String,
    cpu: String,
    /// Goal text and whether the wall and CPU figures meet it.
    target: Option<(String, bool, bool)>,
}

fn row(metric: &str, wall: String, cpu: String) -> Row {
    Row { metric: metric.into(), wall, cpu, target: None }
}

fn target(metric: &str, wall: String, cpu: String, goal: &str, pass: (bool, bool)) -> Row {
    Row { metric: metric.into(), wall, cpu, target: Some((goal.into(), pass.0, pass.1)) }
}

fn sparse_ranks(world: usize, n: usize, trigger: Trigger, sent: Arc<AtomicU64>) -> Ranks {
    let cfg = fixture::config(Selection::TopK { ratio: 0.01 }, trigger);
    let engines: Vec<SparseSync<CpuBackend, LocalCollective>> = fixture::engines(world, n, &cfg);
    let fns: Vec<RankFn> = engines
        .into_iter()
        .enumerate()
        .map(|(r, mut e)| {
            let delta = normal_vec(n, fixture::DELTA_SCALE, 100 + r as u64);
            let mut theta = normal_vec(n, 1.0, 0x7e7a);
            let sent = sent.clone();
            Box::new(move || {
                let report = e.step(&delta, &mut theta).expect("step");
                if r == 0 {
                    sent.store(report.bytes_sent, Ordering::Relaxed);
                }
            }) as RankFn
        })
        .collect();
    Ranks::new(fns)
}

fn dense_ranks(world: usize, n: usize) -> Ranks {
    let fns: Vec<RankFn> = LocalCollective::group(world, fixture::TIMEOUT)
        .expect("group")
        .into_iter()
        .enumerate()
        .map(|(r, c)| {
            let delta = normal_vec(n, fixture::DELTA_SCALE, 100 + r as u64);
            let mut theta = normal_vec(n, 1.0, 0x7e7a);
            let mut dense = DenseAllReduce::new(c, n);
            Box::new(move || {
                black_box(dense.step(&delta, &mut theta).expect("dense step"));
            }) as RankFn
        })
        .collect();
    Ranks::new(fns)
}

fn main() {
    let args = parse_args();
    let n = 1usize << args.log2;
    let reps = args.reps;
    let started = Instant::now();
    let backend = CpuBackend::new();
    let mut rows = Vec::new();

    // Every fixture first, then one interleaved run: each round times the
    // STREAM probes and every kernel back to back, and each ratio is the
    // median of its per-round ratios.
    let mut stream = Stream::new();
    // The fused pass, the unfused baseline and the whole step each run on
    // PLACEMENTS separately allocated sets of buffers, one pass on each per
    // call: on this kind of machine where a vector lands in memory moves a
    // pass's time by up to ~10%, and one allocation would pass that luck
    // into the ratios.
    let cfg = fixture::config(Selection::TopK { ratio: 0.01 }, Trigger::Never);
    let mut fused_sets: Vec<_> = (0..PLACEMENTS as u64)
        .map(|p| {
            let (state, _) = fixture::filled_state(&backend, n, &cfg, 2, 7 + p);
            let delta = normal_vec(n, fixture::DELTA_SCALE, 11 + p);
            let theta = normal_vec(n, 1.0, 0x7e7a + p);
            (state, delta, theta, Unfused::new(n))
        })
        .collect();
    let mut solos: Vec<Ranks> =
        (0..PLACEMENTS).map(|_| sparse_ranks(1, n, Trigger::Never, Arc::new(AtomicU64::new(0)))).collect();
    let packer = |sel: Selection| {
        let cfg = fixture::config(sel, Trigger::Never);
        let (mut state, _) = fixture::filled_state(&backend, n, &cfg, 1, 3);
        let packed = backend.select_pack(&mut state).expect("select_pack").len() as u64;
        (state, packed)
    };
    let (mut approx_state, approx_packed) = packer(Selection::TopKApprox { ratio: 0.01, slack: APPROX_SLACK });
    let (mut topk_state, topk_packed) = packer(Selection::TopK { ratio: 0.01 });
    const TRIAD: usize = 0;
    const TRIAD_NT: usize = 1;
    const COPY: usize = 2;
    const FUSED: usize = 3;
    const UNFUSED: usize = 4;
    const STEP: usize = 5;
    const APPROX: usize = 6;
    const TOPK: usize = 7;
    let mut samples = interleave(reps, 8, |k| match k {
        TRIAD => stream.triad(),
        TRIAD_NT => stream.triad_nt(),
        COPY => stream.copy(),
        FUSED => {
            for (state, delta, theta, _) in &mut fused_sets {
                black_box(backend.accumulate(state, delta, theta, 0.01).expect("accumulate"));
            }
        }
        UNFUSED => {
            for (_, delta, theta, unfused) in &mut fused_sets {
                black_box(unfused.accumulate(delta, theta));
            }
        }
        STEP => {
            for solo in &mut solos {
                solo.run(1);
            }
        }
        APPROX => {
            black_box(backend.select_pack(&mut approx_state).expect("select_pack").len());
        }
        _ => {
            black_box(backend.select_pack(&mut topk_state).expect("select_pack").len());
        }
    });
    for k in [FUSED, UNFUSED, STEP] {
        samples[k].scale(1.0 / PLACEMENTS as f64);
    }
    let (triad_bytes, copy_bytes) = (stream.triad_bytes(), stream.copy_bytes());
    drop((stream, fused_sets, solos, approx_state));
    // GB/s of `bytes` per call of kernel `k`, and its % of the triad's
    // (from per-round ratios).
    let bandwidth = |k: usize, bytes: u64| {
        let g = samples[k].median().map(|t| gbs(bytes, t));
        let r = samples[k].ratio(&samples[TRIAD]);
        let scale = 100.0 * bytes as f64 / triad_bytes as f64;
        (g, (scale / r.0, scale / r.1))
    };
    let (triad, _) = bandwidth(TRIAD, triad_bytes);
    let (triad_nt, _) = bandwidth(TRIAD_NT, triad_bytes);
    let (copy, _) = bandwidth(COPY, copy_bytes);
    for (name, g) in [
        ("triad bandwidth (STREAM, 12 B/elem)", triad),
        ("triad with non-temporal stores (12 B/elem)", triad_nt),
        ("copy bandwidth (STREAM, 8 B/elem)", copy),
    ] {
        rows.push(row(name, format!("{:.2} GB/s", g.0), format!("{:.2} GB/s", g.1)));
    }

    let fused_t = samples[FUSED].median();
    let (fused, pct) = bandwidth(FUSED, 16 * n as u64);
    rows.push(row("fused accumulate+norms time", fmt_secs(fused_t.wall), fmt_secs(fused_t.cpu)));
    rows.push(target(
        "fused GB/s (16 B/elem), % of triad",
        format!("{:.2} GB/s, {:.0}%", fused.0, pct.0),
        format!("{:.2} GB/s, {:.0}%", fused.1, pct.1),
        ">= 70%",
        (pct.0 >= 70.0, pct.1 >= 70.0),
    ));
    let vs_nt = samples[TRIAD_NT].ratio(&samples[FUSED]);
    let nt_scale = 100.0 * 16.0 * n as f64 / triad_bytes as f64;
    rows.push(row(
        "fused, % of non-temporal triad",
        format!("{:.0}%", nt_scale * vs_nt.0),
        format!("{:.0}%", nt_scale * vs_nt.1),
    ));
    let speedup = samples[UNFUSED].ratio(&samples[FUSED]);
    rows.push(target(
        "fused vs unfused speed-up",
        format!("{:.2}x ({})", speedup.0, fmt_secs(samples[UNFUSED].median().wall)),
        format!("{:.2}x ({})", speedup.1, fmt_secs(samples[UNFUSED].median().cpu)),
        ">= 2x",
        (speedup.0 >= 2.0, speedup.1 >= 2.0),
    ));
    let ratio = samples[STEP].ratio(&samples[FUSED]);
    rows.push(target(
        "non-triggering step / fused pass",
        format!("{:.3}x ({})", ratio.0, fmt_secs(samples[STEP].median().wall)),
        format!("{:.3}x ({})", ratio.1, fmt_secs(samples[STEP].median().cpu)),
        "<= 1.15x",
        (ratio.0 <= 1.15, ratio.1 <= 1.15),
    ));

    // Select + pack, 4 B/elem + the packed bytes.
    for (name, k, packed, goal) in [
        ("TopKApprox 1% select+pack, % of triad", APPROX, approx_packed, true),
        ("TopK 1% select+pack, % of triad", TOPK, topk_packed, false),
    ] {
        let t = samples[k].median();
        let (g, pct) = bandwidth(k, 4 * n as u64 + packed);
        let wall = format!("{:.2} GB/s, {:.0}% ({})", g.0, pct.0, fmt_secs(t.wall));
        let cpu = format!("{:.2} GB/s, {:.0}% ({})", g.1, pct.1, fmt_secs(t.cpu));
        rows.push(if goal {
            target(name, wall, cpu, ">= 50%", (pct.0 >= 50.0, pct.1 >= 50.0))
        } else {
            row(name, wall, cpu)
        });
    }

    // Full-sort selection, a re-implementation of the seed's approach (not
    // the seed's code): a full sort by magnitude, pack, residual update.
    // A sort of n indices takes seconds: fewer rounds, each beside TopK.
    {
        let mut seed = Unfused::new(n);
        seed.accumulate(&normal_vec(n, fixture::DELTA_SCALE, 3), &normal_vec(n, 1.0, 0x7e7a));
        let mut out = Vec::new();
        let pair = interleave(reps.min(3), 2, |k| {
            if k == 0 {
                black_box(seed.topk_sort_pack(0.01, &mut out));
            } else {
                black_box(backend.select_pack(&mut topk_state).expect("select_pack").len());
            }
        });
        let r = pair[0].ratio(&pair[1]);
        let t = pair[0].median();
        rows.push(row(
            "TopK 1%: full-sort selection (a re-implementation of the seed's approach: sort+pack+residual) / select+pack",
            format!("{:.1}x ({})", r.0, fmt_secs(t.wall)),
            format!("{:.1}x ({})", r.1, fmt_secs(t.cpu)),
        ));
    }
    drop(topk_state);

    // Sparse vs dense, DENSE_WORLD ranks, interleaved likewise.
    let sent = Arc::new(AtomicU64::new(0));
    let mut sparse = sparse_ranks(DENSE_WORLD, n, Trigger::Always, sent.clone());
    let mut quiet = sparse_ranks(DENSE_WORLD, n, Trigger::Never, Arc::new(AtomicU64::new(0)));
    let mut dense = dense_ranks(DENSE_WORLD, n);
    let steps = interleave(reps, 3, |k| {
        match k {
            0 => sparse.run(1),
            1 => quiet.run(1),
            _ => dense.run(1),
        };
    });
    drop((sparse, quiet, dense));
    let sparse_bytes = sent.load(Ordering::Relaxed);
    let dense_bytes = 4 * n as u64;
    let bytes = format!("{sparse_bytes} vs {dense_bytes} B = {:.4}", sparse_bytes as f64 / dense_bytes as f64);
    rows.push(row(
        &format!("W={DENSE_WORLD}: bytes sent/rank, syncing TopK 1% bf16 / dense f32"),
        bytes,
        String::new(),
    ));
    let dense_t = steps[2].median();
    for (name, k) in [("syncing", 0), ("non-syncing", 1)] {
        let (t, r) = (steps[k].median(), steps[k].ratio(&steps[2]));
        rows.push(row(
            &format!("W={DENSE_WORLD}: {name} step / dense all-reduce step"),
            format!("{:.3} ({} vs {})", r.0, fmt_secs(t.wall), fmt_secs(dense_t.wall)),
            format!("{:.3} ({} vs {})", r.1, fmt_secs(t.cpu), fmt_secs(dense_t.cpu)),
        ));
    }

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!(
        "chronos-sync bench report: n = {} f32, {} , {cpu}, {} logical CPUs, {} rayon threads, LLC {} MiB, median of {reps}",
        size_label(n),
        backend.name(),
        std::thread::available_parallelism().map(|p| p.get()).unwrap_or(0),
        rayon::current_num_threads(),
        chronos_sync::backend::cpu::last_level_cache_bytes() >> 20,
    );
    println!(
        "{:<56} {:<36} {:<36} {:<9} wall/cpu",
        "metric", "value (wall clock)", "value (cpu time / threads)", "target"
    );
    let verdict = |p: bool| if p { "PASS" } else { "MISS" };
    for r in &rows {
        let (goal, v) = match &r.target {
            Some((g, w, c)) => (g.as_str(), format!("{}/{}", verdict(*w), verdict(*c))),
            None => ("", String::new()),
        };
        println!("{:<56} {:<36} {:<36} {:<9} {v}", r.metric, r.wall, r.cpu, goal);
    }
    if args.log2 != 24 {
        println!("note: the targets are set for n = 2^24; at other sizes PASS/MISS only orients");
    }
    println!("(report took {:.1} s)", started.elapsed().as_secs_f64());
}
