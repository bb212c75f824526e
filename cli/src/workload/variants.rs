//! The three configurations `chronos-sync hyperclean` compares.

use super::system::{OuterMode, Variant};
use chronos_sync::config::{Selection, SyncConfig, ThresholdBudget, WireDtype};

/// Dense synchronous training: every step, every rank sends its whole update
/// (f32, `Selection::Dense`) and the outer step waits for every worker.
pub fn dense() -> Variant {
    let sync = SyncConfig {
        threshold: 0.0,
        adaptive: false,
        min_threshold: 0.0,
        max_threshold: 0.0,
        max_accumulation_steps: 1,
        selection: Selection::Dense,
        wire_dtype: WireDtype::F32,
        ..SyncConfig::default()
    };
    Variant { name: "dense sync".into(), sync, outer: OuterMode::Synchronous }
}

/// The seed's configuration: significance trigger with the adaptive warm-up
/// (threshold 0.01), exact top-1% in f32 with error feedback, bounded
/// asynchrony (staleness <= 2, 3 versions in flight, an outer step every
/// two commits).
pub fn seed() -> Variant {
    let sync =
        SyncConfig { selection: Selection::TopK { ratio: 0.01 }, wire_dtype: WireDtype::F32, ..SyncConfig::default() };
    Variant {
        name: "seed (top-1% f32)".into(),
        sync,
        outer: OuterMode::BoundedAsync { max_staleness: 2, max_in_flight: 3, min_commits: 2 },
    }
}

/// The threshold ceiling of a budgeted best configuration (see [`best`]).
pub const BUDGET_MAX_THRESHOLD: f64 = 1000.0;

/// The crate's best configuration for this problem: histogram top-k (no
/// sort) at `ratio` with bf16 values (4 bytes per entry with chunk-local u16
/// indices), error feedback, the significance trigger at `threshold`, and the
/// same bounded asynchrony as the seed.
///
/// `budget`, when given, steers the threshold after warm-up toward a target
/// sync rate or bytes per step (`SyncConfig::budget`); `threshold` is then
/// where the controller starts. `outer` is the outer mode (the seed's
/// bounded asynchrony, or synchronous outer steps).
pub fn best(ratio: f64, threshold: f64, budget: Option<ThresholdBudget>, outer: OuterMode) -> Variant {
    let sync = SyncConfig {
        budget,
        threshold,
        // Under a budget the controller needs room: this problem's
        // significance starts far above 1 (theta starts at zero), so the
        // seed's ceiling of 0.1 would pin tau and sync every step.
        max_threshold: if budget.is_some() { BUDGET_MAX_THRESHOLD } else { SyncConfig::default().max_threshold }
            .max(threshold),
        min_threshold: SyncConfig::default().min_threshold.min(threshold),
        selection: Selection::TopKApprox { ratio, slack: 0.1 },
        wire_dtype: WireDtype::Bf16,
        ..SyncConfig::default()
    };
    Variant { name: format!("best (top-{}% bf16)", ratio * 100.0), sync, outer }
}
