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

/// Medians over `reps` samples of `f`, after one warm-up call that also
/// sets how many calls one sample makes (enough to last
/// [`MIN_SAMPLE_SECS`]); times are per call.
fn measure(reps: usize, mut f: impl FnMut()) -> Timing {
    let s = Instant::now();
    f();
    let calls = (MIN_SAMPLE_SECS / s.elapsed().as_secs_f64().max(1e-9)).ceil().clamp(1.0, 10_000.0) as usize;
    let threads = rayon::current_num_threads() as f64;
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let c0 = process_cpu_ns();
        let s = Instant::now();
        for _ in 0..calls {
            f();
        }
        wall.push(s.elapsed().as_secs_f64() / calls as f64);
        cpu.push((process_cpu_ns().saturating_sub(c0)) as f64 * 1e-9 / threads / calls as f64);
    }
    Timing { wall: median(wall), cpu: median(cpu) }
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

    let mut stream = Stream::new();
    let triad_t = measure(reps, || stream.triad());
    let triad_nt_t = measure(reps, || stream.triad_nt());
    let copy_t = measure(reps, || stream.copy());
    let triad = triad_t.map(|t| gbs(stream.triad_bytes(), t));
    let triad_nt = triad_nt_t.map(|t| gbs(stream.triad_bytes(), t));
    let copy = copy_t.map(|t| gbs(stream.copy_bytes(), t));
    drop(stream);
    rows.push(row(
        "triad bandwidth (STREAM, 12 B/elem)",
        format!("{:.2} GB/s", triad.0),
        format!("{:.2} GB/s", triad.1),
    ));
    rows.push(row(
        "triad with non-temporal stores (12 B/elem)",
        format!("{:.2} GB/s", triad_nt.0),
        format!("{:.2} GB/s", triad_nt.1),
    ));
    rows.push(row("copy bandwidth (STREAM, 8 B/elem)", format!("{:.2} GB/s", copy.0), format!("{:.2} GB/s", copy.1)));

    // Fused pass and the unfused baseline.
    let cfg = fixture::config(Selection::TopK { ratio: 0.01 }, Trigger::Never);
    let (mut state, _) = fixture::filled_state(&backend, n, &cfg, 2, 7);
    let delta = normal_vec(n, fixture::DELTA_SCALE, 11);
    let theta = normal_vec(n, 1.0, 0x7e7a);
    let fused_t = measure(reps, || {
        black_box(backend.accumulate(&mut state, &delta, &theta, 0.01).expect("accumulate"));
    });
    drop(state);
    let fused = fused_t.map(|t| gbs(16 * n as u64, t));
    let pct = (100.0 * fused.0 / triad.0, 100.0 * fused.1 / triad.1);
    rows.push(row("fused accumulate+norms time", fmt_secs(fused_t.wall), fmt_secs(fused_t.cpu)));
    rows.push(target(
        "fused GB/s (16 B/elem), % of triad",
        format!("{:.2} GB/s, {:.0}%", fused.0, pct.0),
        format!("{:.2} GB/s, {:.0}%", fused.1, pct.1),
        ">= 70%",
        (pct.0 >= 70.0, pct.1 >= 70.0),
    ));
    rows.push(row(
        "fused, % of non-temporal triad",
        format!("{:.0}%", 100.0 * fused.0 / triad_nt.0),
        format!("{:.0}%", 100.0 * fused.1 / triad_nt.1),
    ));
    let mut unfused = Unfused::new(n);
    let unfused_t = measure(reps, || {
        black_box(unfused.accumulate(&delta, &theta));
    });
    drop(unfused);
    let speedup = (unfused_t.wall / fused_t.wall, unfused_t.cpu / fused_t.cpu);
    rows.push(target(
        "fused vs unfused speed-up",
        format!("{:.2}x ({})", speedup.0, fmt_secs(unfused_t.wall)),
        format!("{:.2}x ({})", speedup.1, fmt_secs(unfused_t.cpu)),
        ">= 2x",
        (speedup.0 >= 2.0, speedup.1 >= 2.0),
    ));
    drop((delta, theta));

    // A whole non-triggering step, one rank.
    let mut solo = sparse_ranks(1, n, Trigger::Never, Arc::new(AtomicU64::new(0)));
    let step_t = measure(reps, || {
        solo.run(1);
    });
    drop(solo);
    let ratio = (step_t.wall / fused_t.wall, step_t.cpu / fused_t.cpu);
    rows.push(target(
        "non-triggering step / fused pass",
        format!("{:.3}x ({})", ratio.0, fmt_secs(step_t.wall)),
        format!("{:.3}x ({})", ratio.1, fmt_secs(step_t.cpu)),
        "<= 1.15x",
        (ratio.0 <= 1.15, ratio.1 <= 1.15),
    ));

    // Select + pack.
    let mut topk_t = None;
    for (name, sel, goal) in [
        ("TopKApprox 1% select+pack, % of triad", Selection::TopKApprox { ratio: 0.01, slack: APPROX_SLACK }, true),
        ("TopK 1% select+pack, % of triad", Selection::TopK { ratio: 0.01 }, false),
    ] {
        let cfg = fixture::config(sel, Trigger::Never);
        let (mut state, _) = fixture::filled_state(&backend, n, &cfg, 1, 3);
        let packed = backend.select_pack(&mut state).expect("select_pack").len() as u64;
        let t = measure(reps, || {
            black_box(backend.select_pack(&mut state).expect("select_pack").len());
        });
        if matches!(sel, Selection::TopK { .. }) {
            topk_t = Some(t);
        }
        let g = t.map(|t| gbs(4 * n as u64 + packed, t));
        let pct = (100.0 * g.0 / triad.0, 100.0 * g.1 / triad.1);
        let wall = format!("{:.2} GB/s, {:.0}% ({})", g.0, pct.0, fmt_secs(t.wall));
        let cpu = format!("{:.2} GB/s, {:.0}% ({})", g.1, pct.1, fmt_secs(t.cpu));
        rows.push(if goal {
            target(name, wall, cpu, ">= 50%", (pct.0 >= 50.0, pct.1 >= 50.0))
        } else {
            row(name, wall, cpu)
        });
    }

    // The seed's selection: a full sort by magnitude, pack, residual update.
    if let Some(topk_t) = topk_t {
        let mut unfused = Unfused::new(n);
        unfused.accumulate(&normal_vec(n, fixture::DELTA_SCALE, 3), &normal_vec(n, 1.0, 0x7e7a));
        let mut out = Vec::new();
        // A sort of n indices takes seconds: fewer repetitions.
        let sort_t = measure(reps.min(3), || {
            black_box(unfused.topk_sort_pack(0.01, &mut out));
        });
        rows.push(row(
            "TopK 1%: seed-style sort+pack+residual / select+pack",
            format!("{:.1}x ({})", sort_t.wall / topk_t.wall, fmt_secs(sort_t.wall)),
            format!("{:.1}x ({})", sort_t.cpu / topk_t.cpu, fmt_secs(sort_t.cpu)),
        ));
    }

    // Sparse vs dense, DENSE_WORLD ranks.
    let sent = Arc::new(AtomicU64::new(0));
    let mut sparse = sparse_ranks(DENSE_WORLD, n, Trigger::Always, sent.clone());
    let sync_t = measure(reps, || {
        sparse.run(1);
    });
    drop(sparse);
    let mut quiet = sparse_ranks(DENSE_WORLD, n, Trigger::Never, Arc::new(AtomicU64::new(0)));
    let quiet_t = measure(reps, || {
        quiet.run(1);
    });
    drop(quiet);
    let mut dense = dense_ranks(DENSE_WORLD, n);
    let dense_t = measure(reps, || {
        dense.run(1);
    });
    drop(dense);
    let sparse_bytes = sent.load(Ordering::Relaxed);
    let dense_bytes = 4 * n as u64;
    let bytes = format!("{sparse_bytes} vs {dense_bytes} B = {:.4}", sparse_bytes as f64 / dense_bytes as f64);
    rows.push(row(
        &format!("W={DENSE_WORLD}: bytes sent/rank, syncing TopK 1% bf16 / dense f32"),
        bytes,
        String::new(),
    ));
    for (name, t) in [("syncing", sync_t), ("non-syncing", quiet_t)] {
        rows.push(row(
            &format!("W={DENSE_WORLD}: {name} step / dense all-reduce step"),
            format!("{:.3} ({} vs {})", t.wall / dense_t.wall, fmt_secs(t.wall), fmt_secs(dense_t.wall)),
            format!("{:.3} ({} vs {})", t.cpu / dense_t.cpu, fmt_secs(t.cpu), fmt_secs(dense_t.cpu)),
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
        support::stream::llc_bytes() >> 20,
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
