//! The inner model: multinomial logistic (softmax) regression on a feature
//! map, with per-example weights and L2 regularization, and its hand-derived
//! gradient and Hessian-vector product.
//!
//! Objective for weights `w_i >= 0` and normalizer `denom`:
//! `L(theta) = (1/denom) sum_i w_i CE_i(theta) + mu/2 ||theta||^2`, where
//! `CE_i = -log softmax(theta x_i)[y_i]`. `theta` is `classes x dim`,
//! row-major (one row of weights per class).

use super::data::LabeledSet;
use super::rng::SplitMix64;

/// A design matrix: examples mapped to features, with their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    /// Mapped features, `len() * dim`, example after example.
    pub x: Vec<f64>,
    /// Mapped dimension (including the constant bias feature).
    pub dim: usize,
    /// Labels in `0..classes`.
    pub labels: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
}

impl Design {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True without examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Features of example `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.dim..(i + 1) * self.dim]
    }
    /// The examples at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Design {
        let mut x = Vec::with_capacity(idx.len() * self.dim);
        for &i in idx {
            x.extend_from_slice(self.row(i));
        }
        Design { x, dim: self.dim, labels: idx.iter().map(|&i| self.labels[i]).collect(), classes: self.classes }
    }
    /// The same features with other labels (same length).
    pub fn with_labels(&self, labels: &[usize]) -> Design {
        assert_eq!(labels.len(), self.len(), "with_labels: one label per example");
        Design { labels: labels.to_vec(), ..self.clone() }
    }
    /// The examples of `self` followed by those of `other` (same `dim` and `classes`).
    ///
    /// # Panics
    /// When the two designs differ in `dim` or `classes` (a programming error).
    pub fn concat(&self, other: &Design) -> Design {
        assert!(self.dim == other.dim && self.classes == other.classes, "concat: designs of different shapes");
        let mut x = Vec::with_capacity(self.x.len() + other.x.len());
        x.extend_from_slice(&self.x);
        x.extend_from_slice(&other.x);
        let mut labels = self.labels.clone();
        labels.extend_from_slice(&other.labels);
        Design { x, dim: self.dim, labels, classes: self.classes }
    }
    /// Number of model parameters for this design: `classes * dim`.
    pub fn param_len(&self) -> usize {
        self.classes * self.dim
    }
}

/// How raw inputs become features. Both maps append a constant 1 (the bias).
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureMap {
    /// The raw inputs.
    Raw,
    /// Random Fourier features `sqrt(2/D) cos(omega_j . x + b_j)`, an
    /// approximation of the Gaussian kernel `exp(-bandwidth/2 ||x - x'||^2)`.
    Fourier {
        /// `D x input_dim` frequencies, `omega ~ N(0, bandwidth I)`.
        omega: Vec<f64>,
        /// `D` phases, uniform in `[0, 2 pi)`.
        phase: Vec<f64>,
        /// Input dimension.
        input_dim: usize,
    },
}

impl FeatureMap {
    /// `features` random Fourier features of `input_dim` inputs, drawn from `seed`.
    pub fn fourier(input_dim: usize, features: usize, bandwidth: f64, seed: u64) -> FeatureMap {
        let mut rng = SplitMix64::new(seed);
        let sd = bandwidth.sqrt();
        let omega = (0..features * input_dim).map(|_| rng.normal() * sd).collect();
        let phase = (0..features).map(|_| rng.next_f64() * std::f64::consts::TAU).collect();
        FeatureMap::Fourier { omega, phase, input_dim }
    }

    /// Output dimension for `input_dim` inputs (bias included).
    pub fn output_dim(&self, input_dim: usize) -> usize {
        match self {
            FeatureMap::Raw => input_dim + 1,
            FeatureMap::Fourier { phase, .. } => phase.len() + 1,
        }
    }

