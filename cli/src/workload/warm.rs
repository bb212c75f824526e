//! Warm starts of the conjugate-gradient solve `H v = grad F` behind each
//! hypergradient (see [`WarmStart`]).
//!
//! The memory variant keys each past solution by the worker's `lambda` shard
//! at the time: the solution depends on the model and on the example weights,
//! and the weights are what changes between rounds (the model changes
//! smoothly), so the rounds whose weights were nearest are the best guesses.
//! Their score-weighted mean (similarity times recency, see
//! `ContinuumMemory`) is the initial guess.

use super::system::WarmStart;
use chronos_sync::coordinator::{ContinuumMemory, MemoryConfig, Metric};
use chronos_sync::error::Result;

/// Solutions a worker remembers: a few rounds are enough, older ones are
/// far from the current weights anyway.
const MEMORY: MemoryConfig = MemoryConfig { capacity: 16, compress_after: 8, recency_decay: 0.1 };

/// One worker's source of initial guesses.
#[derive(Debug)]
pub struct WarmStarter {
    mode: WarmStart,
    last: Option<Vec<f64>>,
    memory: Option<ContinuumMemory>,
    round: u64,
}

impl WarmStarter {
    /// A starter for a shard of `shard_len` examples and a model of `params` parameters.
    pub fn new(mode: WarmStart, shard_len: usize, params: usize) -> Self {
        let memory = matches!(mode, WarmStart::Memory { .. })
            .then(|| ContinuumMemory::with_value_dim(shard_len, params, MEMORY));
        WarmStarter { mode, last: None, memory, round: 0 }
    }

    /// The initial guess for the solve at this `lambda` shard (`None`: start from zero).
    pub fn guess(&self, lambda: &[f64]) -> Result<Option<Vec<f64>>> {
        match (self.mode, &self.memory) {
            (WarmStart::None, _) => Ok(None),
            (WarmStart::Last, _) => Ok(self.last.clone()),
            (WarmStart::Memory { k }, Some(m)) => {
                let key: Vec<f32> = lambda.iter().map(|&l| l as f32).collect();
                let guess = m.predict_hypergradient(&key, k, Metric::Euclidean)?;
                Ok(guess.map(|g| g.into_iter().map(f64::from).collect()))
            }
            (WarmStart::Memory { .. }, None) => Ok(None),
        }
    }

    /// Records the solution `v` found at this `lambda` shard with validation loss `val_loss`.
    pub fn record(&mut self, lambda: &[f64], v: Vec<f64>, val_loss: f64) -> Result<()> {
        if let Some(m) = &mut self.memory {
            let key: Vec<f32> = lambda.iter().map(|&l| l as f32).collect();
            let value: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            m.insert(&key, &value, val_loss as f32, self.round)?;
        }
        if matches!(self.mode, WarmStart::Last) {
            self.last = Some(v);
        }
        self.round += 1;
        Ok(())
    }
}
