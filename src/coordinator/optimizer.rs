//! The outer optimizers, as pure element-wise updates of one slice of outer
//! parameters. Every operation is f32, in index order, so two coordinators
//! fed the same hypergradients produce the same bits.

use super::config::OuterOptimizer;

/// Per-call hyper-parameters of one update of a slice (a timescale group
/// may override the base learning rate and momentum).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StepParams {
    /// Learning rate after warm-up scaling.
    pub lr: f32,
    /// Momentum (`beta1` under Adam).
    pub momentum: f32,
    /// 1-based count of updates of this slice, this one included (Adam's
    /// bias correction).
    pub t: u64,
}

/// Applies one descent step to `params` given `grad`, updating the first
/// moment `m` and (Adam only) the second moment `v`. All slices have the
/// same length; `v` is empty for SGD.
pub(crate) fn apply(
    kind: &OuterOptimizer,
    step: StepParams,
    params: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    debug_assert_eq!(params.len(), grad.len());
    debug_assert_eq!(params.len(), m.len());
    match *kind {
        OuterOptimizer::Sgd { .. } => {
            let mu = step.momentum;
            for ((p, &g), m) in params.iter_mut().zip(grad).zip(m.iter_mut()) {
                *m = mu * *m + g;
                *p -= step.lr * *m;
            }
        }
        OuterOptimizer::Adam { beta2, eps, .. } => {
            debug_assert_eq!(params.len(), v.len());
            let b1 = step.momentum;
            // Bias corrections in f64 (powi of a value near 1), rounded once.
            let t = step.t.min(i32::MAX as u64) as i32;
            let c1 = (1.0 - (b1 as f64).powi(t)) as f32;
            let c2 = (1.0 - (beta2 as f64).powi(t)) as f32;
            for (((p, &g), m), v) in params.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = beta2 * *v + (1.0 - beta2) * g * g;
                let m_hat = *m / c1;
                let v_hat = *v / c2;
                *p -= step.lr * m_hat / (v_hat.sqrt() + eps);
            }
        }
    }
}

/// Whether an optimizer keeps a second moment.
pub(crate) fn has_second_moment(kind: &OuterOptimizer) -> bool {
    matches!(kind, OuterOptimizer::Adam { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgd_momentum_matches_hand_computation() {
        let kind = OuterOptimizer::Sgd { lr: 0.5, momentum: 0.5 };
        let mut p = [1.0f32, -2.0];
        let mut m = [0.0f32; 2];
        let s = |t| StepParams { lr: 0.5, momentum: 0.5, t };
        apply(&kind, s(1), &mut p, &[0.5, 1.0], &mut m, &mut []);
        // m = g = [0.5, 1]; p = [1 - 0.25, -2 - 0.5]
        assert_eq!(p, [0.75, -2.5]);
        assert_eq!(m, [0.5, 1.0]);
        apply(&kind, s(2), &mut p, &[0.5, -1.0], &mut m, &mut []);
        // m = [0.25 + 0.5, 0.5 - 1] = [0.75, -0.5]; p = [0.75 - 0.375, -2.5 + 0.25]
        assert_eq!(m, [0.75, -0.5]);
        assert_eq!(p, [0.375, -2.25]);
    }

    #[test]
    fn adam_matches_hand_computation() {
        let kind = OuterOptimizer::Adam { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
        let mut p = [1.0f32];
        let (mut m, mut v) = ([0.0f32], [0.0f32]);
        let s = |t| StepParams { lr: 0.1, momentum: 0.9, t };
        // First Adam step moves by lr * sign(g) (up to eps).
        apply(&kind, s(1), &mut p, &[2.0], &mut m, &mut v);
        assert!((p[0] - 0.9).abs() < 1e-6, "{}", p[0]);
        // Second step with g = -1, by hand in f64:
        let (m1, v1) = (0.2f64, 0.004f64);
        let g2 = -1.0f64;
        let m2 = 0.9 * m1 + 0.1 * g2;
        let v2 = 0.999 * v1 + 0.001 * g2 * g2;
        let mh = m2 / (1.0 - 0.81);
        let vh = v2 / (1.0 - 0.999f64 * 0.999);
        let want = 0.9 - 0.1 * mh / (vh.sqrt() + 1e-8);
        apply(&kind, s(2), &mut p, &[-1.0], &mut m, &mut v);
        assert!((p[0] as f64 - want).abs() < 1e-6, "{} vs {want}", p[0]);
    }
}