    /// Maps every example of `set`.
    ///
    /// # Panics
    /// When a Fourier map was drawn for another input dimension (a programming error).
    pub fn apply(&self, set: &LabeledSet) -> Design {
        let dim = self.output_dim(set.dim);
        let mut x = Vec::with_capacity(set.len() * dim);
        for i in 0..set.len() {
            let row = set.row(i);
            match self {
                FeatureMap::Raw => x.extend_from_slice(row),
                FeatureMap::Fourier { omega, phase, input_dim } => {
                    assert_eq!(*input_dim, set.dim, "feature map drawn for another input dimension");
                    let scale = (2.0 / phase.len() as f64).sqrt();
                    for (j, b) in phase.iter().enumerate() {
                        let w = &omega[j * input_dim..(j + 1) * input_dim];
                        x.push(scale * (dot(w, row) + b).cos());
                    }
                }
            }
            x.push(1.0);
        }
        Design { x, dim, labels: set.labels.clone(), classes: set.classes }
    }
}

/// `sum a_i b_i` with four independent accumulators (so it vectorizes).
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f64; 4];
    let ca = a.chunks_exact(4);
    let cb = b.chunks_exact(4);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        acc[0] += x[0] * y[0];
        acc[1] += x[1] * y[1];
        acc[2] += x[2] * y[2];
        acc[3] += x[3] * y[3];
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Examples are processed four at a time so each class row of `theta` (or of
/// the direction) is read once per block rather than once per example.
const BLOCK: usize = 4;

/// `[w . r_0, .., w . r_3]` in one pass over `w`.
fn dots4(w: &[f64], r: [&[f64]; BLOCK]) -> [f64; BLOCK] {
    let mut acc = [[0.0f64; 2]; BLOCK];
    let n2 = w.len() / 2 * 2;
    let mut j = 0;
    while j < n2 {
        let (w0, w1) = (w[j], w[j + 1]);
        for b in 0..BLOCK {
            acc[b][0] += w0 * r[b][j];
            acc[b][1] += w1 * r[b][j + 1];
        }
        j += 2;
    }
    let mut out = [0.0; BLOCK];
    for b in 0..BLOCK {
        out[b] = acc[b][0] + acc[b][1];
        if n2 < w.len() {
            out[b] += w[n2] * r[b][n2];
        }
    }
    out
}

/// `y += sum_b c_b r_b` in one pass over `y`.
fn axpy4(c: [f64; BLOCK], r: [&[f64]; BLOCK], y: &mut [f64]) {
    for (j, yj) in y.iter_mut().enumerate() {
        *yj += (c[0] * r[0][j] + c[1] * r[1][j]) + (c[2] * r[2][j] + c[3] * r[3][j]);
    }
}

/// Rows `i0..i0 + BLOCK` of `d`, padded with the last row past the end
/// (padded entries get zero coefficients).
fn block_rows(d: &Design, i0: usize) -> [&[f64]; BLOCK] {
    std::array::from_fn(|b| d.row((i0 + b).min(d.len() - 1)))
}

/// Logistic sigmoid, stable for large `|z|`.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// In place: logits to probabilities; returns `-log p[label]`.
fn softmax_in_place(p: &mut [f64], label: usize) -> f64 {
    let max = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for pk in p.iter_mut() {
        *pk = (*pk - max).exp();
        sum += *pk;
    }
    for pk in p.iter_mut() {
        *pk /= sum;
    }
    -(p[label].max(f64::MIN_POSITIVE)).ln()
}

/// Logits of the block at `i0` into `z[b * classes + k]`.
fn block_logits(theta: &[f64], d: &Design, rows: [&[f64]; BLOCK], z: &mut [f64]) {
    for k in 0..d.classes {
        let zk = dots4(&theta[k * d.dim..(k + 1) * d.dim], rows);
        for b in 0..BLOCK {
            z[b * d.classes + k] = zk[b];
        }
    }
}

/// Softmax probabilities of every example, `len() x classes`.
pub fn probabilities(theta: &[f64], d: &Design) -> Vec<f64> {
    let c = d.classes;
    let mut out = vec![0.0; d.len() * c];
    let mut z = vec![0.0; BLOCK * c];
    for i0 in (0..d.len()).step_by(BLOCK) {
        block_logits(theta, d, block_rows(d, i0), &mut z);
        for b in 0..BLOCK.min(d.len() - i0) {
            let p = &mut out[(i0 + b) * c..(i0 + b + 1) * c];
            p.copy_from_slice(&z[b * c..(b + 1) * c]);
            softmax_in_place(p, d.labels[i0 + b]);
        }
    }
    out
}

/// Per-example cross-entropies.
pub fn cross_entropies(theta: &[f64], d: &Design) -> Vec<f64> {
    let p = probabilities(theta, d);
    (0..d.len()).map(|i| -(p[i * d.classes + d.labels[i]].max(f64::MIN_POSITIVE)).ln()).collect()
}

/// `L(theta)` and its gradient (written to `grad`, length `classes * dim`).
/// `weights[i]` multiplies example `i`'s cross-entropy.
pub fn loss_grad(theta: &[f64], d: &Design, weights: &[f64], denom: f64, mu: f64, grad: &mut [f64]) -> f64 {
    debug_assert_eq!(weights.len(), d.len());
    grad.iter_mut().zip(theta).for_each(|(g, t)| *g = mu * t);
    let mut loss = 0.5 * mu * dot(theta, theta);
    let c = d.classes;
    let mut z = vec![0.0; BLOCK * c];
    for i0 in (0..d.len()).step_by(BLOCK) {
        let rows = block_rows(d, i0);
        block_logits(theta, d, rows, &mut z);
        let mut w = [0.0; BLOCK];
        for b in 0..BLOCK.min(d.len() - i0) {
            let i = i0 + b;
            w[b] = weights[i] / denom;
            let p = &mut z[b * c..(b + 1) * c];
            let ce = softmax_in_place(p, d.labels[i]);
            if w[b] != 0.0 {
                loss += w[b] * ce;
            }
            p[d.labels[i]] -= 1.0;
        }
        for k in 0..c {
            let coef: [f64; BLOCK] = std::array::from_fn(|b| w[b] * z[b * c + k]);
            axpy4(coef, rows, &mut grad[k * d.dim..(k + 1) * d.dim]);
        }
    }
    loss
}

/// The curvature of `L` at one `theta`: the probabilities are cached so that
/// each Hessian-vector product costs two passes over the data.
#[derive(Debug, Clone)]
pub struct Curvature<'a> {
    design: &'a Design,
    probs: Vec<f64>,
    /// `weights[i] / denom`.
    scaled: Vec<f64>,
    mu: f64,
}

