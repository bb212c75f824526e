//! What a hyper-cleaning run measured: each rank's [`RankOutput`] (plain
//! data, serde-able, so a multi-process launcher can gather it as bytes) and
//! the run's [`RunMetrics`] built from all of them by [`summarize`].

use std::collections::BTreeMap;

use super::hypergrad::validation_loss_grad;
use super::model::accuracy;
use super::problem::{Detection, Problem};
use super::system::Variant;
use chronos_sync::coordinator::Coordinator;
use chronos_sync::sync::StepReport;

/// The fields of one [`StepReport`] the metrics use, in a serde-able copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct StepRecord {
    /// The group synced this step.
    pub synced: bool,
    /// This rank's significance passed the threshold.
    pub triggered: bool,
    /// Entries this rank sent.
    pub entries_sent: u64,
    /// Packed bytes this rank sent.
    pub bytes_sent: u64,
    /// Packed bytes this rank received.
    pub bytes_received: u64,
    /// Vote and count bytes of this step.
    pub control_bytes: u64,
}

impl From<&StepReport> for StepRecord {
    fn from(r: &StepReport) -> Self {
        StepRecord {
            synced: r.synced,
            triggered: r.triggered,
            entries_sent: r.entries_sent,
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            control_bytes: r.control_bytes,
        }
    }
}

/// One point of rank 0's accuracy / validation-loss trace, taken after a
/// round's inner steps (and once more at the end of the run).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct TracePoint {
    /// Seconds since the job's common start instant.
    pub elapsed_s: f64,
    /// Inner steps taken so far.
    pub inner_step: u64,
    /// Outer version (outer steps taken) of the parameters the model was trained with.
    pub outer_version: u64,
    /// Test accuracy of rank 0's model at that point.
    pub test_accuracy: f64,
    /// Validation loss (mean cross-entropy) of rank 0's model at that point.
    pub val_loss: f64,
}

