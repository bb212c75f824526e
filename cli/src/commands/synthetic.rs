//! The synthetic workload of `simulate`: every rank minimizes the same
//! quadratic `f(theta) = 0.5 * sum_i h_i (theta_i - opt_i)^2` with noisy
//! gradient steps, so updates are large at first and decay as the parameters
//! converge, as an optimizer's do. Everything is a function of the seed: both
//! runs of `simulate` see exactly the same noise.

/// SplitMix64 step: the next 64 random bits of `state`.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform f32 in `[-1, 1)` from the top 24 bits.
fn signed_unit(bits: u64) -> f32 {
    ((bits >> 40) as f32) * (1.0 / (1u32 << 23) as f32) - 1.0
}

/// A seeded stream for one `(seed, a, b)`, e.g. one rank's step.
fn stream(seed: u64, a: u64, b: u64) -> u64 {
    let mut s = seed ^ a.wrapping_mul(0xA076_1D64_78BD_642F);
    splitmix64(&mut s) ^ b.wrapping_mul(0xE703_7ED1_A0B4_28DB)
}

/// A noisy quadratic shared by every rank.
#[derive(Debug, Clone)]
pub struct Quadratic {
    /// Curvature `h_i`, log-uniform in [1e-3, 1].
    curvature: Vec<f32>,
    /// The minimizer.
    optimum: Vec<f32>,
    /// Where every run starts.
    start: Vec<f32>,
    /// Step size at step 1; decays as `1/sqrt(t)`.
    lr: f32,
    /// Amplitude of the uniform per-rank gradient noise.
    noise: f32,
    seed: u64,
}

impl Quadratic {
    /// A problem of `n` parameters fixed by `seed`, with step size `lr`
    /// (decaying as `1/sqrt(t)`) and gradient noise of amplitude `noise`.
    pub fn new(n: usize, seed: u64, lr: f32, noise: f32) -> Self {
        let mut s = stream(seed, u64::MAX, 0);
        let mut curvature = Vec::with_capacity(n);
        let mut optimum = Vec::with_capacity(n);
        let mut start = Vec::with_capacity(n);
        for _ in 0..n {
            // Log-uniform over three decades: a few stiff directions carry most
            // of the early gradient and converge fast, the rest move slowly.
            let h = 10f32.powf(-1.5 * (1.0 + signed_unit(splitmix64(&mut s))));
            let opt = signed_unit(splitmix64(&mut s));
            curvature.push(h);
            optimum.push(opt);
            // Start near the optimum, as when fine-tuning: the parameters are
            // much larger than the distance left to travel.
            start.push(opt + 0.1 * signed_unit(splitmix64(&mut s)));
        }
        Quadratic { curvature, optimum, start, lr, noise, seed }
    }

    /// The starting parameters.
    pub fn start(&self) -> &[f32] {
        &self.start
    }

    /// Rank `rank`'s update at step `t` (from 1) from the parameters `theta`:
    /// `-(lr / sqrt(t)) * (h * (theta - opt) + noise * u)` with `u` uniform in [-1, 1).
    pub fn update(&self, rank: usize, t: u64, theta: &[f32], out: &mut [f32]) {
        let mut s = stream(self.seed, rank as u64, t);
        let lr = self.lr / (t as f32).sqrt();
        for (i, d) in out.iter_mut().enumerate() {
            let grad = self.curvature[i] * (theta[i] - self.optimum[i]) + self.noise * signed_unit(splitmix64(&mut s));
            *d = -lr * grad;
        }
    }

    /// The objective `0.5 * sum_i h_i (theta_i - opt_i)^2`, in f64.
    pub fn loss(&self, theta: &[f32]) -> f64 {
        theta
            .iter()
            .zip(&self.optimum)
            .zip(&self.curvature)
            .map(|((&a, &b), &h)| 0.5 * f64::from(h) * (f64::from(a) - f64::from(b)).powi(2))
            .sum()
    }

    /// `||theta - opt|| / ||start - opt||`: 1 at the start, 0 at the optimum.
    pub fn progress(&self, theta: &[f32]) -> f64 {
        let dist = |v: &[f32]| -> f64 {
            v.iter().zip(&self.optimum).map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)).sum::<f64>().sqrt()
        };
        dist(theta) / dist(&self.start).max(f64::MIN_POSITIVE)
    }
}

/// `||a - b|| / max(||b||, tiny)` in f64.
pub fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    let norm: f64 = b.iter().map(|&y| f64::from(y).powi(2)).sum();
    diff.sqrt() / norm.sqrt().max(f64::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noiseless_steps_contract_every_coordinate_and_noise_is_seeded() {
        let q = Quadratic::new(1000, 3, 0.05, 0.0);
        let mut theta = q.start().to_vec();
        let mut d = vec![0.0; theta.len()];
        let mut last = q.progress(&theta);
        assert!((last - 1.0).abs() < 1e-12);
        for _ in 0..100 {
            // Constant step size (always step 1): theta - opt shrinks by (1 - 0.05 h).
            q.update(0, 1, &theta, &mut d);
            theta.iter_mut().zip(&d).for_each(|(x, dx)| *x += dx);
            let now = q.progress(&theta);
            assert!(now < last, "{now} >= {last}");
            last = now;
        }
        let i = 17;
        let want = (1.0 - 0.05 * f64::from(q.curvature[i])).powi(100) * f64::from(q.start[i] - q.optimum[i]);
        let got = f64::from(theta[i] - q.optimum[i]);
        assert!((got - want).abs() <= 1e-4 * want.abs().max(1e-3), "{got} vs {want}");

        let q = Quadratic::new(1000, 3, 0.05, 1.0);
        let (mut a, mut b, mut c) = (vec![0.0; 1000], vec![0.0; 1000], vec![0.0; 1000]);
        q.update(1, 5, q.start(), &mut a);
        q.update(1, 5, q.start(), &mut b);
        q.update(2, 5, q.start(), &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn relative_l2_of_known_vectors() {
        assert!(relative_l2(&[3.0, 4.0], &[0.0, 0.0]) > 1e300);
        assert!((relative_l2(&[1.0, 1.0], &[1.0, 2.0]) - (1.0f64 / 5.0).sqrt()).abs() < 1e-12);
        assert_eq!(relative_l2(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
    }
}
