//! Hypergradients of the hyper-cleaning problem.
//!
//! Inner: `theta*(lambda) = argmin (1/denom) sum_i sigmoid(lambda_i) CE_i(theta) + mu/2 ||theta||^2`.
//! Outer: `F(lambda) = mean_j CE_j^val(theta*(lambda))`.
//!
//! Implicit differentiation: at the inner optimum, `grad_theta L = 0`, so
//! `dF/dlambda = -(d^2 L / dlambda dtheta)^T H^{-1} grad F`. We solve
//! `H v = grad F` with conjugate gradients on Hessian-vector products (never
//! forming `H`), then `dF/dlambda_i = -(1/denom) sigmoid'(lambda_i) (p_i - e_{y_i})^T (v x_i)`.
//!
//! The L2 strength as a hyperparameter: `d^2 L / dtheta d(log mu) = mu theta`,
//! so with the same `v`, `dF/d(log mu) = -mu theta . v` (one dot product more).
//!
//! [`unrolled_hypergradient`] differentiates `T` steps of gradient descent in
//! reverse mode instead: the reference the implicit one is tested against.

use super::model::{Curvature, Design, dot, loss_grad, sigmoid};

/// Options of the conjugate-gradient solve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CgOptions {
    /// Stop when `||r|| <= tol * ||b||`.
    pub tol: f64,
    /// At most this many iterations.
    pub max_iter: usize,
}

impl Default for CgOptions {
    fn default() -> Self {
        CgOptions { tol: 1e-10, max_iter: 200 }
    }
}

/// Result of [`conjugate_gradient`].
#[derive(Debug, Clone, PartialEq)]
pub struct CgSolution {
    /// The approximate solution.
    pub x: Vec<f64>,
    /// Iterations run.
    pub iterations: usize,
    /// `||b - A x|| / ||b||` at exit (0 when `b = 0`).
    pub relative_residual: f64,
}

/// Solves `A x = b` for symmetric positive definite `A` given only
/// `apply(v, out)`: `out = A v`. Starts from `x0` (or zero).
pub fn conjugate_gradient(
    mut apply: impl FnMut(&[f64], &mut [f64]),
    b: &[f64],
    x0: Option<&[f64]>,
    opts: CgOptions,
) -> CgSolution {
    let n = b.len();
    let b_norm = dot(b, b).sqrt();
    let mut x = x0.map_or_else(|| vec![0.0; n], <[f64]>::to_vec);
    if b_norm == 0.0 {
        return CgSolution { x: vec![0.0; n], iterations: 0, relative_residual: 0.0 };
    }
    let mut ap = vec![0.0; n];
    apply(&x, &mut ap);
    let mut r: Vec<f64> = b.iter().zip(&ap).map(|(bi, ai)| bi - ai).collect();
    let mut p = r.clone();
    let mut rr = dot(&r, &r);
    let mut it = 0;
    while it < opts.max_iter && rr.sqrt() > opts.tol * b_norm {
        apply(&p, &mut ap);
        let pap = dot(&p, &ap);
        if pap <= 0.0 {
            break; // not positive definite along p: stop rather than diverge
        }
        let alpha = rr / pap;
        for i in 0..n {
            x[i] += alpha * p[i];
            r[i] -= alpha * ap[i];
        }
        let rr_new = dot(&r, &r);
        let beta = rr_new / rr;
        for i in 0..n {
            p[i] = r[i] + beta * p[i];
        }
        rr = rr_new;
        it += 1;
    }
    CgSolution { x, iterations: it, relative_residual: rr.sqrt() / b_norm }
}

/// The inner problem at given outer parameters.
#[derive(Debug, Clone, Copy)]
pub struct InnerProblem<'a> {
    /// Training design (labels possibly corrupted).
    pub train: &'a Design,
    /// One outer parameter per training example; its weight is `sigmoid(lambda_i)`.
    pub lambda: &'a [f64],
    /// Normalizer of the weighted loss (the number of examples of the whole problem).
    pub denom: f64,
    /// L2 regularization strength (> 0).
    pub mu: f64,
}

impl InnerProblem<'_> {
    /// `sigmoid(lambda_i)` for every example.
    pub fn weights(&self) -> Vec<f64> {
        self.lambda.iter().map(|&l| sigmoid(l)).collect()
    }
}

/// A hypergradient and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypergradient {
    /// `dF/dlambda_i`, one per training example.
    pub grad: Vec<f64>,
    /// `F` at the `theta` used.
    pub val_loss: f64,
    /// `dF/d(log mu) = -mu theta . v`.
    pub log_mu: f64,
    /// Conjugate-gradient iterations.
    pub cg_iterations: usize,
    /// Relative residual of the linear solve.
    pub cg_residual: f64,
}

