//! The three configurations `chronos-sync hyperclean` compares.

use super::system::{OuterMode, Variant};
use chronos_sync::config::{Selection, SyncConfig, WireDtype};

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

/// The crate's best configuration for this problem: histogram top-k (no
/// sort) at `ratio` with bf16 values (4 bytes per entry with chunk-local u16
/// indices), error feedback, the significance trigger at `threshold`, and the
/// same bounded asynchrony as the seed.
///
/// This is the one place the best configuration's `SyncConfig` is built:
/// the threshold's budget mode (a target sync rate or bytes per step, from the
/// library's `budget` branch, not merged here yet) belongs in this literal.
pub fn best(ratio: f64, threshold: f64) -> Variant {
    let sync = SyncConfig {
        threshold,
        max_threshold: SyncConfig::default().max_threshold.max(threshold),
        min_threshold: SyncConfig::default().min_threshold.min(threshold),
        selection: Selection::TopKApprox { ratio, slack: 0.1 },
        wire_dtype: WireDtype::Bf16,
        ..SyncConfig::default()
    };
    Variant {
        name: format!("best (top-{}% bf16)", ratio * 100.0),
        sync,
        outer: OuterMode::BoundedAsync { max_staleness: 2, max_in_flight: 3, min_commits: 2 },
    }
}
