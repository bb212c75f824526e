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
//! select + pack 4 B/elem + packed bytes; triad 12 B/elem.
//! Prints PASS/MISS per target and always exits 0 (a report, not a test).

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

/// Median seconds of `reps` calls of `f`, after one untimed warm-up call.
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn gbs(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

struct Row {
    metric: String,
    value: String,
    target: Option<(String, bool)>,
}

fn row(metric: &str, value: String) -> Row {
    Row { metric: metric.into(), value, target: None }
}

fn target(metric: &str, value: String, goal: &str, pass: bool) -> Row {
    Row { metric: metric.into(), value, target: Some((goal.into(), pass)) }
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
    let triad_s = median_secs(reps, || stream.triad());
    let triad = gbs(stream.triad_bytes(), triad_s);
    let copy = gbs(stream.copy_bytes(), median_secs(reps, || stream.copy()));
    drop(stream);
    rows.push(row("triad bandwidth (STREAM, 12 B/elem)", format!("{triad:.2} GB/s")));
    rows.push(row("copy bandwidth (STREAM, 8 B/elem)", format!("{copy:.2} GB/s")));

    // Fused pass and the unfused baseline.
    let cfg = fixture::config(Selection::TopK { ratio: 0.01 }, Trigger::Never);
    let (mut state, _) = fixture::filled_state(&backend, n, &cfg, 2, 7);
    let delta = normal_vec(n, fixture::DELTA_SCALE, 11);
    let theta = normal_vec(n, 1.0, 0x7e7a);
    let fused_s = median_secs(reps, || {
        black_box(backend.accumulate(&mut state, &delta, &theta, 0.01).expect("accumulate"));
    });
    drop(state);
    let fused = gbs(16 * n as u64, fused_s);
    let pct = 100.0 * fused / triad;
    rows.push(row("fused accumulate+norms time", fmt_secs(fused_s)));
    rows.push(target("fused GB/s (16 B/elem), % of triad", format!("{fused:.2} GB/s, {pct:.0}%"), ">= 70%", pct >= 70.0));
    let mut unfused = Unfused::new(n);
    let unfused_s = median_secs(reps, || {
        black_box(unfused.accumulate(&delta, &theta));
    });
    drop(unfused);
    let speedup = unfused_s / fused_s;
    rows.push(target(
        "fused vs unfused speed-up",
        format!("{speedup:.2}x ({} unfused)", fmt_secs(unfused_s)),
        ">= 2x",
        speedup >= 2.0,
    ));
    drop((delta, theta));

    // A whole non-triggering step, one rank.
    let mut solo = sparse_ranks(1, n, Trigger::Never, Arc::new(AtomicU64::new(0)));
    let step_s = median_secs(reps, || {
        solo.run(1);
    });
    drop(solo);
    let ratio = step_s / fused_s;
    rows.push(target(
        "non-triggering step / fused pass",
        format!("{ratio:.3}x ({})", fmt_secs(step_s)),
        "<= 1.15x",
        ratio <= 1.15,
    ));

    // Select + pack.
    for (name, sel, goal) in [
        ("TopKApprox 1% select+pack, % of triad", Selection::TopKApprox { ratio: 0.01, slack: APPROX_SLACK }, true),
        ("TopK 1% select+pack, % of triad", Selection::TopK { ratio: 0.01 }, false),
    ] {
        let cfg = fixture::config(sel, Trigger::Never);
        let (mut state, _) = fixture::filled_state(&backend, n, &cfg, 1, 3);
        let packed = backend.select_pack(&mut state).expect("select_pack").len() as u64;
        let s = median_secs(reps, || {
            black_box(backend.select_pack(&mut state).expect("select_pack").len());
        });
        let g = gbs(4 * n as u64 + packed, s);
        let pct = 100.0 * g / triad;
        let value = format!("{g:.2} GB/s, {pct:.0}% ({})", fmt_secs(s));
        rows.push(if goal { target(name, value, ">= 50%", pct >= 50.0) } else { row(name, value) });
    }

    // Sparse vs dense, DENSE_WORLD ranks.
    let sent = Arc::new(AtomicU64::new(0));
    let mut sparse = sparse_ranks(DENSE_WORLD, n, Trigger::Always, sent.clone());
    let sync_s = median_secs(reps, || {
        sparse.run(1);
    });
    drop(sparse);
    let mut quiet = sparse_ranks(DENSE_WORLD, n, Trigger::Never, Arc::new(AtomicU64::new(0)));
    let quiet_s = median_secs(reps, || {
        quiet.run(1);
    });
    drop(quiet);
    let mut dense = dense_ranks(DENSE_WORLD, n);
    let dense_s = median_secs(reps, || {
        dense.run(1);
    });
    drop(dense);
    let sparse_bytes = sent.load(Ordering::Relaxed);
    let dense_bytes = 4 * n as u64;
    rows.push(row(
        &format!("W={DENSE_WORLD}: bytes sent/rank, syncing TopK 1% bf16 vs dense f32"),
        format!("{sparse_bytes} vs {dense_bytes} B = {:.4}", sparse_bytes as f64 / dense_bytes as f64),
    ));
    rows.push(row(
        &format!("W={DENSE_WORLD}: syncing step / dense all-reduce step"),
        format!("{:.3} ({} vs {})", sync_s / dense_s, fmt_secs(sync_s), fmt_secs(dense_s)),
    ));
    rows.push(row(
        &format!("W={DENSE_WORLD}: non-syncing step / dense all-reduce step"),
        format!("{:.3} ({})", quiet_s / dense_s, fmt_secs(quiet_s)),
    ));

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    println!(
        "chronos-sync bench report: n = {} f32, {} , {cpu}, {} logical CPUs, {} rayon threads, LLC {} MiB, median of {reps}",
        size_label(n),
        backend.name(),
        std::thread::available_parallelism().map(|p| p.get()).unwrap_or(0),
        rayon::current_num_threads(),
        support::stream::llc_bytes() >> 20,
    );
    println!("{:<62} {:<34} {:<9} result", "metric", "value", "target");
    for r in &rows {
        let (goal, verdict) = match &r.target {
            Some((g, pass)) => (g.as_str(), if *pass { "PASS" } else { "MISS" }),
            None => ("", ""),
        };
        println!("{:<62} {:<34} {:<9} {verdict}", r.metric, r.value, goal);
    }
    println!("(report took {:.1} s)", started.elapsed().as_secs_f64());
}
