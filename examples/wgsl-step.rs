//! The WGSL sync step, timed end to end through `SparseSync` on one rank
//! (the in-process collective, so the exchange itself costs nothing): a
//! syncing step (fused pass, vote, select + pack, exchange, validation,
//! apply) and a non-syncing step (fused pass and vote), for every selection
//! rule, with the median of `--steps` steps after a warm-up.
//!
//! Usage: `cargo run --release --features wgpu --example wgsl-step -- [--log2 N] [--steps S]`
//! (defaults 2^20 elements, 30 steps). Prints one line per rule and kind of
//! step: the wall-clock median and the median of the process's CPU time
//! per step (all threads, from `/proc/self/task/*/schedstat`; lavapipe
//! runs the kernels on this process's threads, so on a loaded machine the
//! CPU figure is the steadier one).

#[cfg(feature = "wgpu")]
fn main() -> chronos_sync::Result<()> {
    use chronos_sync::{Backend, LocalCollective, Selection, SparseSync, SyncConfig, WgpuBackend, WireDtype};
    use std::time::{Duration, Instant};

    let mut log2 = 20u32;
    let mut steps = 30usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse::<usize>().ok());
        match (args[i].as_str(), value) {
            ("--log2", Some(v)) if (10..=26).contains(&v) => log2 = v as u32,
            ("--steps", Some(v)) if v >= 1 => steps = v,
            _ => {
                eprintln!("usage: wgsl-step [--log2 10..=26] [--steps S>=1]");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    let n = 1usize << log2;
    let backend = match WgpuBackend::new() {
        Ok(b) => std::sync::Arc::new(b),
        Err(e) => {
            eprintln!("wgsl-step: no wgpu adapter: {e}");
            std::process::exit(1);
        }
    };
    println!("wgsl-step: {} , n = 2^{log2}, {steps} timed steps per line (median)", backend.name());
    let rules = [
        ("topk 1%", Selection::TopK { ratio: 0.01 }),
        ("topk-approx 1%", Selection::TopKApprox { ratio: 0.01, slack: 0.25 }),
        ("threshold 2.0", Selection::Threshold { rel: 2.0 }),
        ("dense", Selection::Dense),
    ];
    let mut update = vec![0.0f32; n];
    for (name, selection) in rules {
        for syncing in [true, false] {
            // Syncing: threshold 0 and no adaptivity, so every step with a
            // non-zero update triggers. Non-syncing: a threshold no step
            // reaches and no forced sync within the run.
            let config = SyncConfig::builder()
                .adaptive(false)
                .threshold(if syncing { 0.0 } else { 1e30 })
                .max_accumulation_steps(1 << 40)
                .selection(selection)
                .wire_dtype(WireDtype::Bf16)
                .build()?;
            let collective = LocalCollective::group(1, Duration::from_secs(60))?.remove(0);
            let mut theta = backend.alloc(n)?;
            backend.upload(&vec![1.0; n], &mut theta)?;
            let mut delta = backend.alloc(n)?;
            let mut sync = SparseSync::new(std::sync::Arc::clone(&backend), collective, n, config)?;
            let mut times = Vec::with_capacity(steps);
            let mut cpu = Vec::with_capacity(steps);
            for step in 0..steps + 3 {
                for (j, u) in update.iter_mut().enumerate() {
                    *u = 1e-4 * (((j * 7 + step * 13) % 17) as f32 - 8.0);
                }
                backend.upload(&update, &mut delta)?;
                let c0 = process_cpu_ns();
                let t0 = Instant::now();
                let report = sync.step(&delta, &mut theta)?;
                let dt = t0.elapsed();
                let dc = process_cpu_ns().saturating_sub(c0);
                assert_eq!(report.synced, syncing, "{name}: step {step} synced = {}", report.synced);
                if step >= 3 {
                    times.push(dt);
                    cpu.push(dc);
                }
            }
            times.sort();
            cpu.sort();
            let median = times[times.len() / 2];
            let kind = if syncing { "syncing" } else { "non-syncing" };
            println!(
                "{name:>15} {kind:>12}: {:8.2} ms wall, {:8.2} ms CPU",
                median.as_secs_f64() * 1e3,
                cpu[cpu.len() / 2] as f64 / 1e6
            );
        }
    }
    Ok(())
}

/// Nanoseconds this process's threads have run on a CPU, from the
/// scheduler's per-thread counters (`/proc/self/task/*/schedstat`; 0 where
/// there are none).
#[cfg(feature = "wgpu")]
fn process_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[cfg(not(feature = "wgpu"))]
fn main() {
    eprintln!("wgsl-step needs the `wgpu` feature: cargo run --release --features wgpu --example wgsl-step");
    std::process::exit(2);
}
