//! An independent host model of the three device operations, written from
//! docs/selection.md and docs/wire-format.md (not from any backend), used to
//! check the kernels bit for bit.

use chronos_sync::WireDtype;
use chronos_sync::wire::{checksum, layout, quantize};

/// A deterministic xorshift64* generator (tests must not depend on a seed source).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [-scale, scale).
    pub fn f32(&mut self, scale: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * u - 1.0) * scale
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32(scale)).collect()
    }
}

pub fn key(x: f32) -> u32 {
    x.to_bits() & 0x7fff_ffff
}

/// Exact top-k by key, ties to the lower index; sorted indices.
pub fn top_k(acc: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..acc.len()).collect();
    idx.sort_by(|&a, &b| key(acc[b]).cmp(&key(acc[a])).then(a.cmp(&b)));
    let mut sel = idx[..k].to_vec();
    sel.sort_unstable();
    sel
}

/// The packed buffer for the selected (sorted) indices of `acc`.
pub fn pack(acc: &[f32], selected: &[usize], dtype: WireDtype) -> Vec<u8> {
    let n = acc.len() as u64;
    let chunks = layout::num_chunks(n) as usize;
    let mut per_chunk: Vec<Vec<usize>> = vec![Vec::new(); chunks];
    for &i in selected {
        per_chunk[i / layout::CHUNK_ELEMS].push(i % layout::CHUNK_ELEMS);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&layout::MAGIC);
    out.extend_from_slice(&layout::FORMAT_VERSION.to_le_bytes());
    out.push(dtype.code());
    out.push(0);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(selected.len() as u64).to_le_bytes());
    out.extend_from_slice(&[0u8; 8]);
    for c in &per_chunk {
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
    }
    for (ci, locals) in per_chunk.iter().enumerate() {
        let len = layout::chunk_len(n, ci as u64);
        let count = locals.len() as u32;
        if layout::uses_bitmap(count, len) {
            let mut words = vec![0u32; len.div_ceil(32) as usize];
            for &l in locals {
                words[l / 32] |= 1 << (l % 32);
            }
            words.iter().for_each(|w| out.extend_from_slice(&w.to_le_bytes()));
        } else {
            locals.iter().for_each(|&l| out.extend_from_slice(&(l as u16).to_le_bytes()));
            if count % 2 == 1 {
                out.extend_from_slice(&[0, 0]);
            }
        }
    }
    for &i in selected {
        let q = quantize::quantize(acc[i], dtype);
        match dtype.size() {
            4 => out.extend_from_slice(&q.to_le_bytes()),
            _ => out.extend_from_slice(&(q as u16).to_le_bytes()),
        }
    }
    while out.len() % 4 != 0 {
        out.push(0);
    }
    let sum = checksum::checksum(&out).expect("length is a multiple of 4");
    out[24..28].copy_from_slice(&sum.to_le_bytes());
    out
}

/// theta += weight * (rank-order f32 sum) over every index present; then
/// error feedback on `own` (acc -= own value) or a zeroed accumulator.
pub fn apply(
    theta: &mut [f32],
    acc: &mut [f32],
    ranks: &[(Vec<usize>, Vec<f32>)],
    own: usize,
    weight: f32,
    error_feedback: bool,
) {
    let mut sum = vec![0.0f32; theta.len()];
    let mut present = vec![false; theta.len()];
    for (idx, vals) in ranks {
        for (&i, &v) in idx.iter().zip(vals) {
            sum[i] += v;
            present[i] = true;
        }
    }
    for i in 0..theta.len() {
        if present[i] {
            let scaled = weight * sum[i];
            theta[i] += scaled;
        }
    }
    if error_feedback {
        let (idx, vals) = &ranks[own];
        for (&i, &v) in idx.iter().zip(vals) {
            acc[i] -= v;
        }
    } else {
        acc.iter_mut().for_each(|a| *a = 0.0);
    }
}

/// The radix select of docs/selection.md, written out on the host: the
/// selected indices (sorted) for `k` and `kmax`.
pub fn radix_select(acc: &[f32], k: usize, kmax: usize) -> Vec<usize> {
    let levels: [(u32, u32, u32); 3] = [(20, 0x7ff, 32), (9, 0x7ff, 20), (0, 0x1ff, 9)];
    let mut above = 0usize;
    let mut prefix = 0u32;
    for (shift, mask, hi) in levels {
        let bins = mask as usize + 1;
        let mut hist = vec![0usize; bins];
        for &x in acc {
            let kx = key(x);
            if hi == 32 || (kx >> hi) == (prefix >> hi) {
                hist[((kx >> shift) & mask) as usize] += 1;
            }
        }
        let mut run = above;
        let mut b = bins;
        while b > 0 {
            b -= 1;
            run += hist[b];
            if run >= k {
                break;
            }
        }
        let cut = prefix | ((b as u32) << shift);
        if run <= kmax {
            return (0..acc.len()).filter(|&i| key(acc[i]) >= cut).collect();
        }
        above = run - hist[b];
        prefix = cut;
    }
    let mut ties = k - above;
    let mut out = Vec::with_capacity(k);
    for (i, &x) in acc.iter().enumerate() {
        if key(x) > prefix {
            out.push(i);
        } else if key(x) == prefix && ties > 0 {
            out.push(i);
            ties -= 1;
        }
    }
    out
}
