//! The end-to-end nested-optimization workload: data hyper-cleaning on the
//! bundled handwritten digits.
//!
//! - [`data`]: the digits, a seeded 1000 / 300 / 497 split, half the training labels flipped.
//! - [`model`]: softmax regression on random Fourier features (tens of
//!   thousands of parameters), per-example weighted loss, gradient and
//!   Hessian-vector product derived by hand.
//! - [`hypergrad`]: implicit differentiation (CG on Hessian-vector products)
//!   and an unrolled reverse-mode reference.
//! - [`ridge`]: ridge regression's log-regularization, a closed-form check.
//! - [`problem`]: the mapped problem, the single-process baselines, the detection score.
//! - [`system`]: the run's configuration, the coordinator settings, the in-process mode.
//! - [`worker`]: one rank's whole run, generic over the collective and the coordinator.
//! - [`warm`]: warm starts of the CG solve (none, last solution, continuum memory).
//! - [`metrics`]: what each rank hands back and the run's metrics.
//! - [`variants`]: dense synchronous, the seed's configuration, the crate's best.
//! - [`report`]: the table, the SVG plot and the JSON file.
//! - [`repeat`]: the comparison over several data seeds, paired by seed.
//! - [`rng`]: the seeded generator behind every random choice.
//! - [`sweep`]: the grid of `hyperclean-sweep` and its Pareto front;
//!   [`sweep_plot`] draws it.
//! - [`launch`]: the child processes of a multi-process run (the coordinator
//!   service and the `mpirun` job), bounded waits, no orphans.

pub mod data;
pub mod hypergrad;
pub mod launch;
pub mod metrics;
pub mod model;
#[cfg(feature = "png")]
pub mod plot_png;
pub mod problem;
pub mod repeat;
pub mod report;
pub mod ridge;
pub mod rng;
pub mod sweep;
pub mod sweep_plot;
pub mod system;
pub mod variants;
pub mod warm;
pub mod worker;