impl<'a> Curvature<'a> {
    /// Caches what the Hessian of `L` at `theta` needs.
    pub fn new(theta: &[f64], design: &'a Design, weights: &[f64], denom: f64, mu: f64) -> Self {
        Curvature {
            design,
            probs: probabilities(theta, design),
            scaled: weights.iter().map(|w| w / denom).collect(),
            mu,
        }
    }

    /// Probabilities at the cached `theta`, `len() x classes`.
    pub fn probs(&self) -> &[f64] {
        &self.probs
    }

    /// `out = H v` with `H = (1/denom) sum_i w_i (diag(p_i) - p_i p_i^T) (x) x_i x_i^T + mu I`.
    pub fn hvp(&self, v: &[f64], out: &mut [f64]) {
        let d = self.design;
        out.iter_mut().zip(v).for_each(|(o, vi)| *o = self.mu * vi);
        let c = d.classes;
        let mut u = vec![0.0; BLOCK * c];
        for i0 in (0..d.len()).step_by(BLOCK) {
            let rows = block_rows(d, i0);
            block_logits(v, d, rows, &mut u);
            let mut w = [0.0; BLOCK];
            for b in 0..BLOCK.min(d.len() - i0) {
                let i = i0 + b;
                w[b] = self.scaled[i];
                let p = &self.probs[i * c..(i + 1) * c];
                let ub = &mut u[b * c..(b + 1) * c];
                let pu = dot(p, ub);
                for k in 0..c {
                    ub[k] = p[k] * (ub[k] - pu);
                }
            }
            for k in 0..c {
                let coef: [f64; BLOCK] = std::array::from_fn(|b| w[b] * u[b * c + k]);
                axpy4(coef, rows, &mut out[k * d.dim..(k + 1) * d.dim]);
            }
        }
    }
}

/// Fraction of examples whose arg-max class equals the label.
pub fn accuracy(theta: &[f64], d: &Design) -> f64 {
    if d.is_empty() {
        return 0.0;
    }
    let mut correct = 0usize;
    for i in 0..d.len() {
        let row = d.row(i);
        let mut best = (f64::NEG_INFINITY, 0usize);
        for k in 0..d.classes {
            let z = dot(&theta[k * d.dim..(k + 1) * d.dim], row);
            if z > best.0 {
                best = (z, k);
            }
        }
        correct += usize::from(best.1 == d.labels[i]);
    }
    correct as f64 / d.len() as f64
}

