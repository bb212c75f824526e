//! Unit tests of the CPU backend against the spec-level twins in `reference`.

mod apply;
mod fused;
mod reference;
mod selection;

use super::{CpuBackend, CpuState};
use crate::backend::Backend;
use crate::config::{Selection, SyncConfig, WireDtype};

/// Every wire dtype.
const DTYPES: [WireDtype; 3] = [WireDtype::F32, WireDtype::F16, WireDtype::Bf16];

/// A configuration with the given rule and dtype, the rest default.
fn config(selection: Selection, wire_dtype: WireDtype) -> SyncConfig {
    SyncConfig { selection, wire_dtype, ..SyncConfig::default() }
}

/// A state whose committed accumulator is `acc` (loaded through the fused
/// pass and a commit, as a step would). Returns it with the stored values.
fn loaded(backend: &CpuBackend, acc: &[f32], config: &SyncConfig) -> (CpuState, Vec<f32>) {
    let mut state = backend.create_state(acc.len(), config).unwrap();
    let theta = vec![1.0; acc.len()];
    backend.accumulate(&mut state, acc, &theta, 0.0).unwrap();
    backend.commit_accumulate(&mut state).unwrap();
    let mut stored = vec![0.0; acc.len()];
    backend.read_accumulator(&state, &mut stored).unwrap();
    (state, stored)
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// A value drawn to make ties, zeros, signed zeros and wide magnitudes common.
    fn tie_heavy(&mut self) -> f32 {
        const FEW: [f32; 8] = [0.0, -0.0, 1.0, -1.0, 0.5, -2.0, 3.0e-30, 7.0e20];
        match self.next() % 4 {
            0 | 1 => FEW[(self.next() % 8) as usize],
            2 => self.unit(),
            _ => self.unit() * 1.0e3,
        }
    }
    fn vec(&mut self, n: usize, tie_heavy: bool) -> Vec<f32> {
        (0..n).map(|_| if tie_heavy { self.tie_heavy() } else { self.unit() }).collect()
    }
}

#[test]
fn name_reports_threads() {
    assert_eq!(CpuBackend::with_threads(2).unwrap().name(), "cpu (2 threads)");
    assert_eq!(CpuBackend::with_threads(1).unwrap().name(), "cpu (1 thread)");
    assert!(CpuBackend::with_threads(0).is_err());
    assert!(CpuBackend::default().threads() >= 1);
}

#[test]
fn buffers_check_lengths() {
    let b = CpuBackend::new();
    let mut buf = b.alloc(4).unwrap();
    assert_eq!(buf, vec![0.0; 4]);
    assert!(matches!(b.upload(&[1.0; 3], &mut buf), Err(crate::Error::LengthMismatch { .. })));
    b.upload(&[1.0, 2.0, 3.0, 4.0], &mut buf).unwrap();
    let mut out = [0.0; 5];
    assert!(matches!(b.download(&buf, &mut out), Err(crate::Error::LengthMismatch { .. })));
    let mut out = [0.0; 4];
    b.download(&buf, &mut out).unwrap();
    assert_eq!(out, [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(b.buffer_len(&buf), 4);

    let mut state = b.create_state(4, &SyncConfig::default()).unwrap();
    let short = vec![0.0; 3];
    assert!(matches!(b.accumulate(&mut state, &short, &buf, 0.0), Err(crate::Error::LengthMismatch { .. })));
    assert!(matches!(b.accumulate(&mut state, &buf, &short, 0.0), Err(crate::Error::LengthMismatch { .. })));
    assert!(matches!(b.read_accumulator(&state, &mut [0.0; 5]), Err(crate::Error::LengthMismatch { .. })));
    let mut theta = vec![0.0; 5];
    let gathered = crate::collective::Gathered::new();
    assert!(matches!(b.apply(&mut state, &mut theta, &gathered, 0, 1.0), Err(crate::Error::LengthMismatch { .. })));
    assert!(b.create_state(0, &SyncConfig::default()).is_err());
}