/// Everything one rank hands back after its run.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct RankOutput {
    /// This rank.
    pub rank: usize,
    /// One record per inner step (rounds and final fit), in order.
    pub steps: Vec<StepRecord>,
    /// Wall-clock spent inside `SparseSync::step`, seconds.
    pub sync_s: f64,
    /// Checkouts refused by backpressure.
    pub backpressure: u64,
    /// Hypergradients committed.
    pub commits: u64,
    /// Conjugate-gradient iterations of each hypergradient, in order.
    pub cg_iterations: Vec<u32>,
    /// The final model (rank 0 only; every rank holds the same one).
    pub theta: Option<Vec<f32>>,
    /// The accuracy / validation-loss trace (rank 0 only, empty elsewhere).
    pub trace: Vec<TracePoint>,
    /// The L2 strength of the final fit.
    pub mu_final: f64,
    /// The inner L2 strength at the end of the rounds (learned when `log mu`
    /// is an outer parameter).
    pub mu_rounds: f64,
    /// Momentum entries cleared by momentum factor masking.
    pub momentum_cleared: u64,
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct RunMetrics {
    /// Variant name.
    pub name: String,
    /// Workers.
    pub workers: usize,
    /// Inner steps per worker.
    pub steps: u64,
    /// Packed payload bytes produced, summed over workers and syncs (each
    /// rank's buffer counted once), plus the vote and count exchanges.
    pub bytes_total: u64,
    /// Of which control (votes and counts).
    pub control_bytes: u64,
    /// `bytes_total` per worker, in rank order.
    pub bytes_per_worker: Vec<u64>,
    /// Payload bytes one rank received, summed over syncs, maximum over ranks.
    pub bytes_received_max: u64,
    /// Collective calls per rank (vote every step; counts and payload per sync).
    pub collective_calls: u64,
    /// Steps on which the group synced.
    pub syncs: u64,
    /// Syncs where at least one rank's significance passed the threshold.
    pub syncs_triggered: u64,
    /// Syncs that only `max_accumulation_steps` forced.
    pub syncs_forced: u64,
    /// Outer steps the coordinator took.
    pub outer_steps: u64,
    /// Commits accepted.
    pub accepted: u64,
    /// Commits rejected (every reason).
    pub rejected: u64,
    /// Checkouts refused by backpressure (the worker kept its old `lambda` for a round).
    pub backpressure: u64,
    /// Staleness -> commits.
    pub staleness: BTreeMap<u64, u64>,
    /// Measured wall-clock of the run, seconds.
    pub wall_s: f64,
    /// Wall-clock spent inside `SparseSync::step` on the rank that spent least there.
    pub sync_s: f64,
    /// `wall_s - sync_s` plus the modeled communication time at 10 Gb/s.
    pub modeled_10g_s: f64,
    /// Same at 100 Gb/s.
    pub modeled_100g_s: f64,
    /// Validation accuracy of the final model.
    pub val_accuracy: f64,
    /// Test accuracy of the final model.
    pub test_accuracy: f64,
    /// Validation loss of the final model.
    pub val_loss: f64,
    /// Detection of the corrupted labels by `lambda_i < 0`.
    pub detection: Detection,
    /// Hypergradients computed, over all ranks.
    pub hypergradients: u64,
    /// Mean conjugate-gradient iterations per hypergradient (0 without any).
    pub cg_iterations_mean: f64,
    /// Entries sent, summed over ranks and steps.
    pub entries_sent: u64,
    /// Momentum entries cleared by momentum factor masking, summed over
    /// ranks (0 without masking: dense selection, or masking off).
    pub momentum_cleared: u64,
    /// Rank 0's accuracy / validation-loss trace, by elapsed time and inner step.
    pub trace: Vec<TracePoint>,
    /// The inner L2 strength of the final fit (`final_mu`, else the
    /// rounds' last).
    pub mu_final: f64,
    /// The inner L2 strength at the end of the rounds (learned when `log mu`
    /// is an outer parameter).
    pub mu_rounds: f64,
    /// Updates of each outer-parameter segment: `(first index, every, updates)`
    /// (the `lambda`s, and `log mu` on its own timescale when learned).
    pub timescale_updates: Vec<(usize, u64, u64)>,
    /// The validation loss [`RunMetrics::outer_steps_to_target`] counts to.
    pub target_val_loss: f64,
    /// The outer version of the first trace point at or below
    /// `target_val_loss` (`None`: never reached).
    pub outer_steps_to_target: Option<u64>,
}

impl RunMetrics {
    /// Sets `target_val_loss` and computes `outer_steps_to_target` from the trace.
    pub fn set_target(&mut self, target_val_loss: f64) {
        self.target_val_loss = target_val_loss;
        self.outer_steps_to_target = self.trace.iter().find(|t| t.val_loss <= target_val_loss).map(|t| t.outer_version);
    }
}

/// Per-collective latency of the communication model, seconds.
pub const MODEL_LATENCY_S: f64 = 5e-6;

/// Modeled communication seconds over a link of `gbps` Gb/s: every
/// collective call costs `MODEL_LATENCY_S` plus the bytes one rank receives
/// in it divided by the bandwidth (payload all-gathers: the slowest rank's).
pub fn modeled_comm_seconds(steps: &[Vec<StepRecord>], workers: usize, gbps: f64) -> f64 {
    let bw = gbps * 1e9 / 8.0;
    let Some(first) = steps.first() else { return 0.0 };
    let mut total = 0.0;
    for t in 0..first.len() {
        let vote = (1 + workers) as f64 * 4.0 * (workers as f64 - 1.0).max(0.0);
        total += MODEL_LATENCY_S + vote / bw;
        if first[t].synced {
            let recv = steps.iter().map(|r| r[t].bytes_received).max().unwrap_or(0) as f64;
            total += 2.0 * MODEL_LATENCY_S + (8.0 * (workers as f64 - 1.0) + recv) / bw;
        }
    }
    total
}

