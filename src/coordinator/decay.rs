//! Staleness decay: how much an accepted commit counts, as a function of how
//! many versions were published between its checkout and its commit.
//!
//! The spec's default is `0.5^staleness` ([`Exponential`]); the rule is
//! pluggable through the [`StalenessDecay`] trait.

use std::fmt::Debug;

/// Weight of an accepted commit as a function of its staleness.
///
/// Contract (checked for every staleness in `0..=max_staleness` when a
/// [`super::CoordinatorConfig`] is built): `weight` is a pure function of its
/// argument, finite and `> 0`. Being pure matters: a restored coordinator
/// recomputes nothing, but two coordinators fed the same commits must agree
/// bitwise. `weight(0)` need not be 1; only ratios matter, because the outer
/// step normalizes by the sum of weights.
pub trait StalenessDecay: Debug + Send + Sync {
    /// Weight of a commit that is `staleness` versions behind the current one.
    fn weight(&self, staleness: u64) -> f64;
}

/// `base^staleness`; the default is `base = 0.5`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exponential {
    /// Factor per version of staleness, in `(0, 1]`.
    pub base: f64,
}

impl Default for Exponential {
    fn default() -> Self {
        Exponential { base: 0.5 }
    }
}

impl StalenessDecay for Exponential {
    fn weight(&self, staleness: u64) -> f64 {
        // powi takes an i32; staleness above i32::MAX cannot be accepted by any
        // sane max_staleness, and the saturation keeps the function total.
        self.base.powi(staleness.min(i32::MAX as u64) as i32)
    }
}

/// `(1 + staleness)^-power` (a slower, heavy-tailed decay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Polynomial {
    /// Exponent, `>= 0`.
    pub power: f64,
}

impl StalenessDecay for Polynomial {
    fn weight(&self, staleness: u64) -> f64 {
        (1.0 + staleness as f64).powf(-self.power)
    }
}

/// Every accepted commit counts the same (staleness only decides rejection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Uniform;

impl StalenessDecay for Uniform {
    fn weight(&self, _staleness: u64) -> f64 {
        1.0
    }
}

/// `max(0, 1 - staleness / horizon)`: linear fall-off that reaches zero at
/// `horizon` (which must therefore exceed `max_staleness`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Linear {
    /// Staleness at which the weight reaches zero, `> 0`.
    pub horizon: f64,
}

impl StalenessDecay for Linear {
    fn weight(&self, staleness: u64) -> f64 {
        (1.0 - staleness as f64 / self.horizon).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_default_halves_per_version() {
        let d = Exponential::default();
        assert_eq!(d.weight(0), 1.0);
        assert_eq!(d.weight(1), 0.5);
        assert_eq!(d.weight(2), 0.25);
        assert_eq!(d.weight(10), 1.0 / 1024.0);
    }

    #[test]
    fn other_decays() {
        assert_eq!(Uniform.weight(7), 1.0);
        assert_eq!(Polynomial { power: 1.0 }.weight(3), 0.25);
        assert_eq!(Linear { horizon: 4.0 }.weight(1), 0.75);
        assert_eq!(Linear { horizon: 4.0 }.weight(9), 0.0);
    }
}
