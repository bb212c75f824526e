//! Deterministic pseudo-random inputs, generated in parallel (2^26 elements
//! must not take longer to make than to bench).

use rayon::prelude::*;

/// Elements generated from one seed; fixed so that the data does not depend
/// on the thread count.
const GEN_CHUNK: usize = 1 << 16;

/// SplitMix64: a small, good-enough generator for bench data.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
    /// Approximately standard normal (Irwin–Hall sum of 4 uniforms, rescaled):
    /// a bell-shaped magnitude distribution is all the selection benches need.
    pub fn normal(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum();
        (s - 2.0) * 1.732_050_8
    }
}

/// `n` approximately normal values with standard deviation `scale`.
pub fn normal_vec(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut v = vec![0.0f32; n];
    v.par_chunks_mut(GEN_CHUNK).enumerate().for_each(|(c, chunk)| {
        let mut rng = SplitMix::new(seed ^ (c as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        chunk.iter_mut().for_each(|x| *x = rng.normal() * scale);
    });
    v
}
