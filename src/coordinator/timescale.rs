//! Multi-timescale outer updates: the parameter vector is cut into segments
//! (the configured [`TimescaleGroup`]s plus the gaps between them, which use
//! the base optimizer settings and update every round). Each segment
//! accumulates the combined hypergradient of every outer round and applies
//! the mean when its own period comes round.

use std::ops::Range;

use super::config::{CoordinatorConfig, OuterOptimizer, TimescaleGroup};
use super::optimizer::{self, StepParams};

/// Public view of one segment's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimescaleStatus {
    /// Outer-parameter indices of the segment.
    pub range: Range<usize>,
    /// Update period in outer rounds.
    pub every: u64,
    /// Rounds accumulated since the segment's last update.
    pub pending_rounds: u64,
    /// Updates applied so far.
    pub updates: u64,
}

/// One contiguous slice of outer parameters and its accumulator.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    pub range: Range<usize>,
    pub every: u64,
    pub lr: f32,
    pub momentum: f32,
    pub warmup: u64,
    /// Sum of the combined hypergradients since the last update.
    pub acc: Vec<f32>,
    /// Rounds summed in `acc`.
    pub acc_count: u64,
    /// Updates applied (Adam's `t` is `updates + 1` on the next one).
    pub updates: u64,
}

impl Segment {
    fn new(range: Range<usize>, every: u64, lr: f32, momentum: f32, warmup: u64) -> Self {
        let len = range.len();
        Segment { range, every, lr, momentum, warmup, acc: vec![0.0; len], acc_count: 0, updates: 0 }
    }

    /// Learning rate of the next update, after the warm-up ramp.
    fn effective_lr(&self) -> f32 {
        if self.warmup == 0 || self.updates >= self.warmup {
            self.lr
        } else {
            (self.lr as f64 * (self.updates + 1) as f64 / self.warmup as f64) as f32
        }
    }
}

/// Every segment of the outer parameter vector, in index order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Timescales {
    pub segments: Vec<Segment>,
}

impl Timescales {
    /// Builds the segments for `n` parameters (the config was validated
    /// against `n`, so groups are in range and disjoint).
    pub fn new(config: &CoordinatorConfig, n: usize) -> Self {
        let mut groups: Vec<&TimescaleGroup> = config.timescales.iter().collect();
        groups.sort_by_key(|g| g.range.start);
        let base = &config.optimizer;
        let mut segments = Vec::with_capacity(2 * groups.len() + 1);
        let mut next = 0usize;
        let gap = |r: Range<usize>| Segment::new(r, 1, base.lr(), base.momentum(), config.warmup);
        for g in groups {
            if g.range.start > next {
                segments.push(gap(next..g.range.start));
            }
            segments.push(Segment::new(g.range.clone(), g.every, g.lr, g.momentum, g.warmup));
            next = g.range.end;
        }
        if next < n {
            segments.push(gap(next..n));
        }
        Timescales { segments }
    }

    /// One outer round: feeds `grad` (the combined hypergradient) to every
    /// segment and updates those whose period is complete. Returns how many
    /// segments updated.
    pub fn round(
        &mut self,
        kind: &OuterOptimizer,
        grad: &[f32],
        params: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
    ) -> usize {
        let second = optimizer::has_second_moment(kind);
        let mut updated = 0;
        for seg in &mut self.segments {
            let r = seg.range.clone();
            for (a, &g) in seg.acc.iter_mut().zip(&grad[r.clone()]) {
                *a += g;
            }
            seg.acc_count += 1;
            if seg.acc_count < seg.every {
                continue;
            }
            let count = seg.acc_count as f32;
            for a in seg.acc.iter_mut() {
                *a /= count;
            }
            let step = StepParams { lr: seg.effective_lr(), momentum: seg.momentum, t: seg.updates + 1 };
            let v_slice: &mut [f32] = if second { &mut v[r.clone()] } else { &mut [] };
            optimizer::apply(kind, step, &mut params[r.clone()], &seg.acc, &mut m[r], v_slice);
            seg.acc.fill(0.0);
            seg.acc_count = 0;
            seg.updates += 1;
            updated += 1;
        }
        updated
    }

    /// Public view of every segment.
    pub fn status(&self) -> Vec<TimescaleStatus> {
        self.segments
            .iter()
            .map(|s| TimescaleStatus {
                range: s.range.clone(),
                every: s.every,
                pending_rounds: s.acc_count,
                updates: s.updates,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(groups: Vec<TimescaleGroup>) -> CoordinatorConfig {
        CoordinatorConfig {
            optimizer: OuterOptimizer::Sgd { lr: 1.0, momentum: 0.0 },
            timescales: groups,
            ..CoordinatorConfig::default()
        }
    }

    #[test]
    fn gaps_are_filled_with_base_segments() {
        let g = TimescaleGroup { range: 2..4, every: 3, lr: 0.5, momentum: 0.0, warmup: 0 };
        let t = Timescales::new(&config(vec![g]), 6);
        let ranges: Vec<_> = t.segments.iter().map(|s| (s.range.clone(), s.every)).collect();
        assert_eq!(ranges, vec![(0..2, 1), (2..4, 3), (4..6, 1)]);
    }

    #[test]
    fn slow_group_applies_the_mean_of_its_rounds() {
        let g = TimescaleGroup { range: 1..2, every: 2, lr: 0.5, momentum: 0.0, warmup: 0 };
        let cfg = config(vec![g]);
        let mut t = Timescales::new(&cfg, 2);
        let mut p = [0.0f32, 0.0];
        let mut m = [0.0f32; 2];
        assert_eq!(t.round(&cfg.optimizer, &[1.0, 1.0], &mut p, &mut m, &mut []), 1);
        assert_eq!(p, [-1.0, 0.0]);
        assert_eq!(t.round(&cfg.optimizer, &[2.0, 3.0], &mut p, &mut m, &mut []), 2);
        // Group: mean (1 + 3) / 2 = 2, times lr 0.5.
        assert_eq!(p, [-3.0, -1.0]);
        assert_eq!(t.status()[1].updates, 1);
        assert_eq!(t.status()[1].pending_rounds, 0);
    }

    #[test]
    fn warmup_ramps_the_learning_rate() {
        let g = TimescaleGroup { range: 0..1, every: 1, lr: 1.0, momentum: 0.0, warmup: 4 };
        let cfg = config(vec![g]);
        let mut t = Timescales::new(&cfg, 1);
        let mut p = [0.0f32];
        let mut m = [0.0f32];
        let mut steps = Vec::new();
        for _ in 0..6 {
            let before = p[0];
            t.round(&cfg.optimizer, &[1.0], &mut p, &mut m, &mut []);
            steps.push(before - p[0]);
        }
        assert_eq!(steps, vec![0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    }
}