/// Validation loss `mean CE` and its gradient in `theta`.
pub fn validation_loss_grad(theta: &[f64], val: &Design) -> (f64, Vec<f64>) {
    let mut g = vec![0.0; theta.len()];
    let ones = vec![1.0; val.len()];
    let loss = loss_grad(theta, val, &ones, val.len() as f64, 0.0, &mut g);
    (loss, g)
}

/// `out_i = -(1/denom) sigmoid'(lambda_i) (p_i - e_{y_i})^T (v x_i)`: the
/// mixed second derivative applied to `v` (the last step of both methods).
fn mixed_term(probs: &[f64], inner: &InnerProblem<'_>, v: &[f64], scale: f64) -> Vec<f64> {
    let d = inner.train;
    (0..d.len())
        .map(|i| {
            let s = sigmoid(inner.lambda[i]);
            let row = d.row(i);
            let p = &probs[i * d.classes..(i + 1) * d.classes];
            let mut acc = 0.0;
            for k in 0..d.classes {
                let r = p[k] - if k == d.labels[i] { 1.0 } else { 0.0 };
                acc += r * dot(&v[k * d.dim..(k + 1) * d.dim], row);
            }
            -scale * s * (1.0 - s) / inner.denom * acc
        })
        .collect()
}

/// The implicit-differentiation hypergradient at `theta` (assumed to be, or
/// to approximate, the inner minimizer). `warm` optionally starts CG from a
/// previous solution of `H v = grad F`; the solution is returned in `v_out`
/// for the next call.
pub fn implicit_hypergradient(
    theta: &[f64],
    inner: &InnerProblem<'_>,
    val: &Design,
    cg: CgOptions,
    warm: Option<&[f64]>,
    v_out: Option<&mut Vec<f64>>,
) -> Hypergradient {
    let (val_loss, gf) = validation_loss_grad(theta, val);
    let curv = Curvature::new(theta, inner.train, &inner.weights(), inner.denom, inner.mu);
    let sol = conjugate_gradient(|v, out| curv.hvp(v, out), &gf, warm, cg);
    let grad = mixed_term(curv.probs(), inner, &sol.x, 1.0);
    let log_mu = -inner.mu * dot(theta, &sol.x);
    let out =
        Hypergradient { grad, val_loss, log_mu, cg_iterations: sol.iterations, cg_residual: sol.relative_residual };
    if let Some(v) = v_out {
        *v = sol.x;
    }
    out
}

/// Reverse-mode derivative of `F(theta_T)` through `steps` steps of
/// `theta_{t+1} = theta_t - lr grad L(theta_t)` from `theta0`. Returns
/// `(theta_T, dF/dlambda)`. Keeps every iterate: for small problems (tests).
pub fn unrolled_hypergradient(
    inner: &InnerProblem<'_>,
    val: &Design,
    theta0: &[f64],
    steps: usize,
    lr: f64,
) -> (Vec<f64>, Vec<f64>) {
    let weights = inner.weights();
    let mut iterates = Vec::with_capacity(steps + 1);
    iterates.push(theta0.to_vec());
    let mut g = vec![0.0; theta0.len()];
    for t in 0..steps {
        let theta = &iterates[t];
        loss_grad(theta, inner.train, &weights, inner.denom, inner.mu, &mut g);
        let next: Vec<f64> = theta.iter().zip(&g).map(|(x, gi)| x - lr * gi).collect();
        iterates.push(next);
    }
    let theta_t = iterates[steps].clone();
    // a = dF/dtheta_t, walked back to t = 0, collecting dF/dlambda on the way.
    let (_, mut a) = validation_loss_grad(&theta_t, val);
    let mut dlambda = vec![0.0; inner.lambda.len()];
    let mut ha = vec![0.0; a.len()];
    for t in (0..steps).rev() {
        let theta = &iterates[t];
        let curv = Curvature::new(theta, inner.train, &weights, inner.denom, inner.mu);
        // theta_{t+1} depends on lambda through -lr * dL/dtheta: its
        // contribution is -lr * (d^2 L / dlambda dtheta)^T a.
        let contrib = mixed_term(curv.probs(), inner, &a, lr);
        dlambda.iter_mut().zip(&contrib).for_each(|(d, c)| *d += c);
        curv.hvp(&a, &mut ha);
        a.iter_mut().zip(&ha).for_each(|(ai, h)| *ai -= lr * h);
    }
    (theta_t, dlambda)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cg_solves_an_spd_system() {
        let a = [[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]];
        let b = [1.0, 2.0, 3.0];
        let sol = conjugate_gradient(
            |v, out| {
                for i in 0..3 {
                    out[i] = (0..3).map(|j| a[i][j] * v[j]).sum();
                }
            },
            &b,
            None,
            CgOptions::default(),
        );
        for i in 0..3 {
            let ax: f64 = (0..3).map(|j| a[i][j] * sol.x[j]).sum();
            assert!((ax - b[i]).abs() < 1e-9);
        }
        assert!(sol.iterations <= 3);
    }
}
