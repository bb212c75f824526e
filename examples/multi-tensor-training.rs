//! Data-parallel training of a model with several parameter tensors, written
//! against the public API only, as a training framework would use the crate.
//!
//! - A two-layer MLP (W1, W2, b1, b2) on four Gaussian classes in 32
//!   dimensions; the parameters live in one arena (`Vec<f32>`), and the
//!   engine steps slices of it: three buckets (W1, W2, the biases) with
//!   their own selection rules, borrowed, never copied.
//! - 4 ranks as threads share one `CpuBackend`; each rank's buckets share
//!   one collective and take one vote per step (`SyncGroup`).
//! - Each rank runs its own Adam on its own data shard; the sync engine's
//!   error feedback carries what it does not send.
//! - Run A trains 60 steps. Run B trains 30, checkpoints every rank (engine
//!   state, parameters, Adam moments) to files, drops everything, restores
//!   into fresh engines and trains 30 more. The two runs end bitwise
//!   identical; the example exits non-zero if they do not.
//!
//! `cargo run --release --example multi-tensor-training`

use chronos_sync::{BucketStep, CpuBackend, LocalCollective, Selection, SyncConfig, SyncGroup, WireDtype};
use std::path::{Path, PathBuf};
use std::time::Duration;

const WORLD: usize = 4;
const DIM: usize = 32;
const HIDDEN: usize = 64;
const CLASSES: usize = 4;
const TRAIN_PER_RANK: usize = 512;
const TEST: usize = 1024;
const BATCH: usize = 32;
const STEPS: u64 = 60;
const CHECKPOINT_AT: u64 = 30;

