//! A bilevel problem with a closed-form answer, to check the implicit
//! hypergradient machinery (CG on Hessian-vector products) to 1e-6.
//!
//! Inner: `w*(rho) = argmin (1/2n) ||X w - y||^2 + (e^rho / 2) ||w||^2`
//! (ridge regression, log-parameterized strength). Outer:
//! `F(rho) = (1/2m) ||X_val w*(rho) - y_val||^2`.
//! Closed form: with `A = X^T X / n + e^rho I`, `w* = A^{-1} X^T y / n` and
//! `dF/drho = -e^rho grad F^T A^{-1} w*`, evaluated with a Cholesky factorization.

use super::hypergrad::{CgOptions, conjugate_gradient};
use super::model::dot;
use super::rng::SplitMix64;
use chronos_sync::error::{Error, Result};

/// A standardized regression problem split into a training and a validation part.
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeProblem {
    /// Training features, row-major `n x dim`.
    pub x_train: Vec<f64>,
    /// Training targets.
    pub y_train: Vec<f64>,
    /// Validation features, row-major `m x dim`.
    pub x_val: Vec<f64>,
    /// Validation targets.
    pub y_val: Vec<f64>,
    /// Feature dimension.
    pub dim: usize,
}

impl RidgeProblem {
    /// The diabetes data set bundled in `smartcore` (442 x 10): features and
    /// target standardized, shuffled with `seed`, first `train` examples for
    /// training and the rest for validation.
    pub fn diabetes(train: usize, seed: u64) -> Result<Self> {
        let raw = smartcore::dataset::diabetes::load_dataset();
        let (n, dim) = (raw.num_samples, raw.num_features);
        if train == 0 || train >= n {
            return Err(Error::InvalidConfig { field: "train", reason: format!("must be in 1..{n}, got {train}") });
        }
        let mut x: Vec<f64> = raw.data.iter().map(|&v| f64::from(v)).collect();
        let mut y: Vec<f64> = raw.target.iter().map(|&v| f64::from(v)).collect();
        for j in 0..dim {
            let col: Vec<f64> = (0..n).map(|i| x[i * dim + j]).collect();
            let (mean, sd) = mean_sd(&col);
            for i in 0..n {
                x[i * dim + j] = (x[i * dim + j] - mean) / sd;
            }
        }
        let (mean, sd) = mean_sd(&y);
        y.iter_mut().for_each(|v| *v = (*v - mean) / sd);
        let mut order: Vec<usize> = (0..n).collect();
        SplitMix64::new(seed).shuffle(&mut order);
        let rows =
            |idx: &[usize]| -> Vec<f64> { idx.iter().flat_map(|&i| x[i * dim..(i + 1) * dim].to_vec()).collect() };
        let targets = |idx: &[usize]| -> Vec<f64> { idx.iter().map(|&i| y[i]).collect() };
        Ok(RidgeProblem {
            x_train: rows(&order[..train]),
            y_train: targets(&order[..train]),
            x_val: rows(&order[train..]),
            y_val: targets(&order[train..]),
            dim,
        })
    }

    fn n(&self) -> usize {
        self.y_train.len()
    }

    /// `out = (X^T X / n + e^rho I) v` without forming the matrix.
    pub fn hvp(&self, rho: f64, v: &[f64], out: &mut [f64]) {
        let d = self.dim;
        out.iter_mut().zip(v).for_each(|(o, vi)| *o = rho.exp() * vi);
        let inv_n = 1.0 / self.n() as f64;
        for i in 0..self.n() {
            let row = &self.x_train[i * d..(i + 1) * d];
            let xv = dot(row, v) * inv_n;
            out.iter_mut().zip(row).for_each(|(o, r)| *o += xv * r);
        }
    }

    /// `X^T y / n`.
    fn xty(&self) -> Vec<f64> {
        let d = self.dim;
        let mut b = vec![0.0; d];
        for i in 0..self.n() {
            let row = &self.x_train[i * d..(i + 1) * d];
            let s = self.y_train[i] / self.n() as f64;
            b.iter_mut().zip(row).for_each(|(bj, r)| *bj += s * r);
        }
        b
    }

    /// `A = X^T X / n + e^rho I`, dense.
    fn system_matrix(&self, rho: f64) -> Vec<f64> {
        let d = self.dim;
        let mut a = vec![0.0; d * d];
        for j in 0..d {
            let mut e = vec![0.0; d];
            e[j] = 1.0;
            self.hvp(rho, &e, &mut a[j * d..(j + 1) * d]);
        }
        a
    }

    /// The inner minimizer by a Cholesky solve.
    pub fn solve_closed_form(&self, rho: f64) -> Vec<f64> {
        cholesky_solve(&self.system_matrix(rho), self.dim, &self.xty())
    }

    /// `F(w)` and its gradient.
    pub fn val_loss_grad(&self, w: &[f64]) -> (f64, Vec<f64>) {
        let d = self.dim;
        let m = self.y_val.len() as f64;
        let mut g = vec![0.0; d];
        let mut loss = 0.0;
        for (i, &yi) in self.y_val.iter().enumerate() {
            let row = &self.x_val[i * d..(i + 1) * d];
            let r = dot(row, w) - yi;
            loss += 0.5 * r * r / m;
            g.iter_mut().zip(row).for_each(|(gj, x)| *gj += r * x / m);
        }
        (loss, g)
    }

    /// `dF/drho` from the closed form (Cholesky solves).
    pub fn hypergradient_closed_form(&self, rho: f64) -> f64 {
        let a = self.system_matrix(rho);
        let w = cholesky_solve(&a, self.dim, &self.xty());
        let (_, gf) = self.val_loss_grad(&w);
        let aw = cholesky_solve(&a, self.dim, &w);
        -rho.exp() * dot(&gf, &aw)
    }

    /// `dF/drho` by implicit differentiation: the inner problem and the
    /// adjoint system solved by conjugate gradients on Hessian-vector products.
    pub fn hypergradient_implicit(&self, rho: f64, cg: CgOptions) -> f64 {
        let w = conjugate_gradient(|v, out| self.hvp(rho, v, out), &self.xty(), None, cg).x;
        let (_, gf) = self.val_loss_grad(&w);
        let v = conjugate_gradient(|v, out| self.hvp(rho, v, out), &gf, None, cg).x;
        // d^2 L / drho dw = e^rho w.
        -rho.exp() * dot(&w, &v)
    }
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt().max(1e-12))
}

/// Solves `A x = b` for symmetric positive definite `A` (`d x d`, row-major).
///
/// # Panics
/// When `A` is not positive definite (a programming error here: ridge systems are).
fn cholesky_solve(a: &[f64], d: usize, b: &[f64]) -> Vec<f64> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = a[i * d + j] - (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum::<f64>();
            if i == j {
                assert!(s > 0.0, "matrix is not positive definite");
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    let mut z = vec![0.0; d];
    for i in 0..d {
        z[i] = (b[i] - (0..i).map(|k| l[i * d + k] * z[k]).sum::<f64>()) / l[i * d + i];
    }
    let mut x = vec![0.0; d];
    for i in (0..d).rev() {
        x[i] = (z[i] - (i + 1..d).map(|k| l[k * d + i] * x[k]).sum::<f64>()) / l[i * d + i];
    }
    x
}
