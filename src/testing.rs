//! Shared test helpers (test builds only).

use proptest::test_runner::{Config, RngAlgorithm, RngSeed};

/// A proptest configuration that makes a property test deterministic: a
/// fixed seed and algorithm (so neither `PROPTEST_RNG_SEED` nor the run
/// matters) and no failure persistence (so nothing depends on files under
/// `proptest-regressions/`; a case worth keeping becomes a plain test).
/// Only the case count is left to the caller.
pub(crate) fn fixed_proptest(cases: u32) -> Config {
    Config {
        cases,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0x5eed_c4c4),
        failure_persistence: None,
        ..Config::default()
    }
}