/// Arena layout: W1 (HIDDEN x DIM), W2 (CLASSES x HIDDEN), b1, b2.
const W1: usize = HIDDEN * DIM;
const W2: usize = CLASSES * HIDDEN;
const PARAMS: usize = W1 + W2 + HIDDEN + CLASSES;
/// Bucket boundaries in the arena: [W1 | W2 | b1 b2].
const BUCKETS: [(usize, usize); 3] = [(0, W1), (W1, W1 + W2), (W1 + W2, PARAMS)];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = Data::new();
    let backend = CpuBackend::new();
    let dir = std::env::temp_dir().join(format!("chronos-multi-tensor-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    let uninterrupted = run(&backend, &data, Start::Fresh, STEPS, None)?;
    let first_half = run(&backend, &data, Start::Fresh, CHECKPOINT_AT, Some(&dir))?;
    drop(first_half); // the job "dies": engines, collectives and optimizers are gone
    let resumed = run(&backend, &data, Start::FromCheckpoint(&dir), STEPS, None)?;
    std::fs::remove_dir_all(&dir)?;

    let a = &uninterrupted.params;
    let b = &resumed.params;
    let identical = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    println!("\n{:<34} {:>14} {:>14}", "", "uninterrupted", "resumed");
    println!("{:<34} {:>14.4} {:>14.4}", "final training loss (rank 0)", uninterrupted.loss, resumed.loss);
    println!("{:<34} {:>13.2}% {:>13.2}%", "test accuracy", 100.0 * accuracy(a, &data), 100.0 * accuracy(b, &data));
    println!(
        "{:<34} {:>14} {:>14}",
        "syncs per bucket (W1, W2, biases)",
        fmt3(uninterrupted.syncs),
        fmt3(resumed.syncs)
    );
    println!(
        "{:<34} {:>14} {:>14}",
        "bytes sent by rank 0",
        uninterrupted.bytes_sent,
        format!("{} + {}", resumed.bytes_sent_before, resumed.bytes_sent)
    );
    println!("dense f32 all-gather would send {} bytes per rank", STEPS * PARAMS as u64 * 4);
    println!("parameters bitwise identical after checkpoint + restore: {}", if identical { "yes" } else { "NO" });
    if !identical {
        return Err("the resumed run diverged from the uninterrupted one".into());
    }
    if accuracy(a, &data) < 0.9 {
        return Err(format!("the model did not learn: {:.1}% test accuracy", 100.0 * accuracy(a, &data)).into());
    }
    Ok(())
}

fn fmt3(v: [u64; 3]) -> String {
    format!("{}, {}, {}", v[0], v[1], v[2])
}

enum Start<'a> {
    Fresh,
    FromCheckpoint(&'a Path),
}

struct Outcome {
    params: Vec<f32>,
    loss: f32,
    syncs: [u64; 3],
    bytes_sent: u64,
    bytes_sent_before: u64,
}

/// One bucket configuration per parameter group.
fn bucket_configs() -> [SyncConfig; 3] {
    // Adam moves every weight by about its learning rate per step, a few
    // percent of the weights' norm: a threshold of 0.06 after a short
    // warm-up syncs the matrices every second or third step.
    let matrix =
        |ratio| SyncConfig::builder().selection(Selection::TopK { ratio }).threshold(0.06).warmup_steps(10).build();
    [
        matrix(0.02).expect("valid"),
        matrix(0.05).expect("valid"),
        SyncConfig::builder()
            .selection(Selection::Dense)
            .wire_dtype(WireDtype::F32)
            .threshold(0.06)
            .warmup_steps(10)
            .build()
            .expect("valid"),
    ]
}

/// Trains from `start` up to step `until` on 4 rank threads; with
/// `save_to`, every rank writes its checkpoint there at the end.
fn run(
    backend: &CpuBackend,
    data: &Data,
    start: Start<'_>,
    until: u64,
    save_to: Option<&Path>,
) -> Result<Outcome, String> {
    let collectives = LocalCollective::group(WORLD, Duration::from_secs(30)).map_err(|e| e.to_string())?;
    let start = &start;
    let results: Vec<Result<Outcome, String>> = std::thread::scope(|s| {
        let joins: Vec<_> = collectives
            .into_iter()
            .enumerate()
            .map(|(rank, collective)| {
                s.spawn(move || {
                    rank_main(backend, data, rank, collective, start, until, save_to)
                        .map_err(|e| format!("rank {rank}: {e}"))
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap_or_else(|_| Err("rank thread panicked".into()))).collect()
    });
    let mut outcomes = results.into_iter().collect::<Result<Vec<_>, String>>()?;
    for (r, o) in outcomes.iter().enumerate().skip(1) {
        if o.params.iter().zip(&outcomes[0].params).any(|(x, y)| x.to_bits() != y.to_bits()) {
            return Err(format!("rank {r}'s replica differs from rank 0's"));
        }
    }
    Ok(outcomes.swap_remove(0))
}

fn checkpoint_path(dir: &Path, rank: usize, what: &str) -> PathBuf {
    dir.join(format!("rank-{rank}.{what}"))
}

fn rank_main(
    backend: &CpuBackend,
    data: &Data,
    rank: usize,
    collective: LocalCollective,
    start: &Start<'_>,
    until: u64,
    save_to: Option<&Path>,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    // One group per rank: every bucket on the shared backend and this
    // rank's one collective.
    let mut group = SyncGroup::new(backend, collective)?;
    for ((lo, hi), config) in BUCKETS.into_iter().zip(bucket_configs()) {
        group.add_bucket(hi - lo, config)?;
    }
    let mut params = init_params();
    let mut adam = Adam::new(PARAMS);
    let mut bytes_sent_before = 0;
    if let Start::FromCheckpoint(dir) = start {
        group.restore(&std::fs::read(checkpoint_path(dir, rank, "sync"))?)?;
        params = floats(&std::fs::read(checkpoint_path(dir, rank, "params"))?)?;
        let moments = floats(&std::fs::read(checkpoint_path(dir, rank, "adam"))?)?;
        adam.restore(&moments, group.steps())?;
        bytes_sent_before = u64::from_le_bytes(std::fs::read(checkpoint_path(dir, rank, "bytes"))?[..8].try_into()?);
    }

    let mut grad = vec![0.0f32; PARAMS];
    let mut delta = vec![0.0f32; PARAMS];
    let (mut loss, mut syncs, mut bytes_sent) = (0.0, [0u64; 3], 0u64);
    for t in group.steps() + 1..=until {
        loss = data.gradient(rank, t, &params, &mut grad);
        adam.update(&grad, &mut delta);
        // Borrow the arena's slices as the buckets' inputs: no copies.
        let (d_w1, d_rest) = delta.split_at(W1);
        let (d_w2, d_bias) = d_rest.split_at(W2);
        let (p_w1, p_rest) = params.split_at_mut(W1);
        let (p_w2, p_bias) = p_rest.split_at_mut(W2);
        let mut steps = [
            BucketStep { delta: d_w1, params: p_w1 },
            BucketStep { delta: d_w2, params: p_w2 },
            BucketStep { delta: d_bias, params: p_bias },
        ];
        let report = group.step(&mut steps)?;
        bytes_sent += report.bytes_sent;
        for (b, r) in group.reports().iter().enumerate() {
            syncs[b] += u64::from(r.synced);
        }
        if rank == 0 && (t % 10 == 0 || t == 1) {
            println!(
                "step {t:>3}: loss {loss:.4}, buckets synced {}, bytes sent {}",
                report.buckets_synced, report.bytes_sent
            );
        }
    }
    if let Some(dir) = save_to {
        std::fs::write(checkpoint_path(dir, rank, "sync"), group.checkpoint()?)?;
        std::fs::write(checkpoint_path(dir, rank, "params"), bytes_of(&params))?;
        std::fs::write(checkpoint_path(dir, rank, "adam"), bytes_of(&adam.moments()))?;
        std::fs::write(checkpoint_path(dir, rank, "bytes"), bytes_sent.to_le_bytes())?;
        if rank == 0 {
            println!("checkpointed every rank at step {until}");
        }
    }
    Ok(Outcome { params, loss, syncs, bytes_sent, bytes_sent_before })
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn floats(bytes: &[u8]) -> Result<Vec<f32>, String> {
    if bytes.len() % 4 != 0 {
        return Err(format!("{} bytes is not a whole number of f32", bytes.len()));
    }
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Adam, the framework's own optimizer: its update is what the sync engine
/// accumulates and sends.
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    const LR: f32 = 0.01;
    const B1: f32 = 0.9;
    const B2: f32 = 0.999;
    const EPS: f32 = 1e-8;

    fn new(n: usize) -> Adam {
        Adam { m: vec![0.0; n], v: vec![0.0; n], t: 0 }
    }
    fn update(&mut self, grad: &[f32], delta: &mut [f32]) {
        self.t += 1;
        let (c1, c2) = (1.0 - Self::B1.powi(self.t), 1.0 - Self::B2.powi(self.t));
        for i in 0..grad.len() {
            self.m[i] = Self::B1 * self.m[i] + (1.0 - Self::B1) * grad[i];
            self.v[i] = Self::B2 * self.v[i] + (1.0 - Self::B2) * grad[i] * grad[i];
            delta[i] = -Self::LR * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + Self::EPS);
        }
    }
    fn moments(&self) -> Vec<f32> {
        self.m.iter().chain(&self.v).copied().collect()
    }
    fn restore(&mut self, moments: &[f32], steps: u64) -> Result<(), String> {
        if moments.len() != 2 * self.m.len() {
            return Err(format!("Adam checkpoint holds {} values, expected {}", moments.len(), 2 * self.m.len()));
        }
        let (m, v) = moments.split_at(self.m.len());
        self.m.copy_from_slice(m);
        self.v.copy_from_slice(v);
        self.t = i32::try_from(steps).map_err(|_| "step count out of range".to_string())?;
        Ok(())
    }
}

/// SplitMix64, for reproducible data and initialization.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let (u1, u2) = (1.0 - self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

fn init_params() -> Vec<f32> {
    let mut rng = Rng(7);
    let mut p = vec![0.0f32; PARAMS];
    for (i, x) in p[..W1 + W2].iter_mut().enumerate() {
        let fan_in = if i < W1 { DIM } else { HIDDEN };
        *x = rng.normal() * (2.0 / fan_in as f32).sqrt();
    }
    p
}

/// Four Gaussian classes; rank r trains on its own shard.
struct Data {
    train: Vec<(Vec<f32>, usize)>,
    test: Vec<(Vec<f32>, usize)>,
}

impl Data {
    fn new() -> Data {
        let mut rng = Rng(42);
        let centers: Vec<Vec<f32>> = (0..CLASSES).map(|_| (0..DIM).map(|_| 1.2 * rng.normal()).collect()).collect();
        let sample = |rng: &mut Rng| {
            let class = (rng.next() % CLASSES as u64) as usize;
            let x = centers[class].iter().map(|c| c + 1.5 * rng.normal()).collect();
            (x, class)
        };
        let train = (0..WORLD * TRAIN_PER_RANK).map(|_| sample(&mut rng)).collect();
        let test = (0..TEST).map(|_| sample(&mut rng)).collect();
        Data { train, test }
    }

    /// The mean loss over rank `rank`'s minibatch for step `t`, and its
    /// gradient in `grad` (arena layout).
    fn gradient(&self, rank: usize, t: u64, p: &[f32], grad: &mut [f32]) -> f32 {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let shard = &self.train[rank * TRAIN_PER_RANK..(rank + 1) * TRAIN_PER_RANK];
        let mut loss = 0.0;
        let mut hidden = [0.0f32; HIDDEN];
        for k in 0..BATCH {
            let (x, y) = &shard[(t as usize * BATCH + k) % TRAIN_PER_RANK];
            let probs = forward(p, x, &mut hidden);
            loss -= probs[*y].max(1e-12).ln();
            let (w1g, rest) = grad.split_at_mut(W1);
            let (w2g, rest) = rest.split_at_mut(W2);
            let (b1g, b2g) = rest.split_at_mut(HIDDEN);
            let mut dh = [0.0f32; HIDDEN];
            for c in 0..CLASSES {
                let dz = (probs[c] - f32::from(u8::from(c == *y))) / BATCH as f32;
                b2g[c] += dz;
                for j in 0..HIDDEN {
                    w2g[c * HIDDEN + j] += dz * hidden[j];
                    dh[j] += dz * p[W1 + c * HIDDEN + j];
                }
            }
            for j in 0..HIDDEN {
                if hidden[j] > 0.0 {
                    b1g[j] += dh[j];
                    for i in 0..DIM {
                        w1g[j * DIM + i] += dh[j] * x[i];
                    }
                }
            }
        }
        loss / BATCH as f32
    }
}

/// Class probabilities for `x`; the hidden activations in `hidden`.
fn forward(p: &[f32], x: &[f32], hidden: &mut [f32; HIDDEN]) -> [f32; CLASSES] {
    let (b1, b2) = p[W1 + W2..].split_at(HIDDEN);
    for j in 0..HIDDEN {
        let z: f32 = b1[j] + (0..DIM).map(|i| p[j * DIM + i] * x[i]).sum::<f32>();
        hidden[j] = z.max(0.0);
    }
    let mut logits = [0.0f32; CLASSES];
    for c in 0..CLASSES {
        logits[c] = b2[c] + (0..HIDDEN).map(|j| p[W1 + c * HIDDEN + j] * hidden[j]).sum::<f32>();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    std::array::from_fn(|c| exp[c] / sum)
}

fn accuracy(p: &[f32], data: &Data) -> f32 {
    let mut hidden = [0.0f32; HIDDEN];
    let right = data
        .test
        .iter()
        .filter(|(x, y)| {
            let probs = forward(p, x, &mut hidden);
            (0..CLASSES).max_by(|&a, &b| probs[a].total_cmp(&probs[b])) == Some(*y)
        })
        .count();
    right as f32 / data.test.len() as f32
}
