//! The hyper-cleaning workload: hypergradient checks (finite differences,
//! unrolled reverse mode, ridge closed form) and a shortened run of the
//! three sync configurations.

use chronos_sync::workload::data::{SplitSpec, load_digits, split_and_flip};
use chronos_sync::workload::hypergrad::{CgOptions, InnerProblem, implicit_hypergradient, unrolled_hypergradient, validation_loss_grad};
use chronos_sync::workload::model::{Design, FeatureMap, fit, gram_top_eigenvalue};
use chronos_sync::workload::ridge::RidgeProblem;
use chronos_sync::workload::rng::SplitMix64;

/// A small, well-conditioned instance on real digits: 40 noisy training and
/// 30 validation examples, raw pixels (650 parameters).
fn small_problem() -> (Design, Design, Vec<f64>, f64) {
    let data = load_digits().unwrap();
    let split = split_and_flip(&data, &SplitSpec::default()).unwrap();
    let idx: Vec<usize> = (0..40).collect();
    let train = FeatureMap::Raw.apply(&split.train.select(&idx));
    let val = FeatureMap::Raw.apply(&split.val.select(&(0..30).collect::<Vec<_>>()));
    let mut rng = SplitMix64::new(11);
    let lambda: Vec<f64> = (0..train.len()).map(|_| rng.normal()).collect();
    (train, val, lambda, 0.05)
}

fn inner_optimum(train: &Design, lambda: &[f64], mu: f64) -> Vec<f64> {
    let inner = InnerProblem { train, lambda, denom: train.len() as f64, mu };
    fit(train, &inner.weights(), inner.denom, mu, vec![0.0; train.param_len()], 3000)
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den
}

#[test]
fn implicit_hypergradient_matches_finite_differences() {
    let (train, val, lambda, mu) = small_problem();
    let theta = inner_optimum(&train, &lambda, mu);
    let inner = InnerProblem { train: &train, lambda: &lambda, denom: train.len() as f64, mu };
    let hg = implicit_hypergradient(&theta, &inner, &val, CgOptions { tol: 1e-12, max_iter: 2000 }, None, None);
    assert!(hg.cg_residual < 1e-10, "CG residual {}", hg.cg_residual);
    let h = 1e-4;
    let mut checked = 0;
    for i in [0usize, 3, 7, 19, 33] {
        let f_at = |delta: f64| {
            let mut l = lambda.clone();
            l[i] += delta;
            validation_loss_grad(&inner_optimum(&train, &l, mu), &val).0
        };
        let fd = (f_at(h) - f_at(-h)) / (2.0 * h);
        let err = (fd - hg.grad[i]).abs();
        assert!(err <= 1e-6 + 1e-4 * fd.abs(), "lambda_{i}: finite difference {fd:e}, implicit {:e}", hg.grad[i]);
        checked += usize::from(fd.abs() > 1e-6);
    }
    assert!(checked >= 3, "the checked coordinates must carry signal");
}

#[test]
fn implicit_hypergradient_matches_the_unrolled_solver() {
    let (train, val, lambda, mu) = small_problem();
    let inner = InnerProblem { train: &train, lambda: &lambda, denom: train.len() as f64, mu };
    let smooth = 0.5 * gram_top_eigenvalue(&train, &inner.weights(), inner.denom, 100) + mu;
    let lr = 1.0 / smooth;
    let (theta_t, unrolled) = unrolled_hypergradient(&inner, &val, &vec![0.0; train.param_len()], 1500, lr);
    let implicit = implicit_hypergradient(&theta_t, &inner, &val, CgOptions { tol: 1e-12, max_iter: 2000 }, None, None);
    let err = rel_err(&implicit.grad, &unrolled);
    assert!(err < 1e-4, "relative difference {err:e}");
    // Few unrolled steps are far from the implicit (converged) answer: the
    // comparison above is not vacuous.
    let (_, short) = unrolled_hypergradient(&inner, &val, &vec![0.0; train.param_len()], 5, lr);
    assert!(rel_err(&short, &unrolled) > 1e-2);
}

#[test]
fn ridge_hypergradient_matches_closed_form_to_1e6() {
    let problem = RidgeProblem::diabetes(300, 3).unwrap();
    for rho in [-4.0, -1.0, 0.5, 2.0] {
        let closed = problem.hypergradient_closed_form(rho);
        let implicit = problem.hypergradient_implicit(rho, CgOptions { tol: 1e-14, max_iter: 500 });
        assert!((closed - implicit).abs() <= 1e-6 * closed.abs().max(1e-3), "rho {rho}: {closed:e} vs {implicit:e}");
        let h = 1e-5;
        let f = |r: f64| problem.val_loss_grad(&problem.solve_closed_form(r)).0;
        let fd = (f(rho + h) - f(rho - h)) / (2.0 * h);
        assert!((fd - closed).abs() <= 1e-6 * closed.abs().max(1e-3), "rho {rho}: fd {fd:e} vs {closed:e}");
    }
    assert!(RidgeProblem::diabetes(0, 3).is_err());
    assert!(RidgeProblem::diabetes(442, 3).is_err());
}