/// Builds the run's metrics from every rank's output (in rank order, rank 0
/// first: it carries the model and the trace) and the coordinator's final
/// state (in-process, or restored from a service's snapshot); `wall_s` is
/// the job's measured wall-clock. The outer parameters' first
/// `problem.train.len()` entries are the per-example `lambda`s. Call
/// [`RunMetrics::set_target`] afterwards for `outer_steps_to_target`.
///
/// # Panics
/// When `outputs` is empty or rank 0's output has no model (a caller bug:
/// [`super::system::run_rank`] always returns it on rank 0).
pub fn summarize(
    problem: &Problem,
    variant: &Variant,
    outputs: &[RankOutput],
    coordinator: &Coordinator,
    wall_s: f64,
) -> RunMetrics {
    let w = outputs.len();
    let reports: Vec<&Vec<StepRecord>> = outputs.iter().map(|o| &o.steps).collect();
    let steps = reports[0].len();
    let mut m =
        RunMetrics { name: variant.name.clone(), workers: w, steps: steps as u64, wall_s, ..RunMetrics::default() };
    m.bytes_per_worker = reports.iter().map(|r| r.iter().map(|s| s.bytes_sent + s.control_bytes).sum()).collect();
    m.bytes_total = m.bytes_per_worker.iter().sum();
    m.control_bytes = reports.iter().flat_map(|r| r.iter()).map(|s| s.control_bytes).sum();
    m.bytes_received_max = reports.iter().map(|r| r.iter().map(|s| s.bytes_received).sum()).max().unwrap_or(0);
    for t in 0..steps {
        m.collective_calls += 1;
        if reports[0][t].synced {
            m.collective_calls += 2;
            m.syncs += 1;
            if reports.iter().any(|r| r[t].triggered) {
                m.syncs_triggered += 1;
            } else {
                m.syncs_forced += 1;
            }
        }
    }
    m.sync_s = outputs.iter().map(|o| o.sync_s).fold(f64::INFINITY, f64::min);
    let compute = (wall_s - m.sync_s).max(0.0);
    let owned: Vec<Vec<StepRecord>> = reports.iter().map(|r| r.to_vec()).collect();
    m.modeled_10g_s = compute + modeled_comm_seconds(&owned, w, 10.0);
    m.modeled_100g_s = compute + modeled_comm_seconds(&owned, w, 100.0);
    m.backpressure = outputs.iter().map(|o| o.backpressure).sum();
    m.entries_sent = reports.iter().flat_map(|r| r.iter()).map(|s| s.entries_sent).sum();
    m.momentum_cleared = outputs.iter().map(|o| o.momentum_cleared).sum();
    let cg: Vec<u32> = outputs.iter().flat_map(|o| o.cg_iterations.iter().copied()).collect();
    m.hypergradients = cg.len() as u64;
    m.cg_iterations_mean =
        if cg.is_empty() { 0.0 } else { cg.iter().map(|&c| f64::from(c)).sum::<f64>() / cg.len() as f64 };

    let stats = coordinator.stats();
    m.outer_steps = stats.outer_steps;
    m.accepted = stats.accepted;
    m.rejected = stats.rejected();
    m.staleness = stats.staleness_histogram.clone();

    let theta32 = outputs[0].theta.as_ref().expect("rank 0 returns the model");
    let theta: Vec<f64> = theta32.iter().map(|&v| f64::from(v)).collect();
    m.val_accuracy = accuracy(&theta, &problem.val);
    m.test_accuracy = accuracy(&theta, &problem.test);
    m.val_loss = validation_loss_grad(&theta, &problem.val).0;
    let outer = coordinator.outer_params();
    let n = problem.train.len();
    let flag: Vec<bool> = outer.iter().take(n).map(|&l| l < 0.0).collect();
    m.mu_final = outputs[0].mu_final;
    m.mu_rounds = outputs[0].mu_rounds;
    m.timescale_updates = coordinator.timescale_status().iter().map(|t| (t.range.start, t.every, t.updates)).collect();
    m.detection = Detection::score(&flag, &problem.flipped);
    m.trace = outputs[0].trace.clone();
    m
}
