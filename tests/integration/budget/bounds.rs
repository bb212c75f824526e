//! The steered threshold stays inside `[min_threshold, max_threshold]`
//! whatever the target, gain and updates (a deterministic property test).

use super::{fresh, run_ranks, stationary};
use crate::common::fixed_proptest;
use chronos_sync::{Selection, SyncConfig, ThresholdBudget};
use proptest::prelude::*;

fn any_budget() -> impl Strategy<Value = ThresholdBudget> {
    let target = prop_oneof![
        (0.001f64..=1.0).prop_map(ThresholdBudget::sync_rate),
        (1.0f64..5000.0).prop_map(ThresholdBudget::bytes_per_step),
    ];
    (target, 0.001f64..=1.0).prop_map(|(b, g)| b.with_gain(g))
}

proptest! {
    #![proptest_config(fixed_proptest(24))]

    /// Every step's threshold, the report's f32 and the controller's f64,
    /// lies in the bounds, for updates from negligible to huge against the
    /// parameters.
    #[test]
    fn prop_threshold_stays_in_bounds(
        budget in any_budget(),
        min in 1e-4f64..1e-2,
        span in 1.0f64..100.0,
        scale_exp in -7i32..1,
        warmup in 1u64..20,
        seed in any::<u64>(),
    ) {
        let max = min * span;
        let cfg = SyncConfig {
            min_threshold: min,
            max_threshold: max,
            threshold: min * span.sqrt(),
            warmup_steps: warmup,
            max_accumulation_steps: 1000,
            selection: Selection::TopK { ratio: 0.1 },
            budget: Some(budget),
            ..SyncConfig::default()
        };
        cfg.validate().unwrap();
        let scale = 10f32.powi(scale_exp);
        let runs = run_ranks(&cfg, fresh(2, 64, seed), 1, 200, &stationary(seed, move |r| scale * (1 + 9 * r) as f32));
        for s in &runs[0].trace {
            let tau = f64::from_bits(s.next_tau);
            prop_assert!((min..=max).contains(&tau), "step {}: tau {} outside [{}, {}]", s.t, tau, min, max);
            let t32 = s.report.threshold;
            prop_assert!(t32 >= min as f32 && t32 <= max as f32, "step {}: reported {} outside", s.t, t32);
        }
    }
}
