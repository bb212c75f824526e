//! Budget mode of the significance threshold, traced: 4 ranks on threads
//! over a `LocalCollective`, each adding a seeded random update (uniform in
//! `[-1e-3, 1e-3)`, 4096 entries, top-5% bf16) every step, with the
//! threshold steered after a 100-step warm-up toward
//!
//! 1. a sync rate of 0.2,
//! 2. a sync rate of 0.05,
//! 3. 120 packed bytes per rank per step.
//!
//! Every 100 steps it prints the step, the threshold in force (every rank
//! holds the same bits; the example checks) and the sync rate (and bytes
//! per step) over the last 100 steps; at the end, the rate or bytes over
//! steps 200..=2000 against the target. Exits non-zero when a target is
//! missed by more than 10% or the ranks' thresholds differ.
//!
//! `cargo run --release --example budget-trace`

use chronos_sync::{CpuBackend, LocalCollective, Selection, SparseSync, SyncConfig, ThresholdBudget};
use std::time::Duration;

const WORLD: usize = 4;
const N: usize = 4096;
const WARMUP: u64 = 100;
const STEPS: u64 = 2000;
const MEASURED_FROM: u64 = 200;
const PRINT_EVERY: u64 = 100;

/// One step as every rank saw it.
#[derive(Clone, Copy)]
struct Step {
    tau: f32,
    synced: bool,
    /// Packed bytes of all ranks this step, divided by the world size.
    bytes_per_rank: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cases = [
        ("sync rate 0.2", ThresholdBudget::sync_rate(0.2), Target::Rate(0.2)),
        ("sync rate 0.05", ThresholdBudget::sync_rate(0.05), Target::Rate(0.05)),
        ("120 bytes per step", ThresholdBudget::bytes_per_step(120.0), Target::Bytes(120.0)),
    ];
    let mut all_ok = true;
    for (seed, (name, budget, target)) in cases.into_iter().enumerate() {
        let config = SyncConfig::builder()
            .warmup_steps(WARMUP)
            .selection(Selection::TopK { ratio: 0.05 })
            .budget(budget)
            .build()?;
        println!(
            "\n== target: {name} (gain {}, tau in [{}, {}]) ==",
            budget.gain, config.min_threshold, config.max_threshold
        );
        println!("{:>6} {:>12} {:>12} {:>14}", "step", "tau", "sync rate", "bytes/step");
        let steps = run(&config, seed as u64 + 1)?;
        for end in (PRINT_EVERY..=STEPS).step_by(PRINT_EVERY as usize) {
            let w = &steps[(end - PRINT_EVERY) as usize..end as usize];
            let (rate, bytes) = summary(w);
            println!("{end:>6} {:>12.6} {rate:>12.3} {bytes:>14.1}", w[w.len() - 1].tau);
        }
        let (rate, bytes) = summary(&steps[MEASURED_FROM as usize - 1..]);
        let (measured, wanted, unit) = match target {
            Target::Rate(r) => (rate, r, "sync rate"),
            Target::Bytes(b) => (bytes, b, "bytes per step"),
        };
        let off = measured / wanted - 1.0;
        let ok = off.abs() <= 0.1;
        all_ok &= ok;
        println!(
            "steps {MEASURED_FROM}..={STEPS}: {unit} {measured:.4} vs target {wanted} ({:+.1}%) {}",
            100.0 * off,
            if ok { "within 10%" } else { "MISSED" }
        );
    }
    if !all_ok {
        return Err("a target was missed by more than 10%".into());
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Target {
    Rate(f64),
    Bytes(f64),
}

/// Sync rate and bytes per rank per step over `steps`.
fn summary(steps: &[Step]) -> (f64, f64) {
    let syncs = steps.iter().filter(|s| s.synced).count();
    let bytes: f64 = steps.iter().map(|s| s.bytes_per_rank).sum();
    (syncs as f64 / steps.len() as f64, bytes / steps.len() as f64)
}

/// Runs the ranks and merges their reports into one record per step,
/// checking that every rank held the same threshold.
fn run(config: &SyncConfig, seed: u64) -> Result<Vec<Step>, Box<dyn std::error::Error>> {
    let handles = LocalCollective::group(WORLD, Duration::from_secs(30))?;
    let traces = std::thread::scope(|s| {
        let joins: Vec<_> = handles
            .into_iter()
            .enumerate()
            .map(|(rank, c)| s.spawn(move || rank_trace(config, c, rank, seed)))
            .collect();
        joins.into_iter().map(|j| j.join().expect("rank thread panicked")).collect::<Result<Vec<_>, _>>()
    })?;
    let mut steps = Vec::with_capacity(STEPS as usize);
    for t in 0..STEPS as usize {
        let first = traces[0][t];
        let mut bytes = 0u64;
        for (rank, trace) in traces.iter().enumerate() {
            let (tau, synced, sent) = trace[t];
            if tau.to_bits() != first.0.to_bits() || synced != first.1 {
                return Err(format!("step {}: rank {rank} holds another threshold or verdict", t + 1).into());
            }
            bytes += sent;
        }
        steps.push(Step { tau: first.0, synced: first.1, bytes_per_rank: bytes as f64 / WORLD as f64 });
    }
    Ok(steps)
}

/// One rank's (threshold, synced, bytes sent) per step.
fn rank_trace(
    config: &SyncConfig,
    collective: LocalCollective,
    rank: usize,
    seed: u64,
) -> chronos_sync::Result<Vec<(f32, bool, u64)>> {
    let mut sync = SparseSync::new(CpuBackend::new(), collective, N, config.clone())?;
    let mut rng = SplitMix64(seed ^ 0xC0FFEE);
    let mut theta: Vec<f32> = (0..N).map(|_| rng.signed_unit()).collect();
    let mut delta = vec![0.0f32; N];
    let mut out = Vec::with_capacity(STEPS as usize);
    let mut own = SplitMix64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (rank as u64 + 1));
    for _ in 1..=STEPS {
        delta.iter_mut().for_each(|x| *x = 1e-3 * own.signed_unit());
        let r = sync.step(&delta, &mut theta)?;
        out.push((r.threshold, r.synced, r.bytes_sent));
    }
    Ok(out)
}

/// SplitMix64, for a reproducible workload.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[-1, 1)` from the top 24 bits.
    fn signed_unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32) * (1.0 / (1u32 << 23) as f32) - 1.0
    }
}
