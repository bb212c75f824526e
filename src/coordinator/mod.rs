//! The coordinator: versioned bounded asynchrony for the outer (meta)
//! parameters of a bilevel optimization, in-process and thread-safe.
//!
//! # Hybrid state
//!
//! The coordinator carries only the small outer state. Model parameters
//! never pass through it: they stay on the workers and are kept identical by
//! [`crate::SparseSync`] over a [`crate::Collective`].
//!
//! ```text
//!            outer state (small, versioned)            model state (large)
//!          +--------------------------------+
//!          | Coordinator                    |
//!          |  version v, outer params       |
//!          |  optimizer + timescale state   |
//!          |  leases, pending commits       |
//!          |  continuum memory              |
//!          +--------------------------------+
//!            ^ checkout      | commit(hypergrad)
//!            | (v, params)   v
//!   +-----------+  +-----------+  +-----------+
//!   | worker 0  |  | worker 1  |  | worker 2  |   inner loop on theta
//!   +-----------+  +-----------+  +-----------+
//!         \______________|______________/
//!           SparseSync + Collective: sparse, error-feedback sync of theta
//! ```
//!
//! # Protocol
//!
//! 1. [`Coordinator::checkout`] leases the current version. At most
//!    `max_in_flight` distinct versions are out at once; a checkout beyond
//!    that waits up to its timeout, then fails with
//!    [`crate::CoordinatorError::Backpressure`].
//! 2. While its inner loop runs, the worker calls [`Coordinator::heartbeat`]
//!    at least once per `lease_ttl`; a silent lease expires, freeing its slot,
//!    and its late commit is rejected with [`RejectReason::LeaseExpired`].
//! 3. [`Coordinator::commit`] sends the hypergradient with a worker-chosen
//!    commit id. Staleness is `current version - checked-out version`; above
//!    `max_staleness` the commit is rejected, otherwise accepted with weight
//!    `decay(staleness)` (`0.5^staleness` by default, see [`decay`]). A retried
//!    commit id gets its first answer back and is never applied twice.
//! 4. Once `min_commits` accepted commits are pending, the coordinator takes
//!    their weighted mean `sum w_j h_j / sum w_j`, applies the outer optimizer
//!    (SGD with momentum or Adam, per timescale group) and publishes
//!    version + 1. [`Coordinator::wait_for_version`] blocks until then, with a
//!    timeout.
//!
//! [`Coordinator::snapshot`] / [`Coordinator::restore`] move the whole
//! meta-state through bytes; a restored coordinator continues bitwise.
//!
//! # A worker loop
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use chronos_sync::coordinator::{CommitOutcome, CommitRequest, Coordinator, CoordinatorConfig};
//!
//! # fn main() -> chronos_sync::Result<()> {
//! let config = CoordinatorConfig::builder().min_commits(2).build()?;
//! let coord = Arc::new(Coordinator::new(vec![1.0, -1.0], config)?);
//! let workers: Vec<_> = (0..2u64)
//!     .map(|worker| {
//!         let coord = Arc::clone(&coord);
//!         std::thread::spawn(move || -> chronos_sync::Result<()> {
//!             for round in 0..3u64 {
//!                 let lease = coord.checkout(worker)?;
//!                 // ... inner loop on the model, calling coord.heartbeat(&lease)
//!                 // now and then; here a fake hypergradient of 0.5 * params^2:
//!                 let hypergradient = lease.params.to_vec();
//!                 let validation_loss = lease.params.iter().map(|p| 0.5 * p * p).sum();
//!                 let request = CommitRequest { commit_id: round, hypergradient, validation_loss };
//!                 match coord.commit(&lease, request)? {
//!                     CommitOutcome::Accepted { .. } | CommitOutcome::Rejected { .. } => {}
//!                 }
//!                 // Wait (bounded) for the round to close; a timeout is fine here.
//!                 let _ = coord.wait_for_version(lease.version, Duration::from_millis(200));
//!             }
//!             Ok(())
//!         })
//!     })
//!     .collect();
//! for w in workers {
//!     w.join().expect("worker panicked")?;
//! }
//! let stats = coord.stats();
//! assert_eq!(stats.accepted + stats.rejected(), 6);
//! assert!(coord.current_version() >= 1);
//! # Ok(())
//! # }
//! ```

mod api;
mod codec;
mod commit;
mod config;
pub mod decay;
mod lease;
mod memory;
#[cfg(test)]
mod model_tests;
mod optimizer;
mod service;
mod snapshot;
mod stats;
mod store;
mod timescale;

pub use api::{CoordinatorApi, CurrentState};
pub use commit::{AppliedCommit, CommitOutcome, CommitRequest, RejectReason};
pub use config::{CoordinatorConfig, CoordinatorConfigBuilder, MemoryConfig, OuterOptimizer, TimescaleGroup};
pub use decay::StalenessDecay;
pub use lease::Lease;
pub use memory::{ContinuumMemory, Metric, Retrieved, similarity};
pub use service::Coordinator;
pub use stats::CoordinatorStats;
pub use timescale::TimescaleStatus;
