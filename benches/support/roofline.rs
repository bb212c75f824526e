//! The roofline table: every bench records its per-iteration times and its
//! compulsory traffic here; [`print_summary`] prints, per kernel, the
//! effective GB/s of that traffic and its ratio to the triad bandwidth
//! measured in the same run.
//!
//! Criterion's own output shows the same bytes as `thrpt` (it uses the mean);
//! this table uses the median of criterion's samples, which a busy shared
//! machine disturbs less.

use super::stream::Stream;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Id of the triad entry, the denominator of every ratio.
pub const TRIAD_ID: &str = "stream/triad";
/// Id of the copy entry.
pub const COPY_ID: &str = "stream/copy";

struct Entry {
    id: String,
    bytes: u64,
    secs: Vec<f64>,
}

static ENTRIES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Adds one measured time per iteration for `id`, whose compulsory traffic
/// is `bytes` per iteration.
pub fn record(id: &str, bytes: u64, secs_per_iter: f64) {
    let mut entries = ENTRIES.lock().unwrap_or_else(|e| e.into_inner());
    match entries.iter_mut().find(|e| e.id == id) {
        Some(e) => e.secs.push(secs_per_iter),
        None => entries.push(Entry { id: id.to_string(), bytes, secs: vec![secs_per_iter] }),
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 { s[m] } else { 0.5 * (s[m - 1] + s[m]) }
}

/// Median seconds per iteration recorded for `id`, if it ran.
pub fn median_secs(id: &str) -> Option<f64> {
    let entries = ENTRIES.lock().unwrap_or_else(|e| e.into_inner());
    entries.iter().find(|e| e.id == id).map(|e| median(&e.secs))
}

/// Effective GB/s (1e9 bytes per second) of `id`'s compulsory traffic.
pub fn gbs(id: &str) -> Option<f64> {
    let entries = ENTRIES.lock().unwrap_or_else(|e| e.into_inner());
    entries.iter().find(|e| e.id == id).map(|e| e.bytes as f64 / median(&e.secs) / 1e9)
}

/// A criterion group whose benches also feed the roofline table.
pub struct Group<'a> {
    name: String,
    inner: BenchmarkGroup<'a, WallTime>,
}

impl<'a> Group<'a> {
    /// Opens criterion group `name`.
    pub fn new(c: &'a mut Criterion, name: &str) -> Group<'a> {
        Group { name: name.to_string(), inner: c.benchmark_group(name) }
    }

    /// The criterion group, for settings such as the sampling mode.
    pub fn inner(&mut self) -> &mut BenchmarkGroup<'a, WallTime> {
        &mut self.inner
    }

    /// Benches `f` as `name/id`, with `bytes` of compulsory traffic per call.
    pub fn bench(&mut self, id: &str, bytes: u64, mut f: impl FnMut()) {
        self.bench_custom(id, bytes, |iters| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed()
        });
    }

    /// Benches a routine that runs `iters` iterations itself and returns
    /// the time they took (multi-rank steps, batched setups).
    pub fn bench_custom(&mut self, id: &str, bytes: u64, mut routine: impl FnMut(u64) -> Duration) {
        let full = format!("{}/{}", self.name, id);
        self.inner.throughput(Throughput::Bytes(bytes));
        self.inner.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let elapsed = routine(iters);
                record(&full, bytes, elapsed.as_secs_f64() / iters.max(1) as f64);
                elapsed
            })
        });
    }

    /// Closes the group.
    pub fn finish(self) {
        self.inner.finish();
    }
}

/// Benches `copy`, `triad` and `triad_nt` (group `stream`): the triad is
/// the bandwidth every ratio in [`print_summary`] is relative to; the
/// non-temporal triad shows the headroom above it. Call it first in every
/// bench binary.
pub fn bench_stream(c: &mut Criterion) {
    let mut stream = Stream::new();
    let (copy_bytes, triad_bytes) = (stream.copy_bytes(), stream.triad_bytes());
    let mut g = Group::new(c, "stream");
    g.inner().sampling_mode(criterion::SamplingMode::Flat);
    g.bench("copy", copy_bytes, || stream.copy());
    g.bench("triad", triad_bytes, || stream.triad());
    g.bench("triad_nt", triad_bytes, || stream.triad_nt());
    g.finish();
}

/// Prints the roofline table of everything that ran in this process.
pub fn print_summary(title: &str) {
    let entries = ENTRIES.lock().unwrap_or_else(|e| e.into_inner());
    let triad = entries.iter().find(|e| e.id == TRIAD_ID).map(|e| e.bytes as f64 / median(&e.secs) / 1e9);
    println!();
    println!("== roofline: {title} ({} rayon threads) ==", rayon::current_num_threads());
    match triad {
        Some(t) => println!("triad bandwidth measured in this run: {t:.2} GB/s"),
        None => println!("triad not run (filtered out): no ratios"),
    }
    println!("{:<52} {:>12} {:>12} {:>10} {:>8}", "kernel", "median", "traffic", "GB/s", "%triad");
    for e in entries.iter() {
        let secs = median(&e.secs);
        let g = e.bytes as f64 / secs / 1e9;
        let pct = triad.map(|t| format!("{:.0}%", 100.0 * g / t)).unwrap_or_else(|| "-".into());
        println!("{:<52} {:>12} {:>12} {:>10.2} {:>8}", e.id, fmt_secs(secs), fmt_bytes(e.bytes), g, pct);
    }
}

/// `secs` with a unit that keeps 3-4 significant digits.
pub fn fmt_secs(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.3} s")
    } else if secs >= 1e-3 {
        format!("{:.3} ms", secs * 1e3)
    } else if secs >= 1e-6 {
        format!("{:.3} us", secs * 1e6)
    } else {
        format!("{:.1} ns", secs * 1e9)
    }
}

/// `bytes` in B/KiB/MiB/GiB.
pub fn fmt_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}
