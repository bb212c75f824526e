//! Bench sizes and criterion settings, chosen to be kind to a 2-core machine.
//!
//! Environment variables (all optional):
//! - `CHRONOS_BENCH_SIZES`: comma-separated log2 sizes, e.g. `12,16,20`
//!   (default `12,16,20,24,26`: 2^12 to 2^26 f32 elements).
//! - `CHRONOS_BENCH_MAX_LOG2`: drop sizes above 2^this (e.g. `20` for a quick
//!   look, or on a machine with little memory: 2^26 needs about 1.5 GiB per rank).
//! - `CHRONOS_BENCH_SAMPLES`: criterion samples per bench (default 10, the minimum).
//! - `CHRONOS_BENCH_SECS`: criterion measurement seconds per bench (default 1).

use criterion::Criterion;
use std::time::Duration;

/// Default log2 sizes: 2^12 (fits in L1/L2) up to 2^26 (far past any LLC).
const DEFAULT_LOG2: &[u32] = &[12, 16, 20, 24, 26];

fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    let raw = std::env::var(name).ok()?;
    match raw.trim().parse() {
        Ok(v) => Some(v),
        Err(_) => {
            eprintln!("warning: ignoring {name}={raw:?} (not a number)");
            None
        }
    }
}

/// The log2 sizes to bench, after `CHRONOS_BENCH_SIZES` and `CHRONOS_BENCH_MAX_LOG2`.
pub fn log2_sizes() -> Vec<u32> {
    let mut sizes: Vec<u32> = match std::env::var("CHRONOS_BENCH_SIZES") {
        Ok(list) => list.split(',').filter_map(|s| s.trim().parse().ok()).filter(|&l| l <= 30).collect(),
        Err(_) => DEFAULT_LOG2.to_vec(),
    };
    if let Some(max) = env_parse::<u32>("CHRONOS_BENCH_MAX_LOG2") {
        sizes.retain(|&l| l <= max);
    }
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// The element counts to bench.
pub fn sizes() -> Vec<usize> {
    log2_sizes().into_iter().map(|l| 1usize << l).collect()
}

/// Criterion configured for short runs (small samples, short warm-up),
/// then overridden by the command line (`-- --quick`, filters, ...).
pub fn criterion() -> Criterion {
    let samples = env_parse::<usize>("CHRONOS_BENCH_SAMPLES").unwrap_or(10).max(10);
    let secs = env_parse::<f64>("CHRONOS_BENCH_SECS").unwrap_or(1.0).max(0.1);
    Criterion::default()
        .sample_size(samples)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs_f64(secs))
        .nresamples(10_000)
        .configure_from_args()
}

/// `2^l` written as `2^l`, for bench ids.
pub fn size_label(n: usize) -> String {
    if n.is_power_of_two() { format!("2^{}", n.trailing_zeros()) } else { n.to_string() }
}