/// Largest eigenvalue of `(1/denom) sum_i w_i x_i x_i^T` by power iteration
/// (used to bound the smoothness constant of `L`).
pub fn gram_top_eigenvalue(d: &Design, weights: &[f64], denom: f64, iters: usize) -> f64 {
    let mut v = vec![1.0 / (d.dim as f64).sqrt(); d.dim];
    let mut lambda = 0.0;
    for _ in 0..iters {
        let mut out = vec![0.0; d.dim];
        for (i, w) in weights.iter().enumerate().take(d.len()) {
            let row = d.row(i);
            axpy(w / denom * dot(row, &v), row, &mut out);
        }
        let norm = dot(&out, &out).sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        lambda = norm;
        v = out.into_iter().map(|o| o / norm).collect();
    }
    lambda
}

/// Minimizes `L` from `theta` with Nesterov's accelerated gradient for
/// strongly convex functions (step `1/Lsmooth`, momentum from the condition
/// number), `iters` iterations; returns the minimizer estimate.
pub fn fit(d: &Design, weights: &[f64], denom: f64, mu: f64, theta: Vec<f64>, iters: usize) -> Vec<f64> {
    assert!(mu > 0.0, "fit needs mu > 0 (strong convexity)");
    // The softmax Hessian w.r.t. the logits has eigenvalues <= 1/2.
    let smooth = 0.5 * gram_top_eigenvalue(d, weights, denom, 50) * 1.05 + mu;
    let kappa = smooth / mu;
    let beta = (kappa.sqrt() - 1.0) / (kappa.sqrt() + 1.0);
    let step = 1.0 / smooth;
    let mut x = theta;
    let mut x_prev = x.clone();
    let mut y = x.clone();
    let mut g = vec![0.0; x.len()];
    for _ in 0..iters {
        loss_grad(&y, d, weights, denom, mu, &mut g);
        std::mem::swap(&mut x_prev, &mut x);
        for i in 0..x.len() {
            x[i] = y[i] - step * g[i];
        }
        for i in 0..x.len() {
            y[i] = x[i] + beta * (x[i] - x_prev[i]);
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(seed: u64) -> Design {
        let mut rng = SplitMix64::new(seed);
        let (n, dim, classes) = (12, 5, 3);
        Design {
            x: (0..n * dim).map(|_| rng.normal()).collect(),
            dim,
            labels: (0..n).map(|_| rng.below(classes as u64) as usize).collect(),
            classes,
        }
    }

    #[test]
    fn gradient_and_hvp_match_finite_differences() {
        let d = tiny(3);
        let mut rng = SplitMix64::new(9);
        let theta: Vec<f64> = (0..d.param_len()).map(|_| 0.3 * rng.normal()).collect();
        let w: Vec<f64> = (0..d.len()).map(|_| rng.next_f64()).collect();
        let (denom, mu) = (d.len() as f64, 0.07);
        let mut g = vec![0.0; theta.len()];
        loss_grad(&theta, &d, &w, denom, mu, &mut g);
        let dir: Vec<f64> = (0..theta.len()).map(|_| rng.normal()).collect();
        let h = 1e-5;
        let shifted = |s: f64| -> Vec<f64> { theta.iter().zip(&dir).map(|(t, v)| t + s * v).collect() };
        let mut scratch = vec![0.0; theta.len()];
        let fd = (loss_grad(&shifted(h), &d, &w, denom, mu, &mut scratch)
            - loss_grad(&shifted(-h), &d, &w, denom, mu, &mut scratch))
            / (2.0 * h);
        assert!((fd - dot(&g, &dir)).abs() < 1e-8, "{fd} vs {}", dot(&g, &dir));
        let mut gp = vec![0.0; theta.len()];
        let mut gm = vec![0.0; theta.len()];
        loss_grad(&shifted(h), &d, &w, denom, mu, &mut gp);
        loss_grad(&shifted(-h), &d, &w, denom, mu, &mut gm);
        let mut hv = vec![0.0; theta.len()];
        Curvature::new(&theta, &d, &w, denom, mu).hvp(&dir, &mut hv);
        for i in 0..theta.len() {
            let fd = (gp[i] - gm[i]) / (2.0 * h);
            assert!((fd - hv[i]).abs() < 1e-7, "entry {i}: {fd} vs {}", hv[i]);
        }
    }

    #[test]
    fn fit_reaches_a_stationary_point() {
        let d = tiny(5);
        let w = vec![1.0; d.len()];
        let theta = fit(&d, &w, d.len() as f64, 0.05, vec![0.0; d.param_len()], 400);
        let mut g = vec![0.0; theta.len()];
        loss_grad(&theta, &d, &w, d.len() as f64, 0.05, &mut g);
        assert!(dot(&g, &g).sqrt() < 1e-9, "gradient norm {}", dot(&g, &g).sqrt());
    }
}
